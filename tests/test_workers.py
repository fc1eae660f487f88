"""The ext_proc as two worker processes behind the real Envoy (`up --workers 2`, LocalGateway(workers=2)).

What a user sees: requests are served by both workers; a fall-over and a translated answer work whichever
worker decided the request, every later stream of a request reaching that worker (none lands on a worker
without the request's record); a session keeps its model whichever worker routes it; the one /metrics
counts every request once; a killed worker is restarted and the gateway serves again; a config reload
reaches both workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from plano_devtools.local import free_port
from tests.conftest import DEMO_CONFIG
from tests.harness import CLAUDE, CODE, FRANCE, RunningGateway, claude, oai, post, stop_process, user

pytestmark = pytest.mark.integration

DEMO = DEMO_CONFIG.read_text()
FULL_CLAUDE = f"anthropic/{CLAUDE}"
WORKERS = 2


def wait_until(condition, timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def families(text: str | None) -> dict[tuple[str, tuple], float]:
    out: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(text or ""):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def per_worker(gw: RunningGateway) -> list[dict[tuple[str, tuple], float]]:
    pool = gw.gateway.pool
    return [families(pool.scrape(k)) for k in range(pool.workers)]


def merged(gw: RunningGateway) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.gateway.metrics_port}/metrics", timeout=10) as resp:
        return families(resp.read().decode())


def phases(samples: dict[tuple[str, tuple], float]) -> Counter:
    """Messages each processor handled, by (processor, phase)."""
    out: Counter = Counter()
    for (name, labels), value in samples.items():
        if name == "plano_extproc_phase_duration_seconds_count":
            d = dict(labels)
            out[(d["processor"], d["phase"])] = int(value)
    return out


def ready(gw: RunningGateway) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.gateway.stats_port}/ready", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return -1


class Tally:
    """Which worker handled what for one request at a time: the per-worker message counts before and after."""

    def __init__(self, gw: RunningGateway) -> None:
        self.gw = gw
        self.before = [phases(s) for s in per_worker(gw)]

    def deltas(self) -> list[Counter]:
        after = [phases(s) for s in per_worker(self.gw)]
        out = [a - b for a, b in zip(after, self.before, strict=True)]
        self.before = after
        return out


def decided_by(deltas: list[Counter]) -> int:
    """The one worker whose routing processor saw the request; every synchronous stream of it was there."""
    (worker,) = [k for k, d in enumerate(deltas) if d[("downstream", "request_body")]]
    for k, d in enumerate(deltas):
        if k != worker:
            # nothing of this request reached another worker (observers run asynchronously: checked apart)
            assert not {p: n for p, n in d.items() if p[0] in ("downstream", "upstream", "translate")}, (k, deltas)
    return worker


def started(running: RunningGateway) -> RunningGateway:
    """Once every worker has served a request: for about a second after Envoy first finds both workers
    healthy, its balancer still sends every stream to one of them."""
    deadline = time.monotonic() + 20
    while not all(total(w, "plano_requests_total") for w in per_worker(running)):
        assert time.monotonic() < deadline, "a worker never got a request"
        post(running, "/routing/v1/chat/completions", {"messages": user(FRANCE)})
        time.sleep(0.05)
    return running


@pytest.fixture(scope="module")
def gw():
    running = RunningGateway(DEMO, workers=WORKERS)
    try:
        yield started(running)
    finally:
        running.close()


def test_the_bootstrap_and_the_workers(gw):
    pool = gw.gateway.pool
    assert gw.gateway.server is None and pool.workers == WORKERS and all(pool.pids())
    assert len(set(pool.pids())) == WORKERS
    bootstrap = gw.gateway.bootstrap_text
    assert "plano_extproc.0" in bootstrap and "plano_extproc.1" in bootstrap and "x-plano-worker" in bootstrap


def test_requests_spread_over_both_workers_and_the_merged_metrics_count_each_once(gw):
    before, workers_before = merged(gw), per_worker(gw)
    sent = 0
    for i in range(40):
        path = "/routing/v1/chat/completions" if i % 2 else "/v1/chat/completions"
        status, _, _ = post(gw, path, {"model": "gpt-4o-mini", "messages": user(f"{FRANCE} ({i})")})
        assert status == 200
        sent += 1

    def counted() -> list[float]:
        return [total(a, "plano_requests_total") - total(b, "plano_requests_total") for a, b in zip(per_worker(gw), workers_before, strict=True)]

    # proxied requests are counted from Envoy's access-log entries, sent in batches (within a second)
    wait_until(lambda: sum(counted()) >= sent, 20, "every request to be counted", every=0.2)
    after, workers_after = merged(gw), per_worker(gw)
    assert sum(counted()) == sent and all(c > 0 for c in counted()), counted()  # both workers served, each request once
    assert total(after, "plano_requests_total") - total(before, "plano_requests_total") == sent
    # the merge is the sum: per label set too
    for labels in ({"endpoint": "proxy"}, {"endpoint": "routing"}):
        assert total(after, "plano_requests_total", **labels) == sum(total(w, "plano_requests_total", **labels) for w in workers_after)
    assert total(after, "plano_extproc_workers") == WORKERS and total(after, "plano_extproc_workers_up") == WORKERS
    assert total(after, "plano_config_generation") == 1


def test_a_fallover_works_on_both_workers_from_the_kept_body(gw):
    """Claude answers 429: Envoy's attempt 2 (gpt-4o) is prepared by the per-attempt processor of the worker
    that decided the request, from the body it kept: Envoy sends that processor no body (it would, on a
    worker without the record)."""
    tally = Tally(gw)
    served: set[int] = set()
    for _ in range(40):
        gw.anthropic_mock.fail_next(status=429)
        reply = oai(gw).chat.completions.create(model="gpt-4o-mini", messages=user(CODE))
        assert reply.choices[0].message.content == "mock-openai answered as gpt-4o"
        deltas = tally.deltas()
        worker = decided_by(deltas)
        assert deltas[worker][("upstream", "request_headers")] == 2  # attempt 1 (translated to Claude) and 2
        assert deltas[worker][("upstream", "request_body")] == 0  # both prepared from the kept body
        served.add(worker)
        if len(served) == WORKERS:
            break
    assert served == set(range(WORKERS))
    gw.anthropic_mock.reset()
    gw.openai_mock.reset()


def test_translated_answers_work_on_both_workers(gw):
    tally = Tally(gw)
    seen: set[tuple[str, int]] = set()
    for _ in range(60):
        reply = claude(gw).messages.create(model="gpt-4o-mini", max_tokens=50, messages=user(FRANCE))
        assert reply.content[0].text == "mock-openai answered as gpt-4o-mini"
        deltas = tally.deltas()
        worker = decided_by(deltas)
        assert deltas[worker][("translate", "response_headers")] == 1
        seen.add(("anthropic-on-openai", worker))
        with oai(gw).chat.completions.create(model=CLAUDE, messages=user(FRANCE), stream=True, stream_options={"include_usage": True}) as stream:
            chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"mock-anthropic answered as {CLAUDE}"
        assert chunks[-1].usage is not None  # the translator read the client's stream_options from the record
        deltas = tally.deltas()
        worker = decided_by(deltas)
        assert deltas[worker][("translate", "response_headers")] == 1
        seen.add(("openai-on-claude", worker))
        if len(seen) == 2 * WORKERS:
            break
    assert seen == {(kind, k) for kind in ("anthropic-on-openai", "openai-on-claude") for k in range(WORKERS)}


def test_observers_close_every_record_on_its_own_worker(gw):
    for i in range(20):
        assert post(gw, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": user(f"{FRANCE} {i}")})[0] == 200

    def settled() -> bool:
        states = [s for s in _statuses(gw) if s is not None]
        return len(states) == WORKERS and all(s["inflight"] == 0 for s in states)

    wait_until(settled, 20, "every worker's in-flight records to be closed")


def _statuses(gw: RunningGateway) -> list:
    import asyncio

    return asyncio.run_coroutine_threadsafe(gw.gateway.pool.status(), gw.loop).result(10)


def test_a_session_keeps_its_model_on_every_worker(gw):
    """One X-Model-Affinity id: the first decision (a code request → Claude) holds for every later request,
    whichever worker routes it and whatever it asks."""
    session = f"workers-{time.time_ns()}"
    tally = Tally(gw)
    models, workers = set(), set()
    for i in range(30):
        text = CODE if i == 0 else (FRANCE if i % 2 else f"{CODE} in Rust, variant {i}")
        status, _, body = post(gw, "/routing/v1/chat/completions", {"messages": user(text)}, headers={"x-model-affinity": session})
        assert status == 200
        models.add(tuple(body["models"]))
        workers.add(decided_by(tally.deltas()))
        if i:
            assert body["pinned"] is True and body["source"] == "affinity", body
    assert models == {(FULL_CLAUDE, "openai/gpt-4o")}
    assert workers == set(range(WORKERS))


def test_the_routing_processor_refuses_a_client_chosen_worker(gw):
    tally = Tally(gw)
    for i in range(10):
        reply = oai(gw).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=user(f"{FRANCE} {i}"), extra_headers={"x-plano-worker": "1"}
        )
        assert reply.parse().choices[0].message.content == "mock-openai answered as gpt-4o-mini"
        decided_by(tally.deltas())  # whoever decided, nothing reached the worker the client named unless it decided
    for seen in gw.openai_mock.requests_snapshot():
        assert not [h for h in seen["headers"] if h.startswith("x-plano-")]  # the worker header never reaches a provider


# ---------------------------------------------------------------------------------------------- restarts


def test_a_killed_worker_is_restarted_and_the_gateway_serves_again():
    running = RunningGateway(DEMO, workers=WORKERS)
    try:
        started(running)
        pool = running.gateway.pool
        for i in range(6):
            assert post(running, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": user(f"{FRANCE} {i}")})[0] == 200
        wait_until(lambda: total(merged(running), "plano_requests_total", endpoint="proxy") >= 6, 20, "the counts", every=0.2)
        counted = total(merged(running), "plano_requests_total")  # this scrape is the last one before the kill
        victim = pool.pids()[1]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: pool.pids()[1] not in (None, victim), 30, "worker 1 to be restarted")
        assert total(merged(running), "plano_extproc_worker_restarts_total", worker="1") == 1
        # the gateway answers again, on both workers
        tally = Tally(running)
        served: set[int] = set()
        deadline = time.monotonic() + 30
        while served != set(range(WORKERS)):
            assert time.monotonic() < deadline, f"only workers {served} answered after the restart"
            status, _, _ = post(running, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": user(f"{FRANCE} after")})
            if status == 200:
                served.add(decided_by(tally.deltas()))
            else:
                tally.deltas()
                time.sleep(0.2)
        wait_until(lambda: ready(running) == 200, 30, "readiness after the restart")
        # what the dead worker counted stays in the merged counters: they never go down (proxied requests
        # are counted from access-log entries, within a second)
        wait_until(lambda: total(merged(running), "plano_requests_total") >= counted + len(served), 20, "the counts", every=0.2)

        def keep_down(workers: tuple[int, ...], seconds: float) -> Counter:
            """Kill `workers` again each time they come back; the /ready answers seen meanwhile."""
            seen: Counter = Counter()
            down_until = time.monotonic() + seconds
            while time.monotonic() < down_until:
                for k in workers:
                    pid = pool.pids()[k]
                    if pid is not None:
                        os.kill(pid, signal.SIGKILL)
                seen[ready(running)] += 1
                time.sleep(0.05)
            return seen

        # one worker kept down: the other serves every new request, so the gateway stays ready
        seen = keep_down((0,), 8)
        assert set(seen) == {200}, seen
        assert post(running, "/routing/v1/chat/completions", {"messages": user(FRANCE)})[0] == 200
        # both kept down: not ready
        assert keep_down((0, 1), 8)[503] > 0
        wait_until(lambda: ready(running) == 200, 60, "readiness once the workers are left alone")
        assert post(running, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": user(FRANCE)})[0] == 200
        assert total(merged(running), "plano_extproc_worker_restarts_total", worker="0") >= 2
    finally:
        running.close()


def test_workers_over_their_memory_limit_are_replaced_without_failing_a_request_or_readiness(caplog: pytest.LogCaptureFixture):
    # a limit every worker passes: each is drained and replaced in turn while clients keep calling
    running = RunningGateway(DEMO, workers=WORKERS, worker_max_rss_mib=1.0)
    try:
        started(running)
        pool = running.gateway.pool
        first_pids = list(pool.pids())
        failures: list[str] = []
        answered = Counter()
        not_ready: list[int] = []
        stop = threading.Event()

        def client(kind: str) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if kind == "chat":
                        reply = oai(running).chat.completions.create(model="gpt-4o-mini", messages=user(f"{FRANCE} {i}"))
                        ok = reply.choices[0].message.content == "mock-openai answered as gpt-4o-mini"
                    elif kind == "stream":
                        text = "".join(c.choices[0].delta.content or "" for c in oai(running).chat.completions.create(
                            model="gpt-4o-mini", messages=user(f"{FRANCE} {i}"), stream=True) if c.choices)
                        ok = text == "mock-openai answered as gpt-4o-mini"
                    elif kind == "translated":  # an OpenAI client answered by Anthropic: the translator's record
                        reply = oai(running).chat.completions.create(model=FULL_CLAUDE, messages=user(f"{FRANCE} {i}"))
                        ok = reply.choices[0].message.content == f"mock-anthropic answered as {CLAUDE}"
                    else:
                        status, _, body = post(running, "/routing/v1/chat/completions", {"messages": user(f"{CODE} {i}")})
                        ok = status == 200 and body["route"] == "code_generation"
                except Exception as exc:  # every failure is the finding
                    ok, exc_text = False, repr(exc)
                else:
                    exc_text = "wrong answer"
                answered[kind] += 1
                if not ok:
                    failures.append(f"{kind} {i}: {exc_text}")

        threads = [threading.Thread(target=client, args=(k,)) for k in ("chat", "stream", "translated", "decision")]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 150
            while not all(p not in first_pids for p in pool.pids()):  # every worker replaced at least once
                assert time.monotonic() < deadline, f"workers not all replaced: {first_pids} -> {pool.pids()}"
                status = ready(running)
                if status != 200:
                    not_ready.append(status)
                time.sleep(0.1)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert not failures, failures[:5]
        assert not not_ready  # readiness held through every drain and restart
        assert min(answered.values()) > 10, answered
        samples = merged(running)
        assert all(total(samples, "plano_extproc_worker_recycles_total", worker=str(k)) >= 1 for k in range(WORKERS))
        assert total(samples, "plano_extproc_worker_restarts_total") == 0  # replacements are not crashes
        # a limit no worker can stay under is named as the cause of the churn, once
        too_low = [r for r in caplog.records if "the limit is below what a worker needs" in r.getMessage()]
        assert len(too_low) == 1, [r.getMessage() for r in caplog.records]
    finally:
        running.close()


# ---------------------------------------------------------------------------------------------- reload

CODE_DESCRIPTION = "generating new code snippets, functions, or boilerplate based on user prompts or requirements"
REASONING_DESCRIPTION = "complex reasoning tasks, multi-step problem solving, or detailed explanations"
# the routes swap descriptions: code requests get the other ranked list (no bootstrap change)
V2 = DEMO.replace(f"description: {CODE_DESCRIPTION}", "description: @").replace(
    f"description: {REASONING_DESCRIPTION}", f"description: {CODE_DESCRIPTION}"
).replace("description: @", f"description: {REASONING_DESCRIPTION}")
NEW_MODEL = DEMO.replace("\nrouting_preferences:", "\n  - model: openai/gpt-4.1\n    access_key: $OPENAI_API_KEY\n\nrouting_preferences:", 1)


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_a_config_reload_reaches_both_workers(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(DEMO)
    running = RunningGateway(DEMO, workers=WORKERS, config_path=path, watch_interval=0.1, drain_time_s=1, parent_shutdown_time_s=2)
    try:
        started(running)
        def decision(text: str, model: str | None = None) -> tuple[int, dict]:
            body = {"messages": user(text), **({"model": model} if model else {})}
            status, _, answer = post(running, "/routing/v1/chat/completions", body)
            return status, answer

        def generations() -> list:
            return [s["generation"] if s else None for s in _statuses(running)]

        assert decision(CODE)[1]["models"] == [FULL_CLAUDE, "openai/gpt-4o"]
        _write(path, V2)
        wait_until(lambda: generations() == [2] * WORKERS, 30, "both workers on version 2")
        tally = Tally(running)
        workers = set()
        for _ in range(20):
            status, answer = decision(CODE)
            assert status == 200 and answer["models"] == ["openai/gpt-4o", FULL_CLAUDE], answer
            workers.add(decided_by(tally.deltas()))
        assert workers == set(range(WORKERS))
        assert total(merged(running), "plano_config_reloads_total", result="applied") == 1

        # an invalid version: refused by all, both keep version 2
        _write(path, V2.replace("routing:\n", "routing:\n  session_tll: 5\n"))
        wait_until(lambda: total(merged(running), "plano_config_reloads_total", result="invalid") == 1, 30, "the invalid version")
        assert generations() == [2] * WORKERS

        # a new model: both workers take it, Envoy is hot-restarted onto the new bootstrap
        _write(path, NEW_MODEL)
        wait_until(lambda: running.gateway.epoch == 1, 60, "the hot restart")
        assert generations() == [3] * WORKERS
        for _ in range(10):
            status, answer = decision(FRANCE, "gpt-4.1")
            assert status == 200 and answer["model"] == "openai/gpt-4.1"
            reply = oai(running).chat.completions.create(model="gpt-4.1", messages=user(FRANCE))
            assert reply.choices[0].message.content == "mock-openai answered as gpt-4.1"
        # the drained Envoy's config is forgotten by both workers
        wait_until(lambda: not running.gateway.draining, 30, "the old Envoy to exit")
        wait_until(lambda: all(s and len(s["fingerprints"]) == 1 for s in _statuses(running)), 10, "the old config to be forgotten")
        # a worker restarted now starts on version 3
        pool = running.gateway.pool
        victim = pool.pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: pool.pids()[0] not in (None, victim) and generations() == [3] * WORKERS, 30, "worker 0 restarted on version 3")
    finally:
        running.close()


# ---------------------------------------------------------------------------------------------- the CLI


def _up(tmp: Path, *extra: str, cwd: Path | None = None) -> tuple[subprocess.Popen, int, int, list[str]]:
    port, metrics = free_port(), free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")])}
    # -P: like the installed `plano-extproc` script, `up` itself never imports from its working directory
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "plano_extproc.cli", "up", "--mock-providers", "--port", str(port), "--metrics-port", str(metrics),
         "--watch-interval", "0", "--log-format", "text", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    return proc, port, metrics, lines


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "plano_extproc.workers.worker" in line]


def _chat(port: int) -> int:
    body = json.dumps({"model": "gpt-4o-mini", "messages": user(FRANCE)}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return -1


def _work_dirs(tmp: str) -> list[str]:
    """What `up` made in $TMPDIR (libraries leave files of their own there)."""
    return [name for name in os.listdir(tmp) if name.startswith("plano-")]


def test_up_restarts_a_killed_worker_and_cleans_up_on_sigterm():
    with tempfile.TemporaryDirectory(prefix="plano-t-", dir="/tmp") as tmp:
        proc, port, metrics, lines = _up(Path(tmp), "--workers", "2")
        try:
            wait_until(lambda: any("plano gateway ready" in line for line in lines) or proc.poll() is not None, 90, "up to start")
            assert proc.poll() is None, "".join(lines)
            assert "2 ext_proc worker processes" in "".join(lines)
            workers = _children(proc.pid)
            assert len(workers) == 2 and _chat(port) == 200
            os.kill(workers[0], signal.SIGKILL)
            wait_until(lambda: len(_children(proc.pid)) == 2 and workers[0] not in _children(proc.pid), 30, "the restart")
            wait_until(lambda: _chat(port) == 200, 30, "the gateway to answer again")
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as resp:
                assert total(families(resp.read().decode()), "plano_extproc_worker_restarts_total") == 1
            assert any("exited (killed by SIGKILL)" in line and "restarting it" in line for line in lines)
        finally:
            status = stop_process(proc)
        assert status == 0, "".join(lines[-30:])
        assert not _children(proc.pid)
        assert _work_dirs(tmp) == []  # the work directory is gone


def test_up_cleans_up_when_stopped_during_start_up_or_when_a_worker_dies_starting():
    with tempfile.TemporaryDirectory(prefix="plano-t-", dir="/tmp") as tmp:
        # SIGTERM while the workers warm up
        proc, _, _, lines = _up(Path(tmp), "--workers", "2")
        try:
            wait_until(lambda: _children(proc.pid) or proc.poll() is not None, 60, "the workers to be started", every=0.01)
        finally:
            status = stop_process(proc)
        assert status != 0 and not any("plano gateway ready" in line for line in lines)
        assert _work_dirs(tmp) == [], "".join(lines)

        # a worker killed before it is ready: up fails and cleans up
        proc, _, _, lines = _up(Path(tmp), "--workers", "2")
        try:
            wait_until(lambda: _children(proc.pid) or proc.poll() is not None, 60, "the workers to be started", every=0.01)
            for pid in _children(proc.pid):
                os.kill(pid, signal.SIGKILL)
            status = proc.wait(60)
        finally:
            stop_process(proc)
        assert status == 1 and any("exited during start-up" in line for line in lines), "".join(lines)
        assert _work_dirs(tmp) == []


def test_workers_run_the_installed_code_not_a_plano_extproc_folder_in_the_working_directory():
    """`up` started in a directory that holds another checkout (an older version, a fork) must not run that
    checkout's code in its workers: `python -m` would put the working directory first on sys.path."""
    with tempfile.TemporaryDirectory(prefix="plano-t-", dir="/tmp") as tmp:
        stray = Path(tmp) / "checkout" / "plano_extproc"
        (stray / "workers").mkdir(parents=True)
        (stray / "__init__.py").write_text("raise SystemExit('the stray checkout was imported')\n")
        (stray / "workers" / "__init__.py").write_text("")
        (stray / "workers" / "worker.py").write_text("")
        proc, port, _, lines = _up(Path(tmp), "--workers", "1", cwd=stray.parent)
        try:
            wait_until(lambda: any("plano gateway ready" in line for line in lines) or proc.poll() is not None, 90, "up to start")
            assert proc.poll() is None, "".join(lines)
            assert _chat(port) == 200
        finally:
            stop_process(proc)
        assert not any("stray checkout" in line for line in lines), "".join(lines)
