"""plano compatibility of the config and of requests, without Envoy: selection policies and their metrics
sources, plano's tracing block, listener retries, versions, model names (ambiguous ids, vendor/* wildcards,
unknown models), Azure's api-version and passthrough credentials. The same behaviour through the real Envoy
is in test_compat_gateway.py."""

from __future__ import annotations

import asyncio
import math
import textwrap

import orjson
import pytest

from plano_extproc.apis import OPENAI_CHAT, RequestFormatError
from plano_extproc.config import ConfigError, parse_config
from plano_extproc.contract import prebuilt_attempt_lists
from plano_extproc.decision import DecisionSource, RouterOutcome, check_request, decide_route
from plano_extproc.engine import DecisionEngine
from plano_extproc.forwarding import Forwarder, ForwardRequest
from plano_extproc.model_metrics import LiveLatency, ModelMetrics, parse_catalog, parse_prometheus
from plano_extproc.ranking import MetricsSnapshot, rank
from plano_extproc.router.chain import RouterChain
from tests.conftest import DEMO_ENV
from tests.test_config import BASE
from tests.test_decision import ScriptedRouter

CLAUDE, GPT4O, MINI = "anthropic/claude-sonnet-4-20250514", "openai/gpt-4o", "openai/gpt-4o-mini"


def config(extra: str = "", base: str = BASE, env: dict | None = None):
    return parse_config(textwrap.dedent(base) + textwrap.dedent(extra), DEMO_ENV if env is None else env)


