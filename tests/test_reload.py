"""Config reload without a restart, in-process: the watcher (what counts as a new version, an invalid one
kept out), `ExtProcServer.reload` (every stream and every request keeps the config it started with), and
`serve`'s report of a change that needs a new Envoy bootstrap. The same on the real Envoy under load, with
`up`'s hot restart: tests/test_reload_gateway.py."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import grpc
import pytest

from plano_extproc.api import routing_pb2, routing_pb2_grpc
from plano_extproc.config import parse_config
from plano_extproc.reload import ConfigWatcher, serve_reloader
from tests.conftest import DEMO_CONFIG
from tests.processors_kit import (
    CLAUDE,
    apply_mutation,
    client_body,
    client_headers,
    common_of,
    envoy_metadata,
    immediate_of,
    request_body_msg,
    request_headers_msg,
    set_headers,
)
from tests.test_processors_server import CALL_TIMEOUT_S, Served, serving

DEMO = DEMO_CONFIG.read_text()


def version(n: int) -> str:
    """The demo config with literal keys of version n; even versions swap the two routes' model lists
    (the same ranked lists, so the same bootstrap)."""
    text = DEMO.replace("$OPENAI_API_KEY", f"sk-openai-gen{n}").replace("$ANTHROPIC_API_KEY", f"sk-ant-gen{n}")
    if n % 2 == 0:
        text = text.replace(
            "      - anthropic/claude-sonnet-4-20250514\n      - openai/gpt-4o\n  - name: complex_reasoning\n    description: complex reasoning tasks, multi-step problem solving, or detailed explanations\n    models:\n      - openai/gpt-4o\n      - anthropic/claude-sonnet-4-20250514\n",
            "      - openai/gpt-4o\n      - anthropic/claude-sonnet-4-20250514\n  - name: complex_reasoning\n    description: complex reasoning tasks, multi-step problem solving, or detailed explanations\n    models:\n      - anthropic/claude-sonnet-4-20250514\n      - openai/gpt-4o\n",
        )
        assert text != DEMO
    return text


def add_model(text: str) -> str:
    return text.replace("\nrouting_preferences:", "\n  - model: openai/gpt-4.1\n    access_key: sk-new\n\nrouting_preferences:", 1)


@pytest.fixture
async def served():
    async with serving(parse_config(version(1), {})) as s:
        yield s


async def decision(served: Served, text: str, fingerprint: str | None = "ours") -> dict:
    raw = client_body("openai_chat", text)
    replies, _ = await served.lockstep("downstream", [request_headers_msg(client_headers("/routing/v1/chat/completions", raw, "req-d")), request_body_msg(raw)], fingerprint)
    answer = immediate_of(replies[-1])
    assert answer.status == 200, answer.body
    return answer.body


# ------------------------------------------------------------------------------------------- snapshots


async def test_a_request_keeps_the_config_it_started_with_across_all_its_streams(served):
    raw = client_body("openai_chat", "complex_reasoning: trains")
    headers = client_headers("/v1/chat/completions", raw, "req-before")
    stream = served.open("downstream")
    await stream.write(request_headers_msg(headers))
    await stream.read()  # the headers reply: the stream (and its config) has started

    assert await served.server.reload(parse_config(version(2), {})) == "applied"  # swapped routes, new keys
    assert served.server.generations.current.number == 2

    await stream.write(request_body_msg(raw))
    down = await stream.read()
    await stream.done_writing()
    # decided with generation 1: complex_reasoning -> [gpt-4o, claude], attempt 1 with generation 1's key
    assert set_headers(down)["x-plano-cluster"] == "ranked.openai_gpt-4o+anthropic_claude-sonnet-4-20250514"
    assert set_headers(down)["authorization"] == "Bearer sk-openai-gen1"
    apply_mutation(headers, common_of(down).header_mutation)
    # attempt 2 starts after the reload: it is prepared by the config its request started with
    replies, _ = await served.lockstep("upstream", [request_headers_msg({**headers, "x-envoy-attempt-count": "2"}, metadata=envoy_metadata(down))])
    assert set_headers(replies[0])["x-api-key"] == "sk-ant-gen1"

    # a request that starts now gets generation 2, in all its streams too
    headers = client_headers("/v1/chat/completions", raw, "req-after")
    replies, _ = await served.lockstep("downstream", [request_headers_msg(headers), request_body_msg(raw)])
    down = replies[1]
    assert set_headers(down)["x-plano-cluster"] == "ranked.anthropic_claude-sonnet-4-20250514+openai_gpt-4o"
    apply_mutation(headers, common_of(down).header_mutation)
    replies, _ = await served.lockstep("upstream", [request_headers_msg({**headers, "x-envoy-attempt-count": "2"}, metadata=envoy_metadata(down))])
    assert set_headers(replies[0])["authorization"] == "Bearer sk-openai-gen2"
    assert served.server.inflight.get("req-before").owner is not served.server.inflight.get("req-after").owner


async def test_pins_router_and_decide_api_survive_a_reload(served):
    async with grpc.aio.insecure_channel(served.server.address) as channel:
        stub = routing_pb2_grpc.RoutingServiceStub(channel)
        body = client_body("openai_chat", "code_generation: a trie")
        first = await stub.Decide(routing_pb2.DecideRequest(api="openai_chat", body=body, affinity_id="s1"), timeout=CALL_TIMEOUT_S)
        router = served.server.engine.router
        await served.server.reload(parse_config(version(2), {}))
        assert served.server.engine.router is router  # routing.router unchanged: the same (warm) router
        pinned = await stub.Decide(routing_pb2.DecideRequest(api="openai_chat", body=body, affinity_id="s1"), timeout=CALL_TIMEOUT_S)
        fresh = await stub.Decide(routing_pb2.DecideRequest(api="openai_chat", body=body, affinity_id="s2"), timeout=CALL_TIMEOUT_S)
    assert first.models == pinned.models and pinned.pinned  # the pin made before the reload holds
    assert fresh.models == ["openai/gpt-4o", CLAUDE]  # new sessions follow the new routes


# ------------------------------------------------------------------------------------------- serve


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(version(1))
    return path


def write(path: Path, text: str) -> None:
    """As editors and Kubernetes do: a new file renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def test_serve_applies_a_valid_version_and_keeps_the_config_through_an_invalid_one(served, config_file, caplog):
    server = served.server
    watcher = ConfigWatcher(config_file, lambda text: parse_config(text, {}), serve_reloader(server, config_file), server.metrics, 0.05)
    assert await watcher.check() is None  # nothing changed
    write(config_file, version(1))
    assert await watcher.check() is None  # rewritten with the same content: no reload
    assert (await decision(served, "complex_reasoning: x"))["models"] == ["openai/gpt-4o", CLAUDE]

    write(config_file, version(2))
    assert await watcher.check() == "applied"
    assert (await decision(served, "complex_reasoning: x"))["models"] == [CLAUDE, "openai/gpt-4o"]

    caplog.set_level(logging.ERROR)
    broken = version(1).replace("    models:\n      - openai/gpt-4o\n", "    models:\n      - openai/gpt-5\n", 1).replace("routing:\n", "routing:\n  session_tll: 3\n")
    write(config_file, broken)
    assert await watcher.check() == "invalid"
    assert await watcher.check() is None  # logged and counted once per version
    (record,) = [r for r in caplog.records if "invalid config" in r.getMessage()]
    message = record.getMessage()
    assert "routing.session_tll: unknown key" in message and str(config_file) in message
    assert served.sample("plano_config_reloads_total", result="invalid") == 1
    assert served.sample("plano_config_reloads_total", result="applied") == 1
    assert (await decision(served, "complex_reasoning: x"))["models"] == [CLAUDE, "openai/gpt-4o"]  # version 2 serves on
    assert served.sample("plano_config_generation") == 2

    write(config_file, "version: v0.4.0\nmodel_providers: [")  # not even YAML
    assert await watcher.check() == "invalid"
    config_file.write_bytes(b"\xff\xfe")
    assert await watcher.check() == "invalid"
    assert served.sample("plano_config_reloads_total", result="invalid") == 3


