"""The request-path processors in-process, on ext_proc protobuf messages as Envoy sends them: the
downstream (router-level) processor and the per-attempt (upstream) processor. Table-driven where the
cases differ only in data. The same behaviour through a real Envoy is in test_gateway.py.

The router is a deterministic stand-in (tests/processors_kit.KeywordRouter): a request names the route it
should match in its text.
"""

from __future__ import annotations

import re

import orjson
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext

from plano_extproc.apis import BY_NAME
from plano_extproc.config import parse_config
from plano_extproc.contract import CLUSTER_HEADER, DecisionMetadata
from tests.processors_kit import (
    CLAUDE,
    CLAUDE_ID,
    DEMO_CONFIG,
    ENV,
    GPT4O,
    MINI,
    Gateway,
    assert_error_shape,
    body_of,
    client_body,
    client_headers,
    common_of,
    decision_metadata,
    immediate_of,
    passthrough_config,
    removed_headers,
    request_body_msg,
    request_headers_msg,
    set_headers,
)

REPLACE = ext.CommonResponse.CONTINUE_AND_REPLACE
CONTINUE = ext.CommonResponse.CONTINUE

CLAUDE_FIRST = "ranked.anthropic_claude-sonnet-4-20250514+openai_gpt-4o"
GPT4O_FIRST = "ranked.openai_gpt-4o+anthropic_claude-sonnet-4-20250514"
MINI_ALONE = "ranked.openai_gpt-4o-mini+openai_gpt-4o-mini"
CLAUDE_ALONE = "ranked.anthropic_claude-sonnet-4-20250514+anthropic_claude-sonnet-4-20250514"
GPT4O_ALONE = "ranked.openai_gpt-4o+openai_gpt-4o"