def errors_of(extra: str = "", base: str = BASE, env: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(extra, base, env)
    return info.value.errors


def chat(text: str = "hi", model: str | None = None, **extra) -> object:
    body = {"messages": [{"role": "user", "content": text}], **extra}
    if model is not None:
        body["model"] = model
    return OPENAI_CHAT.parse(orjson.dumps(body))


STATIC_COST = """
model_metrics_sources:
  - type: cost
    provider: static
    prices:
      gpt-4o: {input_per_million: 2.5, output_per_million: 10}
      openai/gpt-4o-mini: {input_per_million: 0.15, output_per_million: 0.6}
"""
ROUTES = """
routing_preferences:
  - name: code
    description: writing code
    models: [anthropic/claude-sonnet-4-20250514, openai/gpt-4o, openai/gpt-4o-mini]
    selection_policy: {prefer: cheapest}
"""

# ============================================================================ ranking (pure)


def test_rank_orders_by_ascending_value_and_puts_models_without_data_last_in_route_order():
    snap = MetricsSnapshot(cost={"b": 0.5, "c": 0.1, "x": math.nan}, latency={"a": 2.0, "b": 1.0})
    assert rank(("a", "b", "c", "x"), "cheapest", snap) == ("c", "b", "a", "x")
    assert rank(("a", "b", "c"), "fastest", snap) == ("b", "a", "c")
    assert rank(("a", "b", "c"), "none", snap) == ("a", "b", "c")
    assert rank(("a", "b"), "cheapest", MetricsSnapshot()) == ("a", "b")  # no data: the route's order
    tie = MetricsSnapshot(cost={"a": 1.0, "b": 1.0})
    assert rank(("b", "a"), "cheapest", tie) == ("b", "a")  # ties keep the route's order


def test_a_configured_policy_ranks_the_matched_route_with_the_snapshot():
    cfg = config(STATIC_COST + ROUTES)
    request = chat("write code")
    engine = DecisionEngine(cfg, RouterChain(ScriptedRouter("stub", answer="code"), 5.0))
    # the static table is in force from the start; claude has no price: last
    assert engine.model_metrics.snapshot.cost == {GPT4O: 12.5, MINI: 0.75}
    decision = asyncio.run(engine.route(request)).decision
    assert decision.models == (MINI, GPT4O, CLAUDE) and decision.route == "code" and decision.source is DecisionSource.ROUTER
    # the decision is a pure function of the route's models and the snapshot it is given
    faster = MetricsSnapshot(cost={CLAUDE: 0.01})
    assert decide_route(cfg, request, RouterOutcome("code", "stub"), snapshot=faster).models == (CLAUDE, GPT4O, MINI)


def test_inline_selection_policy_ranks_and_needs_a_source_of_the_gateway():
    cfg = config(STATIC_COST)
    inline = [{"name": "general", "description": "questions", "models": ["openai/gpt-4o", "openai/gpt-4o-mini"], "selection_policy": {"prefer": "cheapest"}}]
    request = chat("hi", routing_preferences=inline)
    assert request.preferences[0].prefer == "cheapest"
    d = decide_route(cfg, request, RouterOutcome("general", "stub"), snapshot=ModelMetrics(cfg).snapshot)
    assert d.models == (MINI, GPT4O) and d.source is DecisionSource.INLINE
    fastest = chat("hi", routing_preferences=[{**inline[0], "selection_policy": {"prefer": "fastest"}}])
    with pytest.raises(RequestFormatError, match=r"routing_preferences\[0\].selection_policy.prefer: fastest needs a latency source"):
        check_request(cfg, fastest)
    with pytest.raises(RequestFormatError, match="not supported by plano-extproc"):
        chat("hi", routing_preferences=[{**inline[0], "selection_policy": {"prefer": "random"}}])
    with pytest.raises(RequestFormatError, match="unknown field"):
        chat("hi", routing_preferences=[{**inline[0], "selection_policy": {"prefer": "none", "weight": 1}}])


def test_ranked_routes_get_a_composite_for_every_order_and_long_ones_one_per_first_model():
    cfg = config(STATIC_COST + ROUTES)
    lists = prebuilt_attempt_lists(cfg)
    assert sum(1 for a in lists if len(a) == 3) == 6  # 3! orders of the ranked route
    forwarder = Forwarder.from_config(cfg, lists)
    plan = forwarder.plan(OPENAI_CHAT, (MINI, CLAUDE, GPT4O))
    assert plan is not None and plan.attempts == (MINI, CLAUDE, GPT4O)
    five = BASE + """
  - model: mistral/mistral-large-latest
    access_key: k
  - model: groq/llama-3.3-70b-versatile
    access_key: k
model_metrics_sources: [{type: latency, provider: gateway}]
routing_preferences:
  - name: many
    description: everything
    models: [openai/gpt-4o-mini, openai/gpt-4o, anthropic/claude-sonnet-4-20250514, mistral/mistral-large-latest, groq/llama-3.3-70b-versatile]
    selection_policy: {prefer: fastest}
"""
    big = config(base=five)
    lists = prebuilt_attempt_lists(big)
    assert sum(1 for a in lists if len(a) == 5) == 5
    forwarder = Forwarder.from_config(big, lists)
    ranked = ("groq/llama-3.3-70b-versatile", CLAUDE, MINI, "mistral/mistral-large-latest", GPT4O)
    plan = forwarder.plan(OPENAI_CHAT, ranked)
    # the fastest model first; then the route's order (no composite for every one of 120 orders)
    assert plan is not None and plan.attempts == ("groq/llama-3.3-70b-versatile", MINI, GPT4O, CLAUDE, "mistral/mistral-large-latest")


# ============================================================================ metrics sources


def test_metrics_sources_are_checked_with_their_paths():
    assert errors_of(ROUTES) == [
        "routing_preferences[0].selection_policy.prefer: cheapest needs a cost source: add {type: cost, ...} to model_metrics_sources"
    ]
    fastest = ROUTES.replace("cheapest", "fastest")
    assert errors_of(STATIC_COST + fastest)[0].startswith("routing_preferences[0].selection_policy.prefer: fastest needs a latency source")
    two = "model_metrics_sources:\n  - {type: latency, provider: gateway}\n  - {type: latency, provider: prometheus, url: 'http://p:9090', query: up}\n"
    assert errors_of(two) == ["model_metrics_sources[1]: only one latency metrics source is allowed"]
    assert errors_of("model_metrics_sources:\n  - {type: latency, provider: prometheus, url: 'http://p:9090'}\n") == [
        "model_metrics_sources[0]: query: required for provider: prometheus"
    ]
    assert errors_of("model_metrics_sources:\n  - {type: cost, provider: static, prices: {gpt-4o: {input_per_million: 1, output_per_million: 2}}, url: 'http://x'}\n") == [
        "model_metrics_sources[0]: url: only for a fetched catalog (provider: digitalocean); a static table has only prices"
    ]
    assert errors_of("model_metrics_sources:\n  - {type: quality, provider: x}\n") == ["model_metrics_sources[0].type: must be cost or latency"]
    assert errors_of("model_metrics_sources:\n  - {type: cost, provider: models.dev}\n")[0].startswith("model_metrics_sources[0].provider")
    assert errors_of("model_metrics_sources:\n  - {type: latency, provider: gateway, query: up}\n") == [
        "model_metrics_sources[0]: query: only for provider: prometheus (the gateway measures its own answers)"
    ]
    assert errors_of(ROUTES.replace("cheapest", "long_context_quality"))[0].startswith(
        "routing_preferences[0].selection_policy.prefer: 'long_context_quality' is not supported by plano-extproc"
    )
    catalog = config("model_metrics_sources:\n  - {type: cost, provider: digitalocean, refresh_interval: 60, access_key: $DO_TOKEN}\n", env={**DEMO_ENV, "DO_TOKEN": "t"})
    assert catalog.cost_source.catalog_url == "https://api.digitalocean.com/v2/gen-ai/models/catalog"
    assert catalog.cost_source.access_key.get_secret_value() == "t"


def test_catalog_and_prometheus_answers_are_read_as_plano_reads_them():
    document = {"data": [
        {"model_id": "openai-gpt-4o", "pricing": {"input_price_per_million": 2.5, "output_price_per_million": 10}},
        {"model_id": "anthropic-claude-sonnet-4", "pricing": {"input_price_per_million": 3}},
        {"model_id": "no-pricing"},
        {"model_id": "bad", "pricing": {"input_price_per_million": "x"}},
    ]}
    assert parse_catalog(document, {"openai-gpt-4o": "openai/gpt-4o"}) == {"openai/gpt-4o": 12.5, "anthropic-claude-sonnet-4": 3.0}
    with pytest.raises(ValueError):
        parse_catalog({"models": []}, {})
    answer = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"model_name": "openai/gpt-4o"}, "value": [1, "0.25"]},
        {"metric": {"model": "openai/gpt-4o-mini"}, "value": [1, "0.5"]},
        {"metric": {}, "value": [1, "9"]},
        {"metric": {"model": "x"}, "value": [1, "NaN"]},
    ]}}
    values = parse_prometheus(answer)
    assert values["openai/gpt-4o"] == 0.25 and values["openai/gpt-4o-mini"] == 0.5 and math.isnan(values["x"])
    with pytest.raises(ValueError):
        parse_prometheus({"status": "error", "error": "bad query"})