async def test_serve_reports_a_change_that_needs_a_new_bootstrap_and_serves_each_envoy_its_config(served, config_file, caplog):
    server = served.server
    old_fingerprint = server.fingerprint
    watcher = ConfigWatcher(config_file, lambda text: parse_config(text, {}), serve_reloader(server, config_file), server.metrics, 0.05)
    caplog.set_level(logging.INFO)
    write(config_file, add_model(version(1)))
    assert await watcher.check() == "bootstrap_mismatch"
    new_fingerprint = server.fingerprint
    assert new_fingerprint != old_fingerprint
    (report,) = [r for r in caplog.records if r.levelno == logging.ERROR and "needs a new Envoy bootstrap" in r.getMessage()]
    assert "plano-extproc render-envoy --config" in report.getMessage() and "restart" in report.getMessage()

    # the running Envoy (old bootstrap) keeps the old config: gpt-4.1 is not served there
    old = await decision(served, "hi", fingerprint=old_fingerprint)
    assert old["model"] == "openai/gpt-4o-mini"
    stale = [r for r in caplog.records if r.levelno == logging.ERROR and "earlier config" in r.getMessage()]
    assert len(stale) == 1 and "render-envoy" in stale[0].getMessage()
    assert served.sample("plano_config_previous_bootstrap_streams_total") == 1
    # an Envoy running the re-rendered bootstrap gets the new one
    raw = client_body("openai_chat", "hi", model="gpt-4.1")
    replies, _ = await served.lockstep("downstream", [request_headers_msg(client_headers("/routing/v1/chat/completions", raw, "r")), request_body_msg(raw)], new_fingerprint)
    assert immediate_of(replies[-1]).body["model"] == "openai/gpt-4.1"
    # a bootstrap from a config this process never served is still refused
    replies, _ = await served.lockstep("downstream", [request_headers_msg(client_headers("/routing/v1/chat/completions", raw, "r")), request_body_msg(raw)], "0123456789abcdef")
    assert immediate_of(replies[-1]).status == 503
    assert served.sample("plano_config_reloads_total", result="bootstrap_mismatch") == 1


async def test_a_config_that_cannot_be_built_keeps_the_old_one(served, config_file, monkeypatch):
    server = served.server
    watcher = ConfigWatcher(config_file, lambda text: parse_config(text, {}), serve_reloader(server, config_file), server.metrics, 0.05)

    async def broken_warm_up(self):
        raise RuntimeError("router model missing")

    from plano_extproc.engine import DecisionEngine

    monkeypatch.setattr(DecisionEngine, "warm_up", broken_warm_up)
    write(config_file, version(2))
    assert await watcher.check() == "failed"
    assert server.generations.current.number == 1
    assert (await decision(served, "complex_reasoning: x"))["models"] == ["openai/gpt-4o", CLAUDE]
    assert served.sample("plano_config_reloads_total", result="failed") == 1