OPENAI_AUTH = {":authority": "api.openai.com", "authorization": "Bearer sk-test"}
ANTHROPIC_AUTH = {":authority": "api.anthropic.com", "x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}

API_NAMES = ("openai_chat", "anthropic_messages", "openai_responses")


@pytest.fixture
def gateway() -> Gateway:
    return Gateway()


def decided(flow) -> DecisionMetadata:
    assert flow.metadata is not None, "no decision metadata"
    found = DecisionMetadata.from_metadata(flow.metadata)
    assert found is not None
    return found


# ============================================================================ downstream: decision only

DECISIONS = [
    # (api, text, model field, models, route, source)
    ("openai_chat", "code_generation: a binary search", None, [CLAUDE, GPT4O], "code_generation", "router"),
    ("openai_chat", "complex_reasoning: trains", None, [GPT4O, CLAUDE], "complex_reasoning", "router"),
    ("openai_chat", "what is the capital of France?", "smart-model", [GPT4O], None, "alias"),
    ("anthropic_messages", "code_generation: a parser", None, [CLAUDE, GPT4O], "code_generation", "router"),
    ("anthropic_messages", "hello there", CLAUDE_ID, [CLAUDE], None, "direct"),
    ("openai_responses", "complex_reasoning: proofs", None, [GPT4O, CLAUDE], "complex_reasoning", "router"),
    ("openai_responses", "hello there", None, [MINI], None, "default"),
]


@pytest.mark.parametrize(("api", "text", "model", "models", "route", "source"), DECISIONS)
async def test_decision_only_answers_the_decision_and_nothing_goes_upstream(gateway, api, text, model, models, route, source):
    flow = await gateway.proxy(api, text, routing=True, model=model)
    assert common_of(flow.headers_reply) == ext.CommonResponse()  # headers: continue, untouched
    answer = immediate_of(flow.body_reply)
    assert answer.status == 200 and answer.headers == {"content-type": "application/json"}
    assert set(answer.body) == {"models", "model", "route", "source", "trace_id"}
    assert (answer.body["models"], answer.body["model"], answer.body["route"], answer.body["source"]) == (models, models[0], route, source)
    assert re.fullmatch(r"[0-9a-f]{32}", answer.body["trace_id"])
    assert not flow.body_reply.HasField("dynamic_metadata") and len(gateway.inflight) == 0
    assert gateway.sample("plano_requests_total", endpoint="routing", api_format=api, outcome="ok") == 1


# ============================================================================ downstream: proxy

PROXIED = [
    # (api, text, model field, cluster, attempts, translated attempt 1, any attempt translated, route)
    ("openai_chat", "complex_reasoning: trains", None, GPT4O_FIRST, (GPT4O, CLAUDE), False, True, "complex_reasoning"),
    ("openai_chat", "code_generation: binary search", None, CLAUDE_FIRST, (CLAUDE, GPT4O), True, True, "code_generation"),
    ("openai_chat", "capital of France?", "gpt-4o-mini", MINI_ALONE, (MINI, MINI), False, False, None),
    ("anthropic_messages", "code_generation: a parser", None, CLAUDE_FIRST, (CLAUDE, GPT4O), False, True, "code_generation"),
    ("anthropic_messages", "complex_reasoning: proofs", None, GPT4O_FIRST, (GPT4O, CLAUDE), True, True, "complex_reasoning"),
    ("anthropic_messages", "hello", CLAUDE_ID, CLAUDE_ALONE, (CLAUDE, CLAUDE), False, False, None),
    ("openai_responses", "complex_reasoning: proofs", None, GPT4O_FIRST, (GPT4O, CLAUDE), False, True, "complex_reasoning"),
    ("openai_responses", "code_generation: a lexer", None, CLAUDE_FIRST, (CLAUDE, GPT4O), True, True, "code_generation"),
    ("openai_responses", "hello", "fast-model", MINI_ALONE, (MINI, MINI), False, False, None),
]


@pytest.mark.parametrize(("api", "text", "model", "cluster", "attempts", "first_translated", "translated", "route"), PROXIED)
async def test_proxy_points_envoy_at_the_composite_in_the_body_reply(gateway, api, text, model, cluster, attempts, first_translated, translated, route):
    flow = await gateway.proxy(api, text, model=model)
    reply = flow.body_reply
    assert reply.WhichOneof("response") == "request_body"
    common = common_of(reply)
    # the cluster header and the route-cache clear in one reply (docs/envoy.md), the body replaced whole
    assert common.clear_route_cache and common.status == CONTINUE
    sets = set_headers(reply)
    assert sets[CLUSTER_HEADER] == cluster
    assert sets["x-envoy-max-retries"] == str(len(attempts) - 1)
    assert sets["x-plano-translate"] == ("1" if translated else "0")
    assert sets["x-plano-first"] == ("translate" if first_translated else "ready")
    assert sets.get("x-plano-route") == route
    assert sets["content-length"] == str(len(body_of(reply)))
    source = "router" if route else "alias" if model == "fast-model" else "direct"
    assert decided(flow) == DecisionMetadata(attempts, api, route, None, source)
    assert flow.body_reply.dynamic_metadata.fields["plano"].struct_value.fields["models"].string_value == ",".join(attempts)
    assert gateway.inflight.get(flow.request_id).attempts == attempts


PROVIDER_OF_FIRST = {
    # (api, text, model field) -> (headers attempt 1 sets, path, provider model id)
    ("openai_chat", "complex_reasoning: trains", None): (OPENAI_AUTH, "/v1/chat/completions", "gpt-4o"),
    ("openai_chat", "capital of France?", "gpt-4o-mini"): (OPENAI_AUTH, "/v1/chat/completions", "gpt-4o-mini"),
    ("anthropic_messages", "code_generation: a parser", None): (ANTHROPIC_AUTH, "/v1/messages", CLAUDE_ID),
    ("openai_responses", "complex_reasoning: proofs", None): (OPENAI_AUTH, "/v1/responses", "gpt-4o"),
    ("openai_responses", "hello", "fast-model"): (OPENAI_AUTH, "/v1/responses", "gpt-4o-mini"),
}


@pytest.mark.parametrize(("api", "text", "model"), list(PROVIDER_OF_FIRST))
async def test_a_native_attempt_1_is_prepared_for_its_provider_by_the_downstream_processor(gateway, api, text, model):
    provider_headers, path, model_id = PROVIDER_OF_FIRST[(api, text, model)]
    flow = await gateway.proxy(api, text, model=model, headers={"authorization": "Bearer client-own", "x-api-key": "client-own"})
    sets = set_headers(flow.body_reply)
    assert {k: sets.get(k) for k in provider_headers} == provider_headers
    assert sets[":path"] == path
    # the client's own credentials never reach a provider that does not pass them through
    assert sorted(k for k in ("authorization", "x-api-key") if k not in sets) == sorted(removed_headers(flow.body_reply))
    body = orjson.loads(body_of(flow.body_reply))
    assert body == {**orjson.loads(client_body(api, text, model=model)), "model": model_id}
    assert "client_credentials" not in flow.body_reply.dynamic_metadata.fields["plano"].struct_value.fields


@pytest.mark.parametrize(
    ("api", "text"),
    [
        ("openai_chat", "code_generation: binary search"),
        ("anthropic_messages", "complex_reasoning: proofs"),
        ("openai_responses", "code_generation: a lexer"),
    ],
)
async def test_a_translated_attempt_1_leaves_in_the_clients_api_for_the_per_attempt_processor(gateway, api, text):
    raw = client_body(api, text)
    flow = await gateway.proxy(api, text, headers={"authorization": "Bearer client-own"})
    sets = set_headers(flow.body_reply)
    # no provider facts yet: Host, path, key and body are the per-attempt processor's (x-plano-first)
    assert not {":authority", ":path", "authorization", "x-api-key"} & set(sets)
    assert removed_headers(flow.body_reply) == []
    assert body_of(flow.body_reply) == raw  # the client's bytes, in the client's API
    assert (sets["x-plano-first"], sets["x-plano-translate"], sets["content-length"]) == ("translate", "1", str(len(raw)))
    record = gateway.inflight.get(flow.request_id)
    assert record.forward.raw == raw and record.client_body == orjson.loads(raw)  # kept for attempts and the response


async def test_routing_fields_never_leave_the_gateway(gateway):
    inline = [{"name": "poetry", "description": "writing poems", "models": ["gpt-4o"]}]
    flow = await gateway.proxy("openai_chat", "poetry: a haiku", routing_preferences=inline, temperature=0.2)
    forwarded = orjson.loads(body_of(flow.body_reply))
    assert forwarded == {"model": "gpt-4o", "messages": [{"role": "user", "content": "poetry: a haiku"}], "temperature": 0.2}
    assert set_headers(flow.body_reply)["content-length"] == str(len(body_of(flow.body_reply)))
    legacy = [{"model": "gpt-4o", "routing_preferences": [{"name": "poetry", "description": "writing poems"}]}]
    flow = await gateway.proxy("anthropic_messages", "complex_reasoning: poetry", routing_policy=legacy)
    assert "routing_policy" not in orjson.loads(body_of(flow.body_reply))


INLINE = [
    # (inline models, cluster, attempts): prebuilt lists get their composite; others their first model's
    (["gpt-4o", "vendor/unknown"], GPT4O_ALONE, (GPT4O, GPT4O)),
    (["gpt-4o", "claude-sonnet-4-20250514"], GPT4O_FIRST, (GPT4O, CLAUDE)),
    (["fast-model", "gpt-4o"], MINI_ALONE, (MINI, MINI)),
]


@pytest.mark.parametrize(("models", "cluster", "attempts"), INLINE)
async def test_inline_routes_reach_a_prebuilt_composite(gateway, models, cluster, attempts):
    inline = [{"name": "poetry", "description": "writing poems", "models": models}, {"name": "limericks", "description": "funny verse", "models": ["gpt-4o"]}]
    decision = immediate_of((await gateway.proxy("openai_chat", "poetry please", routing=True, routing_preferences=inline)).body_reply)
    assert decision.body["source"] == "inline" and decision.body["route"] == "poetry"
    assert decision.body["models"][0] == attempts[0]
    flow = await gateway.proxy("openai_chat", "poetry please", routing_preferences=inline)
    assert set_headers(flow.body_reply)[CLUSTER_HEADER] == cluster
    assert decided(flow).attempts == attempts


async def test_inline_route_with_no_servable_model_is_a_400_naming_model(gateway):
    inline = [{"name": "poetry", "description": "writing poems", "models": ["vendor/ghost"]}]
    decision = immediate_of((await gateway.proxy("openai_chat", "poetry", routing=True, routing_preferences=inline)).body_reply)
    assert decision.status == 200 and decision.body["models"] == ["vendor/ghost"]  # the decision reports it as given
    answer = immediate_of((await gateway.proxy("anthropic_messages", "poetry", routing_preferences=inline)).body_reply)
    assert answer.status == 400
    assert "vendor/ghost" in assert_error_shape("anthropic_messages", answer.body, "is served by this gateway")
    assert len(gateway.inflight) == 0


# ----------------------------------------------------------------------------------- affinity


@pytest.mark.parametrize("header", ["x-model-affinity", "x-session-id"])
async def test_an_affinity_id_pins_the_first_decision(gateway, header):
    first = immediate_of((await gateway.proxy("openai_chat", "code_generation: sort", routing=True, headers={header: "s-1"})).body_reply)
    assert (first.body["session_id"], first.body["pinned"], first.body["route"]) == ("s-1", False, "code_generation")
    calls = gateway.router.calls
    # another conversation in the same session: the router is not asked, the pin answers
    again = immediate_of((await gateway.proxy("anthropic_messages", "complex_reasoning", routing=True, headers={header: "s-1"})).body_reply)
    assert (again.body["pinned"], again.body["source"], again.body["models"]) == (True, "affinity", [CLAUDE, GPT4O])
    flow = await gateway.proxy("openai_chat", "complex_reasoning", headers={header: "s-1"})
    assert set_headers(flow.body_reply)[CLUSTER_HEADER] == CLAUDE_FIRST
    assert gateway.router.calls == calls
    other = immediate_of((await gateway.proxy("openai_chat", "complex_reasoning", routing=True, headers={header: "s-2"})).body_reply)
    assert (other.body["pinned"], other.body["route"]) == (False, "complex_reasoning")


async def test_a_session_id_over_256_characters_is_refused_before_routing(gateway):
    flow = await gateway.proxy("anthropic_messages", "hello", headers={"x-model-affinity": "s" * 257})
    answer = immediate_of(flow.headers_reply)  # answered on the headers: Envoy never sends the body
    assert answer.status == 400
    assert_error_shape("anthropic_messages", answer.body, "longer than 256")
    assert gateway.router.calls == 0
    ok = await gateway.proxy("anthropic_messages", "hello", headers={"x-model-affinity": "s" * 256})
    assert ok.body_reply.WhichOneof("response") == "request_body"


# ----------------------------------------------------------------------------------- internal headers


async def test_internal_headers_from_a_client_are_dropped_and_cannot_choose_the_cluster(gateway):
    forged = {
        "x-plano-cluster": "model.openai_gpt-4o",
        "x-plano-first": "ready",
        "x-plano-translate": "0",
        "x-plano-route": "admin",
        "x-plano-anything": "1",
    }
    flow = await gateway.proxy("openai_chat", "code_generation: quicksort", headers=forged)
    common = common_of(flow.headers_reply)
    assert sorted(common.header_mutation.remove_headers) == sorted(forged)
    assert common.clear_route_cache and not common.header_mutation.set_headers
    # the body reply then sets the processor's own values
    sets = set_headers(flow.body_reply)
    assert (sets[CLUSTER_HEADER], sets["x-plano-first"], sets["x-plano-translate"], sets["x-plano-route"]) == (
        CLAUDE_FIRST,
        "translate",
        "1",
        "code_generation",
    )
    assert not any(k.startswith("x-plano-") and k not in sets for k in flow.headers)


async def test_a_client_x_envoy_max_retries_is_overwritten_with_the_lists_budget(gateway):
    flow = await gateway.proxy("openai_chat", "complex_reasoning", headers={"x-envoy-max-retries": "10"})
    assert set_headers(flow.body_reply)["x-envoy-max-retries"] == "1"


# ----------------------------------------------------------------------------------- refused requests

REFUSED = [
    # (path, method, api shape, status, message part)
    ("/v1/embeddings", "POST", "openai_chat", 404, "unknown endpoint /v1/embeddings"),
    ("/v1/messages/count_tokens", "POST", "openai_chat", 404, "unknown endpoint"),
    ("/routing/v1/complete", "POST", "openai_chat", 404, "unknown endpoint"),
    ("/v1/chat/completions", "GET", "openai_chat", 405, "accepts POST only"),
    ("/v1/messages", "PUT", "anthropic_messages", 405, "accepts POST only"),
    ("/routing/v1/responses", "GET", "openai_responses", 405, "accepts POST only"),
]


@pytest.mark.parametrize(("path", "method", "api", "status", "message"), REFUSED)
async def test_unknown_paths_and_methods_are_answered_on_the_headers(gateway, path, method, api, status, message):
    exchange = gateway.downstream()
    reply = await exchange.handle(request_headers_msg(client_headers(path, b"", "r-1", method=method), end_of_stream=method == "GET"))
    answer = immediate_of(reply)
    assert answer.status == status and answer.headers["content-type"] == "application/json"
    assert_error_shape(api, answer.body, message)
    assert reply.immediate_response.details == "plano_extproc"


@pytest.mark.parametrize("api", API_NAMES)
async def test_an_empty_body_is_a_400_in_the_clients_shape(gateway, api):
    headers = client_headers(BY_NAME[api].path, b"", "r-1")
    answer = immediate_of(await gateway.downstream().handle(request_headers_msg(headers, end_of_stream=True)))
    assert answer.status == 400
    assert_error_shape(api, answer.body, "the request body is empty")


async def test_query_strings_do_not_hide_an_endpoint(gateway):
    raw = client_body("openai_chat", "code_generation")
    exchange = gateway.downstream()
    await exchange.handle(request_headers_msg(client_headers("/routing/v1/chat/completions?trace=1", raw, "r-1")))
    assert immediate_of(await exchange.handle(request_body_msg(raw))).body["route"] == "code_generation"


BAD_BODIES = [
    # (body, message part, param)
    (b"{not json", "not valid JSON", None),
    (b"[1, 2]", "must be a JSON object, not an array", None),
    (b"   ", "the request body is empty", None),
    (b'{"model": 5, "messages": [], "input": "x"}', "model must be a string", "model"),
    (b'{"stream": "yes", "messages": [], "input": "x"}', "stream must be a boolean", "stream"),
    (b'{"messages": [], "input": "x", "routing_preferences": []}', "routing_preferences must be a non-empty array", "routing_preferences"),
    (b'{"messages": [], "input": "x", "routing_preferences": [{"name": "a"}]}', "routing_preferences[0].description", "routing_preferences"),
]


@pytest.mark.parametrize("routing", [False, True], ids=["proxy", "decision"])
@pytest.mark.parametrize("api", API_NAMES)
@pytest.mark.parametrize(("raw", "message", "param"), BAD_BODIES)
async def test_bad_bodies_are_a_400_in_the_clients_error_shape(gateway, api, routing, raw, message, param):
    exchange = gateway.downstream()
    path = ("/routing" if routing else "") + BY_NAME[api].path
    await exchange.handle(request_headers_msg(client_headers(path, raw, "r-1")))
    answer = immediate_of(await exchange.handle(request_body_msg(raw)))
    assert answer.status == 400
    assert_error_shape(api, answer.body, message)
    if api != "anthropic_messages":  # Anthropic's errors name no parameter
        assert answer.body["error"]["param"] == param and answer.body["error"]["type"] == "invalid_request_error"
    assert gateway.sample("plano_requests_total", endpoint="routing" if routing else "proxy", api_format=api, outcome="client_error") == 1


@pytest.mark.parametrize(("api", "body", "param"), [("openai_chat", {"model": "x"}, "messages"), ("anthropic_messages", {"messages": {}}, "messages"), ("openai_responses", {"input": 3}, "input")])
async def test_a_wrong_shape_names_the_field(gateway, api, body, param):
    raw = orjson.dumps(body)
    exchange = gateway.downstream()
    await exchange.handle(request_headers_msg(client_headers(BY_NAME[api].path, raw, "r-1")))
    answer = immediate_of(await exchange.handle(request_body_msg(raw)))
    assert answer.status == 400 and param in assert_error_shape(api, answer.body)


# ----------------------------------------------------------------------------------- trace ids

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_the_decision_reports_the_trace_id_of_the_clients_traceparent(gateway):
    answer = immediate_of((await gateway.proxy("openai_chat", "hi", routing=True, headers={"traceparent": PARENT})).body_reply)
    assert answer.body["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    flow = await gateway.proxy("openai_chat", "hi", headers={"traceparent": PARENT})
    assert "traceparent" not in set_headers(flow.body_reply)  # the client's own goes on, untouched
    assert flow.headers["traceparent"] == PARENT


@pytest.mark.parametrize("traceparent", [None, "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"])
async def test_without_a_valid_traceparent_the_provider_gets_a_new_trace(gateway, traceparent):
    headers = {"traceparent": traceparent} if traceparent else {}
    answer = immediate_of((await gateway.proxy("openai_chat", "hi", routing=True, headers=headers)).body_reply)
    assert re.fullmatch(r"[0-9a-f]{32}", answer.body["trace_id"]) and answer.body["trace_id"] != "0" * 32
    flow = await gateway.proxy("openai_chat", "hi", headers=headers)
    sent = set_headers(flow.body_reply)["traceparent"]
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", sent) and sent != traceparent


# ----------------------------------------------------------------------------------- passthrough credentials


async def test_client_credentials_travel_only_when_a_provider_passes_them_through():
    gateway = Gateway(passthrough_config())
    flow = await gateway.proxy("openai_chat", "local_chat: hi", model="gpt-4o", headers={"authorization": "Bearer client-key"})
    sets = set_headers(flow.body_reply)
    assert (sets[":authority"], sets[":path"], sets["authorization"]) == ("127.0.0.1:11434", "/v1/chat/completions", "Bearer client-key")
    assert decided(flow).client_credentials == {"authorization": "Bearer client-key"}
    assert orjson.loads(body_of(flow.body_reply))["model"] == "llama3"
    # the fall-over to the hosted model gets the gateway's key, not the client's
    (reply,) = await flow.attempt(2)
    assert set_headers(reply)["authorization"] == "Bearer sk-test"
    # without client credentials nothing is kept, and the local model gets no key at all
    flow = await gateway.proxy("openai_chat", "local_chat: hi", model="gpt-4o")
    assert decided(flow).client_credentials is None
    assert "authorization" not in set_headers(flow.body_reply)


async def test_the_gateways_key_never_reaches_a_passthrough_provider_on_a_fall_over():
    gateway = Gateway(passthrough_config())
    flow = await gateway.proxy("openai_chat", "hosted_chat: hi", model="gpt-4o")  # no client credentials
    assert set_headers(flow.body_reply)["authorization"] == "Bearer sk-test"
    assert flow.headers["authorization"] == "Bearer sk-test"  # attempt 1's header persists into attempt 2
    (reply,) = await flow.attempt(2)
    assert set_headers(reply)[":authority"] == "127.0.0.1:11434"
    assert "authorization" in removed_headers(reply) and "authorization" not in flow.headers


# ============================================================================ upstream: attempt N

ATTEMPTS = [
    # (api, text, model field, attempt, provider headers it sets, path, headers it removes, body check)
    ("anthropic_messages", "code_generation: a parser", None, 2, OPENAI_AUTH, "/v1/chat/completions", ["anthropic-version", "x-api-key"], "chat"),
    ("openai_chat", "complex_reasoning: trains", None, 2, ANTHROPIC_AUTH, "/v1/messages", ["authorization"], "anthropic"),
    ("openai_chat", "code_generation: binary search", None, 1, ANTHROPIC_AUTH, "/v1/messages", [], "anthropic"),
    ("openai_responses", "code_generation: a lexer", None, 1, ANTHROPIC_AUTH, "/v1/messages", [], "anthropic"),
    ("openai_responses", "complex_reasoning: proofs", None, 2, ANTHROPIC_AUTH, "/v1/messages", ["authorization"], "anthropic"),
    ("anthropic_messages", "complex_reasoning: proofs", None, 1, OPENAI_AUTH, "/v1/chat/completions", [], "chat"),
    ("anthropic_messages", "complex_reasoning: proofs", None, 2, ANTHROPIC_AUTH, "/v1/messages", ["authorization"], "native"),
    ("anthropic_messages", "hello", CLAUDE_ID, 2, ANTHROPIC_AUTH, "/v1/messages", [], "native"),  # same-provider retry
]


def provider_body(kind: str, body: bytes, api: str, text: str, model_field: str | None, model_id: str) -> None:
    parsed = orjson.loads(body)
    assert parsed["model"] == model_id
    if kind == "native":
        assert parsed == {**orjson.loads(client_body(api, text, model=model_field)), "model": model_id}
    elif kind == "anthropic":  # Anthropic Messages
        assert parsed["messages"][-1]["role"] == "user" and isinstance(parsed["max_tokens"], int)
        assert text in orjson.dumps(parsed["messages"]).decode()
    else:  # Chat Completions
        assert parsed["messages"][-1] == {"role": "user", "content": text}


async def _prepare_until(flow, attempt: int) -> None:
    """Envoy's state before `attempt`: earlier attempts that went through the per-attempt processor
    (translated ones, every retry) have left their header mutations."""
    first_ready = flow.headers["x-plano-first"] == "ready"
    for earlier in range(1, attempt):
        if earlier > 1 or not first_ready:
            await flow.attempt(earlier)


ATTEMPT_FIELDS = ("api", "text", "model_field", "attempt", "provider_headers", "path", "removed", "kind")


@pytest.mark.parametrize(ATTEMPT_FIELDS, ATTEMPTS)
async def test_attempt_n_is_prepared_from_the_kept_record_in_the_headers_reply(gateway, api, text, model_field, attempt, provider_headers, path, removed, kind):
    flow = await gateway.proxy(api, text, model=model_field, headers={"authorization": "Bearer client-own"} if attempt == 1 else None)
    await _prepare_until(flow, attempt)
    (reply,) = await flow.attempt(attempt)  # headers only: Envoy sends no body message after it
    common = common_of(reply)
    assert reply.WhichOneof("response") == "request_headers" and common.status == REPLACE
    sets = set_headers(reply)
    assert {k: sets.get(k) for k in provider_headers} == provider_headers and sets[":path"] == path
    expected_removed = removed + (["authorization"] if attempt == 1 and "authorization" not in provider_headers else [])
    assert set(removed_headers(reply)) == set(expected_removed)
    body = common.body_mutation.body
    assert sets["content-length"] == str(len(body))
    model = decided(flow).model_for_attempt(attempt)
    provider_body(kind, body, api, text, model_field, gateway.forwarder.upstreams[model].model_id)
    assert gateway.inflight.get(flow.request_id).tried == attempt and gateway.inflight.get(flow.request_id).model == model


@pytest.mark.parametrize(ATTEMPT_FIELDS, ATTEMPTS)
async def test_without_the_record_the_attempt_is_rewritten_from_the_body_message(gateway, api, text, model_field, attempt, provider_headers, path, removed, kind):
    """Another worker process served the downstream phase: the same attempt, prepared from the body Envoy sends."""
    other = Gateway()
    kept, cold = await gateway.proxy(api, text, model=model_field), await gateway.proxy(api, text, model=model_field)
    await _prepare_until(kept, attempt)
    await _prepare_until(cold, attempt)
    (from_record,) = await kept.attempt(attempt)
    headers_reply, body_reply = await cold.attempt(attempt, gateway=other)
    assert common_of(headers_reply).status == CONTINUE and not common_of(headers_reply).HasField("body_mutation")
    # the same provider request either way; content-length comes with the body
    record_sets = set_headers(from_record)
    assert set_headers(headers_reply) == {k: v for k, v in record_sets.items() if k != "content-length"}
    assert removed_headers(headers_reply) == removed_headers(from_record)
    assert body_of(body_reply) == common_of(from_record).body_mutation.body
    assert set_headers(body_reply) == {"content-length": record_sets["content-length"]}


async def test_the_body_path_reports_a_translation_the_provider_cannot_express():
    """A request the provider API cannot express: 400 in the client's shape, whichever path prepares it."""
    gateway = Gateway()
    bad_image = [{"role": "user", "content": [{"type": "text", "text": "code_generation"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64"}}]}]
    flow = await gateway.proxy("openai_chat", "code_generation", messages=bad_image)
    (reply,) = await flow.attempt(1)
    answer = immediate_of(reply)
    assert answer.status == 400 and answer.body["error"]["param"] == "image_url"
    cold = await gateway.proxy("openai_chat", "code_generation", messages=bad_image)
    _, body_reply = await cold.attempt(1, gateway=Gateway())
    assert immediate_of(body_reply) == answer


FORGED = [
    # metadata_context the per-attempt processor may find, and the attempt header
    (None, "2"),
    ({}, "2"),
    ({"models": "", "api": "openai_chat"}, "2"),
    ({"models": "openai/gpt-4o,openai/gpt-4o"}, "2"),
    ({"models": "openai/gpt-4o,openai/gpt-4o", "api": "soap"}, "2"),
    ({"models": "openai/gpt-4o,openai/gpt-4o", "api": "openai_chat"}, "two"),
    ({"models": "openai/gpt-4o,openai/gpt-4o", "api": "openai_chat"}, "0"),
]


@pytest.mark.parametrize(("fields", "attempt"), FORGED)
async def test_an_attempt_without_a_decision_of_ours_is_refused_with_403(gateway, fields, attempt):
    raw = client_body("openai_chat", "hi")
    headers = {**client_headers("/v1/chat/completions", raw, "r-9"), "x-envoy-attempt-count": attempt}
    metadata = decision_metadata(fields) if fields is not None else None
    answer = immediate_of(await gateway.upstream().handle(request_headers_msg(headers, metadata=metadata)))
    assert answer.status == 403
    assert_error_shape("openai_chat", answer.body, "did not pass the gateway's routing step")
    assert answer.body["error"]["code"] == "permission_denied"


@pytest.mark.parametrize("api", API_NAMES)
async def test_an_attempt_on_a_model_this_config_does_not_serve_is_a_500(gateway, api):
    raw = client_body(api, "hi")
    headers = {**client_headers("/v1/x", raw, "r-9"), "x-envoy-attempt-count": "1"}
    metadata = decision_metadata({"models": "vendor/ghost,vendor/ghost", "api": api, "route": ""})
    answer = immediate_of(await gateway.upstream().handle(request_headers_msg(headers, metadata=metadata)))
    assert answer.status == 500
    assert_error_shape(api, answer.body, "no upstream for the chosen model")


async def test_attempt_n_never_forwards_the_previous_providers_credentials(gateway):
    flow = await gateway.proxy("anthropic_messages", "code_generation: a parser")
    assert flow.headers["x-api-key"] == "sk-ant-test"  # set for attempt 1, still there for attempt 2
    (reply,) = await flow.attempt(2)
    assert "x-api-key" not in flow.headers and "anthropic-version" not in flow.headers
    assert flow.headers["authorization"] == "Bearer sk-test"
    assert "sk-ant-test" not in str(set_headers(reply))


async def test_feature_headers_of_another_provider_api_are_removed(gateway):
    anthropic_features = {"anthropic-beta": "prompt-caching-2024-07-31", "anthropic-version": "2023-06-01"}
    flow = await gateway.proxy("anthropic_messages", "code_generation: a parser", headers=anthropic_features)
    assert "anthropic-beta" not in removed_headers(flow.body_reply)  # Anthropic itself reads it
    (reply,) = await flow.attempt(2)  # GPT-4o, translated
    assert {"anthropic-beta", "anthropic-version"} <= set(removed_headers(reply))
    assert not {"anthropic-beta", "anthropic-version"} & set(flow.headers)
    flow = await gateway.proxy("openai_chat", "code_generation: quicksort", headers={"openai-beta": "assistants=v2"})
    (reply,) = await flow.attempt(1)  # Claude, translated
    assert "openai-beta" in removed_headers(reply) and "openai-beta" not in flow.headers


@pytest.mark.parametrize(
    ("api", "text", "attempt"),
    [
        ("openai_chat", "code_generation: quicksort", 1),  # Claude, translated by the per-attempt processor
        ("anthropic_messages", "code_generation: a parser", 2),  # fall-over to GPT-4o, translated
        ("openai_responses", "code_generation: a lexer", 1),
    ],
)
@pytest.mark.parametrize("record", [True, False], ids=["from-record", "from-body"])
async def test_a_translated_attempt_asks_the_provider_for_an_answer_the_translator_can_read(gateway, api, text, attempt, record):
    """SDK clients send accept-encoding: gzip (httpx does by default); a provider that honours it answers a
    compressed body that the response translator cannot parse, and the client would get a 502."""
    flow = await gateway.proxy(api, text, headers={"accept-encoding": "gzip, deflate, br"})
    await _prepare_until(flow, attempt)
    replies = await flow.attempt(attempt, gateway=None if record else Gateway())
    assert set_headers(replies[0])["accept-encoding"] == "identity"
    assert flow.headers["accept-encoding"] == "identity"


@pytest.mark.parametrize(
    ("responses", "stream", "identity"),
    [("bodies", False, True), ("bodies", True, False), ("headers", False, False), ("off", False, False)],
    ids=["bodies-json", "bodies-stream", "headers", "off"],
)
async def test_a_native_attempt_asks_for_identity_only_when_envoy_reads_the_answer(responses, stream, identity):
    """Its answer reaches the client untouched, compressed as the client allows — except a non-streaming
    answer whose usage json_to_metadata reads (observability.responses: bodies), which cannot read a
    compressed body (docs/envoy.md finding (w)); the streaming observer decodes a compressed stream itself."""
    config = parse_config(DEMO_CONFIG.read_text() + f"\nobservability:\n  responses: {responses}\n", ENV)
    flow = await Gateway(config).proxy("openai_chat", "complex_reasoning", headers={"accept-encoding": "gzip"}, stream=stream or None)
    assert "accept-encoding" not in removed_headers(flow.body_reply)
    assert flow.headers["accept-encoding"] == ("identity" if identity else "gzip")
    assert flow.headers.get("x-plano-observe") == (("1" if stream else "0") if responses == "bodies" else None)
    assert decided(flow).stream is stream


def _attempt_body(replies) -> bytes:
    """The body an attempt sends: the headers reply's replacement, or the body message's rewrite."""
    if common_of(replies[0]).status == REPLACE:
        return common_of(replies[0]).body_mutation.body
    return body_of(replies[1])


async def test_two_requests_in_flight_with_one_x_request_id_never_trade_bodies(gateway):
    """Envoy keeps a client's own x-request-id (the rendered listener does not regenerate it), so two
    requests may share one. Each attempt must still carry its own request's conversation."""
    alice = await gateway.proxy("openai_chat", "complex_reasoning: alice's private question", headers={"x-request-id": "same-id"})
    bob = await gateway.proxy("openai_chat", "complex_reasoning: bob's question", headers={"x-request-id": "same-id"})
    for flow, mine, theirs in ((alice, b"alice", b"bob"), (bob, b"bob", b"alice")):
        body = _attempt_body(await flow.attempt(2))  # Claude, translated
        assert mine in body and theirs not in body


async def test_two_requests_with_one_x_request_id_never_trade_credentials():
    gateway = Gateway(passthrough_config())
    alice = await gateway.proxy("openai_chat", "hosted_chat: hi", model="gpt-4o", headers={"x-request-id": "same-id", "authorization": "Bearer alice-key"})
    await gateway.proxy("openai_chat", "hosted_chat: hi", model="gpt-4o", headers={"x-request-id": "same-id", "authorization": "Bearer bob-key"})
    replies = await alice.attempt(2)  # the passthrough provider gets the client's own key: Alice's
    assert set_headers(replies[0])["authorization"] == "Bearer alice-key"


async def test_requests_of_one_kind_share_a_built_reply_yet_each_gets_its_own_headers_body_and_key():
    gateway = Gateway(passthrough_config())
    # one kind (API, model, route): with and without a header its provider must not get
    with_beta = await gateway.proxy("openai_chat", "hosted_chat: hi", model="gpt-4o", headers={"anthropic-beta": "tools"})
    plain = await gateway.proxy("openai_chat", "hosted_chat: a longer question", model="gpt-4o")
    assert "anthropic-beta" in removed_headers(with_beta.body_reply) and "anthropic-beta" not in removed_headers(plain.body_reply)
    for flow in (with_beta, plain):
        assert set_headers(flow.body_reply)["content-length"] == str(len(body_of(flow.body_reply)))
    assert set_headers(with_beta.body_reply)["traceparent"] != set_headers(plain.body_reply)["traceparent"]
    # a passthrough model: each client's own key, and no built reply keeps one
    alice = await gateway.proxy("openai_chat", "local_chat: hi", model="gpt-4o", headers={"authorization": "Bearer alice-key"})
    bob = await gateway.proxy("openai_chat", "local_chat: hi", model="gpt-4o", headers={"authorization": "Bearer bob-key"})
    assert set_headers(alice.body_reply)["authorization"] == "Bearer alice-key"
    assert set_headers(bob.body_reply)["authorization"] == "Bearer bob-key"
    anonymous = await gateway.proxy("openai_chat", "local_chat: hi", model="gpt-4o")
    assert "authorization" not in set_headers(anonymous.body_reply)
    built = b"".join(shape.mutation.SerializeToString() + shape.metadata.SerializeToString() for shape in gateway._downstream.shapes._built.values())
    assert built and b"alice-key" not in built and b"bob-key" not in built


def test_prebuilt_header_options_never_keep_a_credential_and_replies_stay_independent():
    from plano_extproc.extproc import messages

    first = messages.header_mutation([("authorization", "Bearer sk-client-secret"), ("x-api-key", "k"), ("x-plano-translate", "0")])
    assert [o.header.raw_value for o in first.set_headers] == [b"Bearer sk-client-secret", b"k", b"0"]
    kept = {key for key, _ in messages._OPTIONS}
    assert "authorization" not in kept and "x-api-key" not in kept and "x-plano-translate" in kept
    # changing one reply's header (as a later step may) leaves the next reply as built
    first.set_headers[2].header.raw_value = b"1"
    assert messages.header_mutation([("x-plano-translate", "0")]).set_headers[0].header.raw_value == b"0"