def test_live_latency_is_the_median_of_recent_answers():
    now = [100.0]
    live = LiveLatency(samples=3, clock=lambda: now[0])
    for seconds in (5.0, 1.0, 2.0, 3.0):
        live.add("m", "time_to_first_token", seconds)
    assert live.medians("time_to_first_token", 60) == {"m": 2.0}  # the latest three: 1, 2, 3
    now[0] += 120
    assert live.medians("time_to_first_token", 60) == {}  # all older than the window
    assert live.medians("total", 60) == {}


# ============================================================================ plano's config keys


def test_plano_tracing_block_maps_onto_ours():
    cfg = config("""
tracing:
  random_sampling: 25
  trace_arch_internal: false
  opentracing_grpc_endpoint: http://${COLLECTOR}:4317
  span_attributes:
    header_prefixes: [X-User-]
    static: {environment: production}
""", env={**DEMO_ENV, "COLLECTOR": "otel"})
    t = cfg.tracing
    assert (t.sampling_ratio, t.envoy_otlp_grpc, t.opentracing_grpc_endpoint) == (0.25, "otel:4317", "http://otel:4317")
    assert t.enabled and not t.router_spans and t.span_attributes.header_prefixes == ("x-user-",)
    # plano's default collector once any of its tracing keys is present
    default = config("tracing:\n  random_sampling: 100\n")
    assert default.tracing.envoy_otlp_grpc == "localhost:4317" and default.tracing.sampling_ratio == 1.0
    env_default = config("tracing:\n  random_sampling: 100\n", env={**DEMO_ENV, "OTEL_TRACING_GRPC_ENDPOINT": "http://jaeger:4317"})
    assert env_default.tracing.envoy_otlp_grpc == "jaeger:4317"
    assert not config().tracing.enabled  # no tracing block: nothing exported
    assert errors_of("tracing:\n  opentracing_grpc_endpoint: https://otel:4317/v1\n") == [
        "tracing.opentracing_grpc_endpoint: 'https://otel:4317/v1' must be http://host:port (plano's rule: scheme http, no path)"
    ]
    assert errors_of("tracing:\n  random_sampling: 50\n  sampling_ratio: 0.1\n")[0].startswith("tracing.random_sampling: 50 % disagrees")
    assert errors_of("tracing:\n  exporters: [{type: posthog, url: x, api_key: k}]\n")[0].startswith("tracing: exporters is not supported")


