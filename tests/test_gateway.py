"""The whole gateway on a real Envoy: ext_proc + embedded router + local mock providers.

Clients are the official `openai` and `anthropic` SDKs (proxy path) and plain HTTP (decision path).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import anthropic
import grpc
import openai
import pytest

from plano_devtools.local import MOCK_KEY
from plano_extproc.api import routing_pb2, routing_pb2_grpc
from tests.conftest import DEMO_CONFIG
from tests.harness import CLAUDE, CODE, FRANCE, REASONING, RunningGateway, SilentServer, claude, hung_router_config, oai, post, user

pytestmark = pytest.mark.integration

# ------------------------------------------------------------------------------------------- decisions


def test_decisions_on_all_three_routing_endpoints(gw):
    status, _, code = post(gw, "/routing/v1/chat/completions", {"model": "gpt-4o-mini", "messages": user(CODE)})
    assert status == 200
    assert code["route"] == "code_generation"
    assert code["models"] == ["anthropic/claude-sonnet-4-20250514", "openai/gpt-4o"] and code["model"] == code["models"][0]
    assert len(code["trace_id"]) == 32 and "session_id" not in code

    _, _, reasoning = post(gw, "/routing/v1/messages", {"model": CLAUDE, "max_tokens": 10, "system": "be brief", "messages": user(REASONING)})
    assert reasoning["route"] == "complex_reasoning" and reasoning["models"][0] == "openai/gpt-4o"

    _, _, france = post(gw, "/routing/v1/responses", {"model": "gpt-4o", "input": FRANCE})
    assert france["route"] is None and france["models"] == ["openai/gpt-4o"] and france["source"] == "direct"

    _, _, no_model = post(gw, "/routing/v1/chat/completions", {"messages": user(FRANCE)})
    assert no_model["models"] == ["openai/gpt-4o-mini"] and no_model["source"] == "default"


def test_trace_id_follows_traceparent(gw):
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    _, _, d = post(gw, "/routing/v1/chat/completions", {"messages": user(FRANCE)}, {"traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    assert d["trace_id"] == trace


def test_affinity_pins_the_first_decision(gw):
    sid = f"pin-{time.time_ns()}"
    _, _, first = post(gw, "/routing/v1/chat/completions", {"messages": user(CODE)}, {"x-model-affinity": sid})
    _, _, second = post(gw, "/routing/v1/chat/completions", {"messages": user(FRANCE)}, {"x-model-affinity": sid})
    _, _, alias = post(gw, "/routing/v1/chat/completions", {"messages": user(FRANCE)}, {"x-session-id": sid})
    assert (first["session_id"], first["pinned"], first["route"]) == (sid, False, "code_generation")
    assert (second["pinned"], second["route"], second["models"]) == (True, "code_generation", first["models"])
    assert alias["pinned"] is True


def test_inline_routes_replace_configured_ones(gw):
    prefs = [
        {"name": "translation", "description": "translating text between languages", "models": ["openai/gpt-4o"]},
        {"name": "code", "description": "writing code", "models": ["anthropic/claude-sonnet-4-20250514"]},
    ]
    _, _, d = post(gw, "/routing/v1/chat/completions", {"messages": user("Translate 'good morning' into Italian"), "routing_preferences": prefs})
    assert d["route"] == "translation" and d["models"] == ["openai/gpt-4o"] and d["source"] == "inline"


# ----------------------------------------------------------------------------------------------- proxy


def test_openai_chat_is_routed_to_the_right_provider_with_its_model_and_key(gw):
    reply = oai(gw).chat.completions.create(
        model="gpt-4o-mini",
        messages=user(CODE),
        extra_body={
            "routing_preferences": [
                {"name": "code", "description": "generating new code snippets, functions, or boilerplate", "models": [f"anthropic/{CLAUDE}"]},
                {"name": "travel", "description": "booking flights and hotels", "models": ["openai/gpt-4o"]},
            ]
        },
    )
    assert reply.choices[0].message.content == f"mock-anthropic answered as {CLAUDE}"
    (seen,) = gw.anthropic_mock.requests_snapshot()
    # an OpenAI client on a Claude model: translated to the native Messages API, answer translated back
    assert seen["path"] == "/v1/messages"
    assert seen["body"]["messages"] == [{"role": "user", "content": [{"type": "text", "text": CODE}]}] and seen["body"]["max_tokens"] > 0
    assert seen["headers"]["x-api-key"] == MOCK_KEY and seen["headers"]["anthropic-version"] == "2023-06-01"
    assert seen["headers"]["host"] == f"127.0.0.1:{gw.anthropic_mock.port}"
    assert "authorization" not in seen["headers"]  # the client's own key never reaches a provider
    assert seen["body"]["model"] == CLAUDE
    assert "routing_preferences" not in seen["body"]
    assert not [h for h in seen["headers"] if h.startswith("x-plano-")]


def test_anthropic_messages_and_openai_responses_are_proxied(gw):
    message = claude(gw).messages.create(model=CLAUDE, max_tokens=50, messages=user(CODE))
    assert message.content[0].text == f"mock-anthropic answered as {CLAUDE}"
    (seen,) = gw.anthropic_mock.requests_snapshot()
    assert seen["path"] == "/v1/messages" and seen["headers"]["x-api-key"] == MOCK_KEY

    response = oai(gw).responses.create(model="gpt-4o-mini", input=FRANCE)
    assert response.output_text == "mock-openai answered as gpt-4o-mini"
    (seen,) = gw.openai_mock.requests_snapshot()
    assert seen["path"] == "/v1/responses" and seen["headers"]["authorization"] == f"Bearer {MOCK_KEY}"
    assert seen["body"]["model"] == "gpt-4o-mini"


def test_streaming_arrives_as_a_stream(gw):
    gw.openai_mock.chunk_delay = 0.15
    started = time.monotonic()
    stream = oai(gw).chat.completions.create(model="gpt-4o-mini", messages=user(FRANCE), stream=True)
    arrivals, text = [], ""
    for chunk in stream:
        arrivals.append(time.monotonic() - started)
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert text == "mock-openai answered as gpt-4o-mini"
    assert len(arrivals) >= 4
    # unbuffered: the first chunk is at the client long before the provider sends its last one
    assert arrivals[-1] - arrivals[0] > 0.3


def test_anthropic_stream(gw):
    with claude(gw).messages.stream(model=CLAUDE, max_tokens=50, messages=user(CODE)) as stream:
        text = "".join(stream.text_stream)
    assert text == f"mock-anthropic answered as {CLAUDE}"


@pytest.mark.parametrize("status", [429, 503])
def test_first_model_failure_falls_over_to_the_second_model(gw, status):
    gw.anthropic_mock.fail_next(status=status)
    registry = gw.gateway.server.metrics.registry

    def upstream_messages(phase: str) -> float:
        labels = {"processor": "upstream", "phase": phase}
        return registry.get_sample_value("plano_extproc_phase_duration_seconds_count", labels) or 0.0

    headers_before, bodies_before = upstream_messages("request_headers"), upstream_messages("request_body")
    reply = oai(gw).chat.completions.create(model="gpt-4o-mini", messages=user(CODE))
    # both attempts were prepared by the per-attempt processor (attempt 1 is translated to Claude's
    # Messages API), each from the kept body: Envoy sent it headers only
    assert upstream_messages("request_headers") == headers_before + 2
    assert upstream_messages("request_body") == bodies_before
    assert reply.choices[0].message.content == "mock-openai answered as gpt-4o"
    (failed,) = gw.anthropic_mock.requests_snapshot()
    (served,) = gw.openai_mock.requests_snapshot()
    assert failed["body"]["model"] == CLAUDE and served["body"]["model"] == "gpt-4o"
    assert served["headers"]["authorization"] == f"Bearer {MOCK_KEY}"
    assert "x-api-key" not in served["headers"] and "anthropic-version" not in served["headers"]


def test_single_model_gets_one_same_provider_retry(gw):
    gw.openai_mock.fail_next(model="gpt-4o-mini", status=429)
    reply = oai(gw).chat.completions.create(model="gpt-4o-mini", messages=user(FRANCE))
    assert reply.choices[0].message.content == "mock-openai answered as gpt-4o-mini"
    assert len(gw.openai_mock.requests_snapshot()) == 2


def test_every_model_failing_returns_the_last_provider_error(gw):
    gw.anthropic_mock.fail_next(status=429)
    gw.openai_mock.fail_next(status=503)
    with pytest.raises(openai.InternalServerError) as info:
        oai(gw).chat.completions.create(model="gpt-4o-mini", messages=user(CODE))
    assert info.value.status_code == 503


def test_client_cannot_pick_the_cluster_or_impersonate(gw):
    client = openai.OpenAI(
        base_url=gw.url + "/v1",
        api_key="client-secret",
        max_retries=0,
        default_headers={"x-plano-cluster": "model.openai_gpt-4o", "x-plano-route": "evil", "x-envoy-max-retries": "5"},
    )
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=user(FRANCE))
    assert reply.choices[0].message.content == "mock-openai answered as gpt-4o-mini"
    (seen,) = gw.openai_mock.requests_snapshot()
    assert seen["headers"]["authorization"] == f"Bearer {MOCK_KEY}"
    assert "client-secret" not in json.dumps(seen, default=lambda b: b.decode("latin-1"))
    assert not [h for h in seen["headers"] if h.startswith("x-plano-")]


# ---------------------------------------------------------------------------------------------- errors


def test_malformed_json_is_a_400_in_each_api_style(gw):
    status, _, body = post(gw, "/v1/chat/completions", None, raw=b"{nope")
    assert status == 400 and "not valid JSON" in body["error"]["message"] and body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError) as info:
        claude(gw).messages.create(model=CLAUDE, max_tokens=5, messages=user("x"), extra_body={"routing_preferences": {}})
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "invalid_request_error"
    assert "routing_preferences must be a non-empty array" in info.value.body["error"]["message"]


def test_shapes_the_gateway_does_not_use_are_forwarded_untouched(gw):
    """Claude Code sends a `system` role inside `messages` and fields we have no use for: the provider judges."""
    body = {
        "model": CLAUDE,
        "max_tokens": 5,
        "messages": [{"role": "system", "content": "from the harness"}, {"role": "user", "content": "hi"}, {"role": "user", "content": 7}],
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "output_config": {"effort": "low"},
        "big": 18446744073709551617,
    }
    status, _, reply = post(gw, "/v1/messages?beta=true", body)
    assert status == 200 and reply["type"] == "message"
    received = gw.anthropic_mock.requests_snapshot()[-1]
    assert received["path"].endswith("/messages?beta=true") or received["path"].endswith("/messages")
    assert received["body"]["messages"] == body["messages"] and received["body"]["output_config"] == {"effort": "low"}
    assert received["raw"].count(b"18446744073709551617") == 1  # integers beyond 64 bits survive exactly


def test_bad_inline_preference_is_a_400(gw):
    with pytest.raises(openai.BadRequestError) as info:
        oai(gw).chat.completions.create(
            model="gpt-4o-mini", messages=user(CODE), extra_body={"routing_preferences": [{"name": "code", "models": ["x"]}]}
        )
    assert "routing_preferences[0].description" in info.value.message


def test_unknown_endpoint(gw):
    status, _, body = post(gw, "/v1/embeddings", {"input": "x"})
    assert status == 404 and "error" in body


def test_oversize_body_is_a_413(gw):
    status, _, _ = post(gw, "/v1/chat/completions", None, raw=b'{"messages": [{"role": "user", "content": "' + b"x" * (33 * 1024 * 1024) + b'"}]}')
    assert status == 413


def test_grpc_decide_api_on_the_extproc_socket(gw):
    async def decide():
        async with grpc.aio.insecure_channel(gw.gateway.server.address) as channel:
            stub = routing_pb2_grpc.RoutingServiceStub(channel)
            ok = await stub.Decide(routing_pb2.DecideRequest(api_format=routing_pb2.OPENAI_CHAT, body=json.dumps({"messages": user(CODE)}).encode()))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Decide(routing_pb2.DecideRequest(api_format=routing_pb2.ANTHROPIC_MESSAGES, body=b"[]"))
            return ok, info.value

    ok, error = asyncio.run(decide())
    assert ok.route == "code_generation" and list(ok.models) == ["anthropic/claude-sonnet-4-20250514", "openai/gpt-4o"]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "JSON object" in error.details()


def test_router_timeout_falls_back_without_an_error():
    hung = SilentServer()
    running = RunningGateway(hung_router_config(DEMO_CONFIG.read_text(), hung.url))
    try:
        status, _, d = post(running, "/routing/v1/chat/completions", {"model": "gpt-4o", "messages": user(CODE * 40)})
        assert status == 200 and d["source"] == "fallback" and d["models"] == ["openai/gpt-4o"]
        # a different text: the timed-out call above may have finished in the background and cached its query
        reply = oai(running).chat.completions.create(model="gpt-4o", messages=user(REASONING * 40))
        assert reply.choices[0].message.content == "mock-openai answered as gpt-4o"
    finally:
        running.close()
        hung.close()


def test_models_listing_names_declared_models_and_aliases(gw):
    ids = [m.id for m in oai(gw).models.list()]
    assert ids[:3] == ["openai/gpt-4o-mini", "openai/gpt-4o", "anthropic/claude-sonnet-4-20250514"]
    assert {"fast-model", "smart-model"} <= set(ids)


def test_a_forged_cluster_header_routes_nowhere(gw):
    forged = {"x-plano-cluster": "ranked.openai_gpt-4o+openai_gpt-4o", "authorization": "Bearer client-secret"}
    for method, path in (("POST", "/v2/anything"), ("GET", "/v1/chat/completions"), ("POST", "/v1/chat/completions")):
        req = urllib.request.Request(gw.url + path, method=method, headers=forged, data=None)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status = resp.status
        except urllib.error.HTTPError as err:
            status = err.code
        assert status in (400, 404, 405), (method, path, status)
    assert gw.openai_mock.requests_snapshot() == [] and gw.anthropic_mock.requests_snapshot() == []


def test_passthrough_auth_forwards_the_clients_own_key_to_that_provider_only():
    import yaml

    data = yaml.safe_load(DEMO_CONFIG.read_text())
    for provider in data["model_providers"]:
        if provider["model"] == "openai/gpt-4o-mini":
            provider["passthrough_auth"] = True
    running = RunningGateway(yaml.safe_dump(data))
    try:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="client-own-key", max_retries=0)
        client.chat.completions.create(model="gpt-4o-mini", messages=user(FRANCE))
        client.chat.completions.create(model="gpt-4o", messages=user(FRANCE))
        # a second client on the same model right after (one kind of request, built once): its own key
        other = openai.OpenAI(base_url=running.url + "/v1", api_key="another-client-key", max_retries=0)
        other.chat.completions.create(model="gpt-4o-mini", messages=user(FRANCE))
        client.chat.completions.create(model="gpt-4o", messages=user(FRANCE), extra_headers={"anthropic-beta": "tools"})
        passthrough, own, second, own_again = running.openai_mock.requests_snapshot()
        assert passthrough["body"]["model"] == "gpt-4o-mini" and passthrough["headers"]["authorization"] == "Bearer client-own-key"
        assert own["body"]["model"] == "gpt-4o" and own["headers"]["authorization"] == f"Bearer {MOCK_KEY}"
        assert second["body"]["model"] == "gpt-4o-mini" and second["headers"]["authorization"] == "Bearer another-client-key"
        assert own_again["headers"]["authorization"] == f"Bearer {MOCK_KEY}" and "anthropic-beta" not in own_again["headers"]
    finally:
        running.close()
