"""Several replicas: two gateways (each a real Envoy + its own ext_proc) sharing one real redis-server
through `routing.session_cache: {type: redis}`."""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import demo_config_with
from tests.harness import CLAUDE, CODE, FRANCE, REASONING, RunningGateway, SilentServer, hung_router_config, oai, post, user
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

TTL = 3


# Generous: these tests are about who wins a pin, not about a slow Redis, and on a loaded CI machine
# an answer can take longer than 200 ms (the store then serves that request unpinned, as designed).
# A killed Redis refuses at once, so the outage test does not wait for it.
REDIS_TIMEOUT_MS = 3000


def shared_config(redis_url: str, ttl: float = TTL, tenant_header: str | None = "x-tenant") -> str:
    cache: dict[str, object] = {"type": "redis", "url": redis_url, "timeout_ms": REDIS_TIMEOUT_MS}
    if tenant_header:
        cache["tenant_header"] = tenant_header
    return demo_config_with(session_ttl_seconds=ttl, session_cache=cache)


def decide(gw, text: str, session: str | None = None, **headers: str) -> dict:
    if session is not None:
        headers["x-model-affinity"] = session
    status, _, body = post(gw, "/routing/v1/chat/completions", {"messages": user(text)}, headers)
    assert status == 200, body
    return body


def sid(name: str) -> str:
    return f"{name}-{time.time_ns()}"


def metric(gw, name: str, **labels: str) -> float:
    value = gw.gateway.server.metrics.registry.get_sample_value(name, labels or None)
    return value or 0.0


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def pair(redis_server):
    a = RunningGateway(shared_config(redis_server.url))
    try:
        b = RunningGateway(shared_config(redis_server.url))
    except BaseException:
        a.close()
        raise
    yield a, b
    a.close()
    b.close()


def test_a_session_pinned_through_one_replica_is_pinned_on_the_other(pair, redis_server):
    a, b = pair
    session = sid("shared")
    first = decide(a, CODE, session)
    assert (first["route"], first["pinned"]) == ("code_generation", False)
    on_b = decide(b, REASONING, session)  # B alone would route this to complex_reasoning
    assert (on_b["route"], on_b["models"], on_b["pinned"], on_b["source"]) == ("code_generation", first["models"], True, "affinity")
    assert redis_server.client().exists(f"plano:affinity:~:{session}")  # no tenant header sent

    # a proxied request on B goes to the pinned model's provider, with the old header name too
    b.anthropic_mock.reset()
    reply = oai(b).chat.completions.create(model="gpt-4o-mini", messages=user(FRANCE), extra_headers={"x-session-id": session})
    assert reply.choices[0].message.content == f"mock-anthropic answered as {CLAUDE}"
    assert len(b.anthropic_mock.requests_snapshot()) == 1


def test_the_pin_lives_session_ttl_seconds_from_the_first_decision(pair, redis_server):
    a, b = pair
    session = sid("ttl")
    key = f"plano:affinity:~:{session}"
    decide(a, CODE, session)
    first_ttl = redis_server.client().pttl(key)
    assert 0 < first_ttl <= TTL * 1000
    assert decide(b, REASONING, session)["pinned"] is True
    assert redis_server.client().pttl(key) <= first_ttl  # a hit does not extend it
    deadline = time.monotonic() + TTL + 5
    while redis_server.client().exists(key):
        assert time.monotonic() < deadline, "the pin outlived its TTL"
        time.sleep(0.05)
    again = decide(b, REASONING, session)  # expired: routed anew, and pinned anew
    assert (again["pinned"], again["route"]) == (False, "complex_reasoning")
    assert decide(a, CODE, session)["route"] == "complex_reasoning"