def test_tracer_names_header_attributes_as_plano_does():
    from plano_extproc.tracing import Tracer

    cfg = config("tracing:\n  span_attributes: {header_prefixes: [x-user-, x-org-]}\n")
    tracer = Tracer(cfg.tracing)
    try:
        assert tracer.header_attributes({"x-user-id": " 42 ", "x-org-team-name": "a", "x-user-": "none", "authorization": "k"}) == {
            "id": "42",
            "team.name": "a",
        }
    finally:
        tracer.shutdown()


def test_versions_listener_retries_and_routing_keys():
    for version in ("v0.1", "v0.1.0", "0.1-beta", "0.2.0", "v0.3.0", "v0.4.0"):
        assert config(base=BASE.replace("v0.4.0", version)).version == version
    assert errors_of(base=BASE.replace("version: v0.4.0\n", "")) == [
        "version: missing; say which plano config format this file is (version: v0.4.0)"
    ]
    assert config("listeners:\n  - {name: llm, type: model, port: 12000, max_retries: 0}\n").listener.max_retries == 0
    assert errors_of("listeners:\n  - {name: llm, type: model, max_retries: -1}\n")[0].startswith("listeners[0].max_retries")
    assert config("routing:\n  route_on_user_only: false\n").routing.route_on_user_only is False
    assert errors_of("routing:\n  route_on_user_only: true\n")[0].startswith("routing.route_on_user_only: true (turn-level pinning) is not supported")
    assert errors_of("agents:\n  - {id: a, url: 'http://a'}\n") == ["agents: not supported by plano-extproc (agent orchestration is not part of this gateway)"]
    assert errors_of("mode: prompt\n")[0].startswith("mode: 'prompt' (prompt targets) is not supported")
    assert config("mode: llm\n").version == "v0.4.0"


def test_llm_routing_model_routes_with_the_declared_model():
    cfg = config(base=BASE + """  - model: arch/Arch-Router
    base_url: http://127.0.0.1:11434/v1
overrides:
  llm_routing_model: Arch-Router
""")
    router = cfg.routing.router
    assert (router.backend, router.url, router.model) == ("openai", "http://127.0.0.1:11434/v1", "Arch-Router")
    assert "plano's hosted router" in errors_of("overrides:\n  llm_routing_model: Plano-Orchestrator\n")[0]


# ============================================================================ model names


def test_ambiguous_bare_model_ids_are_a_config_error():
    assert errors_of(base=BASE + "  - model: mistral/gpt-4o\n    access_key: k\n") == [
        "model_providers[3].model: model id 'gpt-4o' is also declared by openai/gpt-4o (model_providers[1]); "
        "a request for 'gpt-4o' would be ambiguous (plano rejects duplicate model ids)"
    ]
    named = errors_of(base=BASE + "  - model: groq/llama\n    name: gpt-4o\n    access_key: k\n")
    assert named[0].startswith("model_providers[3].name: name 'gpt-4o' is also declared by openai/gpt-4o")


