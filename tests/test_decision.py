"""Decision rules, the affinity cache, and the router failure policy."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from plano_extproc.affinity import AffinityCache
from plano_extproc.apis import OPENAI_CHAT
from plano_extproc.decision import DecisionSource, RouterOutcome, decide_route, decision_payload
from plano_extproc.engine import DecisionEngine
from plano_extproc.router.base import RouterBackend, RouterError
from plano_extproc.router.chain import RouterChain


def chat(text: str, model: str | None = None, **extra) -> object:
    body = {"messages": [{"role": "user", "content": text}], **extra}
    if model is not None:
        body["model"] = model
    return OPENAI_CHAT.parse(orjson.dumps(body))


class ScriptedRouter(RouterBackend):
    """A router whose answer the test sets; counts calls so tests can see when it was skipped."""

    def __init__(self, name: str, answer=None, error: str | None = None, delay: float = 0.0):
        self.name, self.answer, self.error, self.delay, self.calls = name, answer, error, delay, 0

    async def choose_route(self, routes, conversation):
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error:
            raise RouterError(self.error, "scripted failure")
        return self.answer


def test_matched_configured_route_yields_its_models(demo_config):
    d = decide_route(demo_config, chat("code please"), RouterOutcome("code_generation", "embedded"))
    assert d.models == ("anthropic/claude-sonnet-4-20250514", "openai/gpt-4o") and d.route == "code_generation"
    assert d.source is DecisionSource.ROUTER and d.model == d.models[0]


def test_no_match_uses_requested_model_then_alias_then_default(demo_config):
    none = RouterOutcome(None, "embedded")
    assert decide_route(demo_config, chat("hi", "gpt-4o"), none).models == ("openai/gpt-4o",)
    assert decide_route(demo_config, chat("hi", "gpt-4o"), none).source is DecisionSource.DIRECT
    alias = decide_route(demo_config, chat("hi", "smart-model"), none)
    assert (alias.models, alias.source) == (("openai/gpt-4o",), DecisionSource.ALIAS)
    nothing = decide_route(demo_config, chat("hi"), none)
    assert (nothing.models, nothing.source) == (("openai/gpt-4o-mini",), DecisionSource.DEFAULT)
    missing = decide_route(demo_config, chat("hi"), none)
    assert (missing.models, missing.route) == (("openai/gpt-4o-mini",), None)


def test_inline_preferences_replace_configured_routes(demo_config):
    req = chat("x", routing_preferences=[{"name": "poetry", "description": "poems", "models": ["gpt-4o", "vendor/unknown"]}])
    d = decide_route(demo_config, req, RouterOutcome("poetry", "embedded"))
    assert d.models == ("openai/gpt-4o", "vendor/unknown") and d.source is DecisionSource.INLINE
    # a configured route name is not valid when inline routes replace them
    d = decide_route(demo_config, req, RouterOutcome("code_generation", "embedded"))
    assert d.route is None and d.models == ("openai/gpt-4o-mini",)


def test_router_failure_is_marked_fallback(demo_config):
    d = decide_route(demo_config, chat("x", "gpt-4o"), RouterOutcome(None, None, failed=True, error_kind="timeout"))
    assert (d.models, d.source) == (("openai/gpt-4o",), DecisionSource.FALLBACK)


def test_payload_shape(demo_config):
    d = decide_route(demo_config, chat("x"), RouterOutcome("complex_reasoning", "embedded"))
    payload = decision_payload(d, "a" * 32, "sess-1")
    assert payload == {
        "models": ["openai/gpt-4o", "anthropic/claude-sonnet-4-20250514"],
        "model": "openai/gpt-4o",
        "route": "complex_reasoning",
        "source": "router",
        "trace_id": "a" * 32,
        "session_id": "sess-1",
        "pinned": False,
    }
    assert "session_id" not in decision_payload(d, "b" * 32)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_affinity_ttl_from_insertion_and_lru_bound():
    clock = FakeClock()
    cache = AffinityCache(ttl_seconds=10, max_entries=2, clock=clock)
    cache.put("a", ("m1",), "r")
    clock.now += 9
    assert cache.get("a").models == ("m1",)  # a hit does not extend the TTL
    clock.now += 1
    assert cache.get("a") is None
    cache.put("a", ("m1",), None)
    cache.put("b", ("m2",), None)
    cache.get("a")  # a is now most recently used
    cache.put("c", ("m3",), None)
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2
    assert cache.stats.evictions == 1 and cache.stats.expirations == 1


async def test_engine_pins_a_session_and_skips_the_router(demo_config):
    router = ScriptedRouter("scripted", answer="code_generation")
    engine = DecisionEngine(demo_config, RouterChain(router, timeout_s=1))
    first = await engine.route(chat("write code"), session_id="s1")
    router.answer = "complex_reasoning"
    second = await engine.route(chat("now explain quantum physics"), session_id="s1")
    other = await engine.route(chat("now explain quantum physics"), session_id="s2")
    assert first.decision.route == "code_generation" and not first.decision.pinned
    assert second.decision.route == "code_generation" and second.decision.pinned
    assert second.decision.source is DecisionSource.AFFINITY
    assert other.decision.route == "complex_reasoning"
    assert router.calls == 2


async def test_engine_does_not_call_the_router_without_routes(demo_config):
    import dataclasses

    config = dataclasses.replace(demo_config, routing_preferences=())
    router = ScriptedRouter("scripted", answer="code_generation")
    engine = DecisionEngine(config, RouterChain(router, timeout_s=1))
    routed = await engine.route(chat("write code", "fast-model"))
    assert routed.decision.models == ("openai/gpt-4o-mini",) and routed.decision.source is DecisionSource.ALIAS
    assert router.calls == 0


@pytest.mark.parametrize("primary", [ScriptedRouter("slow", answer="code_generation", delay=5), ScriptedRouter("broken", error="error")])
async def test_failing_router_falls_back_to_the_fallback_router(demo_config, primary):
    fallback = ScriptedRouter("embedded", answer="complex_reasoning")
    chain = RouterChain(primary, timeout_s=0.05, fallback=fallback)
    routed = await DecisionEngine(demo_config, chain).route(chat("why?"))
    assert routed.decision.route == "complex_reasoning"
    assert routed.decision.source is DecisionSource.FALLBACK and routed.decision.router_backend == "embedded"
    assert sum(chain.failures.values()) == 1


async def test_failing_router_without_fallback_uses_the_request_model(demo_config):
    chain = RouterChain(ScriptedRouter("broken", error="bad_reply"), timeout_s=0.05)
    routed = await DecisionEngine(demo_config, chain).route(chat("why?", "gpt-4o"))
    assert routed.decision.models == ("openai/gpt-4o",) and routed.decision.source is DecisionSource.FALLBACK
    assert routed.outcome.error_kind == "bad_reply" and chain.failures == {"bad_reply": 1}


def test_breaker_opens_after_failures_and_probes_again():
    from plano_extproc.router.chain import CircuitBreaker

    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, open_seconds=5, clock=clock)
    breaker.record_failure()
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 5
    assert breaker.allow() and not breaker.allow()  # exactly one probe while half-open
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 5
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


async def test_open_breaker_skips_the_failing_router(demo_config):
    from plano_extproc.router.chain import CircuitBreaker

    broken = ScriptedRouter("triton", error="unavailable")
    chain = RouterChain(broken, 0.5, fallback=ScriptedRouter("embedded", answer="code_generation"), breaker=CircuitBreaker(2, 60))
    engine = DecisionEngine(demo_config, chain)
    for _ in range(5):
        routed = await engine.route(chat("code"))
        assert routed.decision.route == "code_generation" and routed.decision.source is DecisionSource.FALLBACK
    assert broken.calls == 2
    assert chain.failures == {"unavailable": 2, "breaker_open": 3}


async def test_decision_cache_skips_the_router_for_an_identical_request(demo_config):
    from plano_extproc.ttl_cache import TtlLruCache

    router = ScriptedRouter("triton", answer="code_generation")
    chain = RouterChain(router, 1.0, cache=TtlLruCache(60, 100))
    engine = DecisionEngine(demo_config, chain)
    first = await engine.route(chat("write code"))
    again = await engine.route(chat("write code"))
    other = await engine.route(chat("write more code"))
    assert first.decision.route == again.decision.route == other.decision.route == "code_generation"
    assert again.outcome.cached and not first.outcome.cached
    assert router.calls == 2
    router.answer = None  # "no route" answers are cached too
    await engine.route(chat("hello"))
    await engine.route(chat("hello"))
    assert router.calls == 3


async def test_failures_are_not_cached(demo_config):
    from plano_extproc.ttl_cache import TtlLruCache

    router = ScriptedRouter("triton", error="error")
    chain = RouterChain(router, 1.0, cache=TtlLruCache(60, 100))
    engine = DecisionEngine(demo_config, chain)
    await engine.route(chat("x"))
    router.error, router.answer = None, "complex_reasoning"
    routed = await engine.route(chat("x"))
    assert routed.decision.route == "complex_reasoning" and router.calls == 2