def test_the_tenant_header_isolates_tenants(pair, redis_server):
    a, b = pair
    session = sid("tenant")
    acme = decide(a, CODE, session, **{"x-tenant": "acme"})
    globex = decide(b, REASONING, session, **{"x-tenant": "globex"})  # same session id, another tenant
    assert (acme["route"], globex["route"], globex["pinned"]) == ("code_generation", "complex_reasoning", False)
    assert decide(b, REASONING, session, **{"x-tenant": "acme"})["route"] == "code_generation"  # acme's pin, on B
    assert decide(a, CODE, session, **{"x-tenant": "globex"})["route"] == "complex_reasoning"
    none = decide(a, REASONING, session)  # no tenant header: a namespace of its own
    assert (none["pinned"], none["route"]) == (False, "complex_reasoning")
    keys = set(redis_server.client().scan_iter(f"plano:affinity:*{session}"))
    assert keys == {f"plano:affinity:acme:{session}", f"plano:affinity:globex:{session}", f"plano:affinity:~:{session}"}
    hostile = decide(a, CODE, "s" * 200, **{"x-tenant": "a:b" + "x" * 5000})  # bounded keys, still served
    assert hostile["pinned"] is False and all(len(k) < 120 for k in redis_server.client().scan_iter("plano:affinity:*"))


def test_redis_killed_mid_test_requests_still_succeed_and_pins_resume_after_restart(pair, redis_server):
    a, b = pair
    session = sid("outage")
    assert decide(a, CODE, session)["pinned"] is False
    redis_server.kill()
    try:
        errors_before = sum(metric(gw, "plano_affinity_store_errors_total", backend="redis", operation="get", kind=k) for gw in pair for k in ("error", "unavailable", "timeout"))
        for i in range(6):
            gw = pair[i % 2]
            started = time.monotonic()
            d = decide(gw, REASONING, session)  # the pin is unreachable: routed normally, never an error
            assert (d["pinned"], d["route"]) == (False, "complex_reasoning")
            assert time.monotonic() - started < 2.0
            reply = oai(gw).chat.completions.create(model="gpt-4o-mini", messages=user(FRANCE), extra_headers={"x-model-affinity": session})
            assert reply.choices[0].message.content == "mock-openai answered as gpt-4o-mini"
        errors_after = sum(metric(gw, "plano_affinity_store_errors_total", backend="redis", operation="get", kind=k) for gw in pair for k in ("error", "unavailable", "timeout"))
        assert errors_after >= errors_before + 12
        assert metric(a, "plano_affinity_store_up", backend="redis") == 0
    finally:
        redis_server.start()
    fresh = sid("after")
    deadline = time.monotonic() + 10
    while True:  # the first call after the retry interval reaches the restarted (empty) Redis
        decide(a, CODE, fresh)
        if decide(b, REASONING, fresh)["pinned"]:
            break
        assert time.monotonic() < deadline, "pins did not resume after Redis restarted"
        time.sleep(0.2)
    assert decide(b, REASONING, fresh)["route"] == "code_generation"
    assert metric(a, "plano_affinity_store_up", backend="redis") == 1


def test_the_first_decision_wins_when_replicas_route_a_new_session_at_once(redis_server):
    # a router that never answers (300 ms timeout, embedded fallback) keeps every request in the router
    # step long enough that all of them miss the pin, route, and race to write it
    silent = SilentServer()
    config = hung_router_config(shared_config(redis_server.url), silent.url, fallback="embedded")
    config = config.replace("timeout_ms: 300,", "timeout_ms: 300, breaker_failures: 1000,")
    a = RunningGateway(config)
    b = RunningGateway(config)
    try:
        for round_ in range(3):
            session = sid(f"race{round_}")
            barrier = threading.Barrier(8)
            answers: list[dict] = []

            def ask(gw, text, barrier=barrier, answers=answers, session=session):
                barrier.wait(10)
                answers.append(decide(gw, text, session))

            threads = [threading.Thread(target=ask, args=(gw, text)) for gw in (a, b) for text in (CODE, REASONING, CODE, REASONING)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert len(answers) == 8
            assert len({(d["route"], tuple(d["models"])) for d in answers}) == 1, answers  # one decision for the session
            assert [d["pinned"] for d in answers].count(False) == 1  # the winner; the others answered with its pin
        lost = sum(metric(gw, "plano_affinity_pins_total", result="lost") for gw in (a, b))
        assert lost >= 3 * 7 - 3  # nearly every request raced (a late one may read the pin instead)
    finally:
        a.close()
        b.close()
        silent.close()