WILDCARDS = """
version: v0.3.0
listeners:
  - {type: model, name: llms, port: 12000}
model_providers:
  - model: openai/*
    access_key: $OPENAI_API_KEY
  - model: anthropic/*
    access_key: $ANTHROPIC_API_KEY
  - model: anthropic/claude-sonnet-4-20250514
    access_key: $ANTHROPIC_API_KEY
"""


def test_wildcard_entries_serve_any_model_of_their_vendor():
    cfg = config(base=WILDCARDS)
    assert cfg.default_model == CLAUDE  # a wildcard is never the default
    assert cfg.resolve_model("openai/gpt-5") == "openai/gpt-5" and cfg.entry_of("openai/gpt-5") == "openai/*"
    assert cfg.resolve_model("claude-sonnet-4-20250514") == CLAUDE and cfg.entry_of(CLAUDE) == CLAUDE
    assert cfg.resolve_model("gpt-5") is None and cfg.resolve_model("mistral/large") is None
    with pytest.raises(RequestFormatError, match=r"name its provider to use a wildcard entry \(anthropic/\*, openai/\*\)"):
        check_request(cfg, chat(model="gpt-5"))
    forwarder = Forwarder.from_config(cfg, prebuilt_attempt_lists(cfg))
    plan = forwarder.plan(OPENAI_CHAT, ("openai/gpt-5",))
    assert plan is not None and plan.cluster == "ranked.openai__+openai__" and plan.attempts == ("openai/gpt-5", "openai/gpt-5")
    request = ForwardRequest(OPENAI_CHAT, b'{"model":"openai/gpt-5","messages":[]}', (), plan.attempts)
    prepared = forwarder.prepare(request, "openai/gpt-5", frozenset())
    assert orjson.loads(prepared.body)["model"] == "gpt-5"  # the requested id passed through
    assert dict(prepared.set_headers)["authorization"] == "Bearer " + DEMO_ENV["OPENAI_API_KEY"]
    assert errors_of(base=WILDCARDS.replace("  - model: openai/*\n", "  - model: openai/*\n    default: true\n"))[0].startswith(
        "model_providers[0].default"
    )


def test_unknown_model_is_refused_where_it_would_decide_and_no_model_gets_the_default(demo_config):
    import dataclasses

    no_routes = dataclasses.replace(demo_config, routing_preferences=())
    with pytest.raises(RequestFormatError) as info:
        check_request(no_routes, chat(model="gpt-9"))  # nothing to route: refused before any routing
    assert info.value.status == 400 and info.value.param == "model"
    assert "model 'gpt-9' is not served by this gateway" in info.value.message
    check_request(no_routes, chat(model="gpt-9"), decision_only=True)  # the decision endpoint reports the default
    assert decide_route(no_routes, chat(model="gpt-9"), None).source is DecisionSource.DEFAULT
    check_request(demo_config, chat())  # no model: fine, the default decides
    assert decide_route(demo_config, chat(), None).models == (MINI,)

    router = ScriptedRouter("stub", answer="code_generation")
    engine = DecisionEngine(demo_config, RouterChain(router, 5.0))
    # a chosen route does not read the model (clients send placeholders such as "auto")
    routed = asyncio.run(engine.route(chat("write code", model="auto")))
    assert routed.decision.route == "code_generation" and routed.decision.source is DecisionSource.ROUTER
    # no route: the proxy path refuses the unknown model, the decision endpoint reports the default
    router.answer = None
    with pytest.raises(RequestFormatError, match="model 'auto' is not served"):
        asyncio.run(engine.route(chat("hello there", model="auto")))
    decided = asyncio.run(engine.route(chat("hello there", model="auto"), decision_only=True))
    assert decided.decision.route is None and decided.decision.models == (MINI,) and decided.decision.source is DecisionSource.DEFAULT
    inline = [{"name": "coding", "description": "code generation", "models": ["model-coding"]}]
    decided = asyncio.run(engine.route(chat("hello there", model="default-model", routing_preferences=inline), decision_only=True))
    assert decided.decision.route is None and decided.decision.source is DecisionSource.DEFAULT


