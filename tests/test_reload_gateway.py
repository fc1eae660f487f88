"""Config reload on the real Envoy, under load: `up` (LocalGateway) watching its config file while clients
send proxied and decision requests. Route changes apply in place; a new model is applied with an Envoy
hot restart. No request may fail, and decisions must follow the new config once it is in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from plano_devtools.local import envoy_binary, free_port, pick_base_id, point_config_at_mocks
from plano_devtools.mock_providers import MockProvider
from plano_extproc.config import parse_config
from plano_extproc.reload import config_bootstrap_digest
from tests.conftest import DEMO_CONFIG
from tests.harness import CLAUDE, CODE, FRANCE, RunningGateway, oai, user

pytestmark = pytest.mark.integration

DEMO = DEMO_CONFIG.read_text()
ENV = {"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"}
CODE_DESCRIPTION = "generating new code snippets, functions, or boilerplate based on user prompts or requirements"
REASONING_DESCRIPTION = "complex reasoning tasks, multi-step problem solving, or detailed explanations"

# Version 2 renames both routes and swaps their descriptions, so code requests now get the second ranked
# list; the ranked lists themselves (and so the bootstrap) stay as they are.
V2 = DEMO.replace("name: code_generation", "name: @1").replace("name: complex_reasoning", "name: @2")
V2 = V2.replace(f"description: {CODE_DESCRIPTION}", "description: @3").replace(f"description: {REASONING_DESCRIPTION}", f"description: {CODE_DESCRIPTION}")
V2 = V2.replace("description: @3", f"description: {REASONING_DESCRIPTION}").replace("name: @1", "name: reasoning").replace("name: @2", "name: coding")
FULL_CLAUDE = f"anthropic/{CLAUDE}"
V1_CODE = ("code_generation", [FULL_CLAUDE, "openai/gpt-4o"])
V2_CODE = ("coding", ["openai/gpt-4o", FULL_CLAUDE])
NEW_MODEL = DEMO.replace("\nrouting_preferences:", "\n  - model: openai/gpt-4.1\n    access_key: $OPENAI_API_KEY\n\nrouting_preferences:", 1)


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@dataclass
class Result:
    kind: str
    started: float
    status: int
    body: object = None
    finished: float = 0.0


@dataclass
class Load:
    """Client threads sending requests until stopped (bounded in count and time)."""

    gw: RunningGateway
    model: str | None = None
    text: str = CODE
    results: list[Result] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    max_seconds: float = 120.0
    max_requests: int = 4000

    def _post(self, path: str, body: dict) -> tuple[int, object]:
        req = urllib.request.Request(self.gw.url + path, data=json.dumps(body).encode(), method="POST", headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")
        except OSError as exc:  # a connection refused or reset is a failed request too
            return -1, repr(exc)

    def _loop(self, kind: str) -> None:
        deadline = time.monotonic() + self.max_seconds
        client = oai(self.gw) if kind == "keepalive" else None  # one connection reused across the reload
        body = {"model": self.model or "gpt-4o-mini", "messages": user(self.text)}
        while not self.stop.is_set() and time.monotonic() < deadline and len(self.results) < self.max_requests:
            started = time.monotonic()
            if kind == "decision":
                status, answer = self._post("/routing/v1/chat/completions", body)
            elif kind == "proxy":
                status, answer = self._post("/v1/chat/completions", body)
            else:
                assert client is not None
                try:
                    reply = client.chat.completions.create(**body)
                    status, answer = 200, {"choices": [{"message": {"content": reply.choices[0].message.content}}]}
                except Exception as exc:
                    status, answer = -1, repr(exc)
            self.results.append(Result(kind, started, status, answer, time.monotonic()))

    def start(self) -> Load:
        for kind in ("decision", "decision", "proxy", "keepalive"):
            thread = threading.Thread(target=self._loop, args=(kind,), daemon=True)
            thread.start()
            self.threads.append(thread)
        wait_until(lambda: len(self.results) >= 8, 30, "the load to start")
        return self

    def finish(self, expected: Callable[[Result], bool] = lambda r: False) -> list[Result]:
        """Every request answered 200, except those `expected` says may fail that way."""
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
        failed = [r for r in self.results if r.status != 200 and not expected(r)]
        assert not failed, f"{len(failed)} of {len(self.results)} requests failed: {failed[:5]}"
        return self.results


def decision_of(result: Result) -> tuple[str | None, list[str]]:
    assert isinstance(result.body, dict)
    return result.body["route"], result.body["models"]


def answered_by(result: Result) -> str:
    assert isinstance(result.body, dict)
    return result.body["choices"][0]["message"]["content"]


def generation(gw: RunningGateway) -> int:
    return gw.gateway.server.generations.current.number


def sample(gw: RunningGateway, name: str, **labels: str) -> float:
    return gw.gateway.server.metrics.registry.get_sample_value(name, labels or None) or 0.0


def test_routes_rewritten_under_load_apply_in_place_and_no_request_fails(tmp_path):
    v1, v2 = parse_config(DEMO, ENV), parse_config(V2, ENV)
    assert config_bootstrap_digest(v1) == config_bootstrap_digest(v2)  # a routes-only change
    path = tmp_path / "config.yaml"
    path.write_text(DEMO)
    gw = RunningGateway(DEMO, config_path=path, watch_interval=0.1)
    try:
        load = Load(gw).start()
        # (written, seen serving, what code requests get): a request gets a version that served at some
        # moment of its life: the one seen serving when it was sent, or one written before it was answered
        # (Envoy may hold a request before its ext_proc stream starts, and the stream gets the config then)
        switches: list[tuple[float, float, tuple]] = [(0.0, 0.0, V1_CODE)]
        for number, (text, expected) in enumerate([(V2, V2_CODE), (DEMO, V1_CODE), (V2, V2_CODE)], start=2):
            time.sleep(0.5)  # requests on the old config meanwhile
            written = time.monotonic()
            write(path, text)
            wait_until(lambda n=number: generation(gw) == n, 20, f"generation {number}")
            switches.append((written, time.monotonic(), expected))
            if number == 3:  # an invalid version in between keeps version 3 serving
                time.sleep(0.3)
                write(path, text.replace("routing:\n", "routing:\n  session_tll: 5\n"))
                wait_until(lambda: sample(gw, "plano_config_reloads_total", result="invalid") == 1, 20, "the invalid version to be seen")
        time.sleep(0.5)
        results = load.finish()
        assert gw.gateway.epoch == 0 and generation(gw) == 4  # no Envoy restart, the invalid one not applied
        assert sample(gw, "plano_config_reloads_total", result="applied") == 3

        decisions = [r for r in results if r.kind == "decision"]
        proxied = [r for r in results if r.kind != "decision"]
        assert len(decisions) > 50 and len(proxied) > 20
        for r in decisions:  # each decision is wholly one version's: never a new route with old models
            assert decision_of(r) in (V1_CODE, V2_CODE), r
        unexplained = []
        for r in results:  # requests sent after a version was seen serving follow it
            allowed = [next(exp for _, seen, exp in reversed(switches) if r.started >= seen)]
            allowed += [exp for written, seen, exp in switches if seen > r.started and written <= r.finished]
            if r.kind == "decision":
                assert decision_of(r) in allowed, (r, allowed, switches)
            else:
                answers = {f"mock-anthropic answered as {CLAUDE}" if exp[1][0] == FULL_CLAUDE else "mock-openai answered as gpt-4o" for exp in allowed}
                if answered_by(r) not in answers:
                    unexplained.append(r)
        # a proxied answer from the second model of its list is a fall-over (Envoy retried a reset
        # upstream connection, say): each one must have been counted as such
        fallovers = sum(sample(gw, "plano_upstream_fallovers_total", model=m) for m in ("openai/gpt-4o", FULL_CLAUDE))
        assert len(unexplained) <= fallovers, unexplained
        for _, seen, expected in switches:  # each version served some requests
            assert any(r.started > seen and decision_of(r) == expected for r in decisions)
    finally:
        gw.close()


def test_a_new_model_is_applied_with_an_envoy_hot_restart_and_no_request_fails(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(DEMO)
    gw = RunningGateway(DEMO, config_path=path, watch_interval=0.1, drain_time_s=1, parent_shutdown_time_s=3)
    try:
        first_envoy = gw.gateway.envoy
        load = Load(gw, model="gpt-4.1", text=FRANCE).start()  # no route; gpt-4.1 is not served yet: a proxied 400 says so
        time.sleep(0.5)
        write(path, NEW_MODEL)
        wait_until(lambda: gw.gateway.epoch == 1, 60, "the hot restart")
        seen = time.monotonic()
        wait_until(lambda: first_envoy.poll() is not None, 30, "the old Envoy to exit after its drain")
        gone = time.monotonic()
        wait_until(lambda: not gw.gateway.draining, 10, "the old Envoy to be reaped")
        time.sleep(0.5)

        def not_served_yet(r: Result) -> bool:
            # before the new config is in (a kept-alive connection: before its old Envoy is gone) the model
            # is unknown: 400 in the client's error shape (the SDK raises it), never a 5xx or a reset
            answered_400 = r.status == 400 or (r.kind == "keepalive" and "Error code: 400" in str(r.body))
            return answered_400 and "gpt-4.1" in str(r.body) and "is not served" in str(r.body) and r.started < (gone if r.kind == "keepalive" else seen)

        results = load.finish(not_served_yet)

        assert sample(gw, "plano_config_reloads_total", result="restarted") == 1
        assert gw.gateway.envoy is not first_envoy and gw.gateway.envoy.poll() is None
        for r in results:
            if r.status != 200:
                continue
            if r.kind == "decision":
                # the decision endpoint reports an unknown model's request as the default model's (no route
                # matches FRANCE) until the new config is in, then the new model itself
                if r.started > seen:
                    assert (r.body["model"], r.body["source"]) == ("openai/gpt-4.1", "direct"), r
                elif r.body["source"] == "default":
                    assert r.body["model"] == "openai/gpt-4o-mini", r
                else:
                    assert (r.body["model"], r.body["source"]) == ("openai/gpt-4.1", "direct"), r
            elif r.started > (seen if r.kind == "proxy" else gone):
                # a new connection reaches the new Envoy at once; a kept-alive one stays with the old
                # Envoy (and its config) until that one has drained and exited
                assert answered_by(r) == "mock-openai answered as gpt-4.1", r
        assert any(r.kind == "proxy" and r.started > seen for r in results)
        assert any(r.kind == "keepalive" and r.started > gone for r in results)
        # the old Envoy's config is gone; the ext_proc serves the new bootstrap only
        assert [g.fingerprint for g in gw.gateway.server.generations.live()] == [gw.gateway.server.fingerprint]
    finally:
        gw.close()


def test_serve_reports_a_bootstrap_change_and_serves_the_old_config_until_envoy_runs_the_new_bootstrap(tmp_path):
    """`serve` beside an Envoy it does not own, as a sidecar runs: a new model needs a new bootstrap, which
    serve cannot give Envoy; it says how to, keeps the running Envoy on the old config, and serves the new
    one as soon as an Envoy runs the re-rendered bootstrap (here: hot-restarted onto it by hand)."""
    mocks = [MockProvider("mock-openai"), MockProvider("mock-anthropic")]
    for mock in mocks:
        mock.start(0)
    directory = Path(tempfile.mkdtemp(prefix="plano-", dir="/tmp"))  # short: Unix socket paths are limited
    config = directory / "config.yaml"

    def config_text(text: str) -> str:
        return yaml.safe_dump(point_config_at_mocks(text, mocks[0].base_url, mocks[1].base_url))

    config.write_text(config_text(DEMO))
    socket_path, port, probe, base_id = directory / "x.sock", free_port(), free_port(), pick_base_id()
    cli = [sys.executable, "-m", "plano_extproc.cli"]
    serve = subprocess.Popen([*cli, "serve", "--config", str(config), "--listen", f"unix:{socket_path}", "--metrics", "", "--watch-interval", "0.1",
                              "--log-format", "text", "--log-level", "info"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(serve.stdout.readline, "")), daemon=True).start()
    envoys: list[subprocess.Popen] = []

    def start_envoy(epoch: int) -> None:
        bootstrap = directory / f"envoy-{epoch}.yaml"
        rendered = subprocess.run([*cli, "render-envoy", "--config", str(config), "--extproc", f"unix:{socket_path}", "--admin-socket",
                                   str(directory / f"admin-{epoch}.sock"), "--port", str(port), "--probe-port", str(probe), "-o", str(bootstrap)],
                                  capture_output=True, text=True, timeout=60)
        assert rendered.returncode == 0, rendered.stderr
        envoys.append(subprocess.Popen([envoy_binary(), "-c", str(bootstrap), "--base-id", str(base_id), "--restart-epoch", str(epoch),
                                        "--socket-path", str(directory / "hr"), "--drain-time-s", "1", "--parent-shutdown-time-s", "2",
                                        "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))

    def decide(model: str) -> dict:
        body = json.dumps({"model": model, "messages": user(FRANCE)}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/routing/v1/chat/completions", data=body, headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def assert_not_served(model: str) -> None:
        # proxied, the unknown model would decide (FRANCE matches no route): a 400, nothing upstream; the
        # decision endpoint reports the default model for it
        body = json.dumps({"model": model, "messages": user(FRANCE)}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body, headers={"content-type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 400 and f"'{model}' is not served" in refused.value.read().decode()
        assert decide(model)["source"] == "default"

    def answers() -> bool:
        try:
            decide("gpt-4o")
            return True
        except OSError:
            return False

    try:
        wait_until(lambda: any("serving ext_proc" in line for line in lines), 60, "serve to start")
        start_envoy(0)
        wait_until(answers, 60, "Envoy to serve")
        assert_not_served("gpt-4.1")

        write(config, config_text(NEW_MODEL))
        wait_until(lambda: any("needs a new Envoy bootstrap" in line for line in lines), 30, "serve's report")
        report = next(line for line in lines if "needs a new Envoy bootstrap" in line)
        assert "ERROR" in report and "render-envoy --config" in report and "restart or hot-restart Envoy" in report
        assert_not_served("gpt-4.1")  # the running Envoy keeps the old config
        assert any("Envoy runs the bootstrap of an earlier config" in line for line in lines)

        start_envoy(1)  # the fix serve named: the re-rendered bootstrap, Envoy hot-restarted onto it
        wait_until(lambda: envoys[0].poll() is not None, 30, "the old Envoy to hand over and exit")
        decision = decide("gpt-4.1")
        assert (decision["model"], decision["source"]) == ("openai/gpt-4.1", "direct")
        body = json.dumps({"model": "gpt-4.1", "messages": user(FRANCE)}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body, headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["choices"][0]["message"]["content"] == "mock-openai answered as gpt-4.1"
        assert serve.poll() is None and not any("Traceback" in line for line in lines)
    finally:
        for proc in [*envoys, serve]:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        for mock in mocks:
            mock.stop()
        Path(f"/dev/shm/envoy_shared_memory_{base_id * 10}").unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)