# ============================================================================ providers


def test_azure_calls_carry_plano_api_version_unless_base_url_names_one():
    azure = BASE + "  - model: azure_openai/my-deployment\n    base_url: https://res.openai.azure.com\n    access_key: k\n"
    cfg = config(base=azure)
    forwarder = Forwarder.from_config(cfg, prebuilt_attempt_lists(cfg))
    upstream = forwarder.upstream("azure_openai/my-deployment")
    assert upstream.paths["openai_chat"] == "/openai/deployments/my-deployment/chat/completions?api-version=2025-01-01-preview"
    own = config(base=azure.replace("https://res.openai.azure.com", "https://res.openai.azure.com?api-version=2024-10-21"))
    upstream = Forwarder.from_config(own, []).upstream("azure_openai/my-deployment")
    assert upstream.paths["openai_chat"].endswith("?api-version=2024-10-21")


PASSTHROUGH = """
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    base_url: http://127.0.0.1:4000
    passthrough_auth: true
    headers: {x-team: blue}
  - model: anthropic/claude-sonnet-4-20250514
    passthrough_auth: true
"""


@pytest.mark.parametrize(
    ("client", "model", "expected"),
    [
        ({"x-api-key": "sk-client"}, GPT4O, {"authorization": "Bearer sk-client", "x-team": "blue"}),
        ({"authorization": "Bearer sk-client"}, GPT4O, {"authorization": "Bearer sk-client", "x-team": "blue"}),
        ({"authorization": "Bearer sk-client"}, CLAUDE, {"x-api-key": "sk-client", "anthropic-version": "2023-06-01"}),
        ({"x-api-key": "sk-client"}, CLAUDE, {"x-api-key": "sk-client", "anthropic-version": "2023-06-01"}),
    ],
)
def test_passthrough_normalises_the_clients_key_to_the_providers_auth(client, model, expected):
    cfg = config(base=PASSTHROUGH)
    forwarder = Forwarder.from_config(cfg, prebuilt_attempt_lists(cfg))
    request = ForwardRequest(OPENAI_CHAT, b"{}", (), (model,), client)
    sets, remove = forwarder.attempt_headers(request, model, frozenset(client))
    got = {k: v for k, v in sets if not k.startswith(":")}
    assert got == {**expected, **({"accept-encoding": "identity"} if model == CLAUDE else {})}
    # the client's own header, when it is not the provider's, never reaches the provider
    assert all(h in remove for h in set(client) - set(got))


def test_passthrough_never_sends_the_configured_key():
    cfg = config(base=PASSTHROUGH.replace("    passthrough_auth: true\n    headers", "    passthrough_auth: true\n    access_key: sk-gateway\n    headers"))
    assert any("access_key is never used" in w for w in cfg.warnings)
    forwarder = Forwarder.from_config(cfg, [])
    sets, _ = forwarder.attempt_headers(ForwardRequest(OPENAI_CHAT, b"{}", (), (GPT4O,), None), GPT4O, frozenset())
    assert "authorization" not in dict(sets)


def test_base_url_takes_variables_from_the_environment():
    base = BASE + "  - model: ollama/llama3\n    base_url: http://127.0.0.1:${OLLAMA_PORT}/v1\n"
    cfg = config(base=base, env={**DEMO_ENV, "OLLAMA_PORT": "11434"})
    assert cfg.by_model["ollama/llama3"].base_url == "http://127.0.0.1:11434/v1"
    assert errors_of(base=base) == ["model_providers[3].base_url: environment variable $OLLAMA_PORT is not set"]
    assert errors_of(base=base, env={**DEMO_ENV, "OLLAMA_PORT": "x"}) == ["model_providers[3].base_url: 'http://127.0.0.1:x/v1' has no valid port"]
