"""Session pins: the keys, the in-process store, the Redis store against a real redis-server (two stores =
two replicas), its fail-open behaviour, and the config block that chooses them."""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
import pytest

from plano_extproc.affinity import (
    KEY_PREFIX,
    AffinityEntry,
    MemorySessionStore,
    affinity_key,
    decode_entry,
    encode_entry,
)
from plano_extproc.config import ConfigError, parse_config
from plano_extproc.session_redis import RedisSessionStore, redact
from tests.harness import SilentServer
from tests.redis_server import RedisServer

BASE = "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-4o\n  - model: openai/gpt-4o-mini\n"
CODE = AffinityEntry(("anthropic/claude", "openai/gpt-4o"), "code_generation")
REASONING = AffinityEntry(("openai/gpt-4o", "anthropic/claude"), "complex_reasoning")

# ------------------------------------------------------------------------------------------- keys


def test_keys_are_planos_and_bounded_whatever_the_client_sends():
    assert affinity_key("abc-123") == "plano:affinity:abc-123"
    assert affinity_key("s1", "acme", tenant_scoped=True) == "plano:affinity:acme:s1"
    for hostile in ("x" * 100_000, "line\nbreak", "späce ünicode", "\x00\x01", "~looks-hashed", "a b"):
        key = affinity_key(hostile, hostile, tenant_scoped=True)
        assert key.startswith(KEY_PREFIX) and len(key) < 120 and key.isascii() and key.isprintable()
    assert len(affinity_key("x" * 100_000)) < 60
    # a long id and its hash are not the same session
    long_id = "y" * 500
    assert affinity_key(long_id) != affinity_key(affinity_key(long_id)[len(KEY_PREFIX) :])


def test_tenant_scoped_keys_never_collide():
    pairs = [("a", "b:c"), ("a:b", "c"), (None, "a:b"), ("", "x"), (None, "x"), ("acme", "s"), ("Acme", "s"), ("~", "s"), ("x" * 65, "s")]
    keys = [affinity_key(session, tenant, tenant_scoped=True) for tenant, session in pairs]
    assert len(set(keys) - {affinity_key("x", None, tenant_scoped=True)}) == len(keys) - 2  # only None and "" are "no tenant"
    assert affinity_key("x", None, tenant_scoped=True) == affinity_key("x", "", tenant_scoped=True) == "plano:affinity:~:x"


def test_stored_values_are_planos_shape_and_untrusted():
    raw = encode_entry(CODE)
    assert orjson.loads(raw) == {"model_name": "anthropic/claude", "route_name": "code_generation", "models": ["anthropic/claude", "openai/gpt-4o"]}
    assert decode_entry(raw) == CODE
    assert decode_entry(b'{"model_name": "openai/gpt-5.2", "route_name": "deep_reasoning"}') == AffinityEntry(("openai/gpt-5.2",), "deep_reasoning")
    for bad in (b"", b"null", b"[1]", b'{"models": []}', b'{"models": [1]}', b'{"model_name": ""}', b'{"models": ["' + b"m" * 300 + b'"]}',
                b'{"models": ' + orjson.dumps(["m"] * 17) + b"}", b'{"model_name": "m", "route_name": 3}'):
        assert decode_entry(bad) is None, bad


# ------------------------------------------------------------------------------------------- memory


async def test_memory_store_keeps_the_first_decision_with_its_ttl():
    now = [0.0]
    store = MemorySessionStore(10, clock=lambda: now[0])
    assert await store.pin("k", CODE, 10) is None  # stored
    assert await store.pin("k", REASONING, 10) == CODE  # the first decision wins
    now[0] = 9.9
    assert await store.get("k") == CODE
    now[0] = 10.0  # TTL from the first decision: the second pin did not extend it
    assert await store.get("k") is None
    assert await store.pin("k", REASONING, 10) is None
    stats = store.stats
    assert (stats.stored, stats.conflicts, stats.hits, stats.expirations) == (2, 1, 1, 1)


# ------------------------------------------------------------------------------------------- config


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, {})
    return exc.value.errors


def test_session_cache_block_is_planos_and_every_key_does_what_it_says():
    default = parse_config(BASE, {}).routing.session_cache
    assert (default.type, default.url, default.tenant_header) == ("memory", None, None)
    config = parse_config(BASE + "routing:\n  session_cache: {type: redis, url: 'redis://r:6379', tenant_header: X-Tenant-Id}\n", {})
    assert config.routing.session_cache.tenant_header == "x-tenant-id"  # header names are case-insensitive
    from_env = parse_config(BASE + "routing:\n  session_cache: {type: redis, url: $SESSIONS_URL}\n", {"SESSIONS_URL": "redis://:pw@r:6379/2"})
    assert from_env.routing.session_cache.url == "redis://:pw@r:6379/2"
    assert errors_of(BASE + "routing:\n  session_cache: {type: redis}\n") == ["routing.session_cache.url: required when type is redis (e.g. redis://redis:6379)"]
    assert errors_of(BASE + "routing:\n  session_cache: {type: redis, url: 'http://r'}\n")[0].startswith("routing.session_cache.url: must start with redis://")
    assert errors_of(BASE + "routing:\n  session_cache: {url: 'redis://r'}\n") == [
        "routing.session_cache.url: only used with type: redis (the memory cache is this process's own)"
    ]
    assert errors_of(BASE + "routing:\n  session_cache: {type: memcached}\n")[0].startswith("routing.session_cache.type:")
    assert errors_of(BASE + "routing:\n  session_cache: {tenant_header: 'x tenant'}\n") == ["routing.session_cache.tenant_header: 'x tenant' is not an HTTP header name"]
    assert errors_of(BASE + "routing:\n  session_cache: {type: redis, url: $NOPE}\n") == ["routing.session_cache.url: environment variable $NOPE is not set"]
    assert errors_of(BASE + "routing:\n  session_cache: {ttl: 3}\n") == ["routing.session_cache.ttl: unknown key"]


def test_redis_urls_are_logged_without_their_password():
    assert redact("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact("rediss://user:s3cret@redis:6380") == "rediss://user:***@redis:6380"
    assert redact("redis://redis:6379") == "redis://redis:6379"


# ------------------------------------------------------------------------------------------- redis


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer().start()
    yield server
    server.close()


async def test_two_replicas_share_pins_and_the_first_decision_wins(redis_server):
    a, b = RedisSessionStore(redis_server.url), RedisSessionStore(redis_server.url)
    key = affinity_key(f"race-{time.time_ns()}")
    try:
        # both replicas saw a new session and routed it, differently
        assert await a.get(key) is None and await b.get(key) is None
        won = await a.pin(key, CODE, 30)
        lost = await b.pin(key, REASONING, 30)
        assert won is None and lost == CODE  # B answers with A's decision
        assert await b.get(key) == CODE
        assert (a.stats.stored, b.stats.stored, b.stats.conflicts) == (1, 0, 1)
        raw = redis_server.client().get(key)
        assert orjson.loads(raw)["model_name"] == "anthropic/claude"
        assert 29 <= redis_server.client().ttl(key) <= 30  # SET NX EX: TTL from the first decision
    finally:
        await a.close()
        await b.close()


async def test_a_later_pin_never_extends_the_ttl(redis_server):
    store = RedisSessionStore(redis_server.url)
    key = affinity_key(f"ttl-{time.time_ns()}")
    try:
        await store.pin(key, CODE, 2)
        first = redis_server.client().pttl(key)
        await store.pin(key, REASONING, 60)
        assert 0 < redis_server.client().pttl(key) <= first <= 2000
        deadline = time.monotonic() + 5
        while redis_server.client().exists(key) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await store.get(key) is None  # expired after its 2 s: the session is new again
        await store.pin(key, REASONING, 0.5)  # fractional TTLs are kept in milliseconds
        assert 0 < redis_server.client().pttl(key) <= 500
    finally:
        await store.close()


async def test_a_down_redis_fails_open_logs_once_counts_and_recovers(caplog):
    server = RedisServer()  # the port is free: nothing listens yet
    store = RedisSessionStore(server.url, timeout_s=0.2, retry_interval_s=0.2)
    caplog.set_level(logging.INFO, logger="plano_extproc.session_redis")
    try:
        started = time.monotonic()
        for i in range(5):
            assert await store.get(f"k{i}") is None  # answered as a new session, no exception
            assert await store.pin(f"k{i}", CODE, 30) is None  # ours stands (not stored)
        assert time.monotonic() - started < 1.0
        errors = store.stats.errors
        assert errors[("get", "error")] == 1 and errors[("get", "unavailable")] == 4 and errors[("pin", "unavailable")] == 5
        assert not store.stats.available
        failures = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(failures) == 1 and "routed without session pins" in failures[0].getMessage()

        server.start()
        deadline = time.monotonic() + 5
        while not server.client().exists("back"):  # the next try after the retry interval pins again
            assert time.monotonic() < deadline, "pins did not resume after Redis came back"
            await store.pin("back", CODE, 30)
            await asyncio.sleep(0.05)
        assert await store.get("back") == CODE and store.stats.available
        assert any("answers again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
        assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    finally:
        await store.close()
        server.close()


async def test_a_hung_redis_costs_a_request_at_most_the_timeout():
    silent = SilentServer()  # accepts the connection, never answers
    store = RedisSessionStore(f"redis://127.0.0.1:{silent.port}/0", timeout_s=0.15, retry_interval_s=30)
    try:
        started = time.monotonic()
        assert await store.get("k") is None
        first = time.monotonic() - started
        assert first < 0.5
        started = time.monotonic()
        for _ in range(20):  # during the retry interval Redis is not asked at all
            assert await store.get("k") is None
        assert time.monotonic() - started < 0.05
        assert store.stats.errors[("get", "timeout")] == 1 and store.stats.errors[("get", "unavailable")] == 20
    finally:
        await store.close()
        silent.close()


async def test_a_value_that_is_not_a_pin_is_a_new_session(redis_server):
    store = RedisSessionStore(redis_server.url)
    key = affinity_key(f"junk-{time.time_ns()}")
    redis_server.client().set(key, "not json", ex=30)
    try:
        assert await store.get(key) is None
        assert store.stats.errors[("get", "bad_value")] == 1
    finally:
        await store.close()


# ------------------------------------------------------------------------------------------- engine


async def test_the_engine_answers_a_race_within_one_process_with_the_first_decision(demo_config):
    from plano_extproc.apis import OPENAI_CHAT
    from plano_extproc.engine import DecisionEngine
    from plano_extproc.router.base import RouterBackend
    from plano_extproc.router.chain import RouterChain

    class Slow(RouterBackend):
        """The first call answers code_generation after 50 ms, the second complex_reasoning at once."""

        name = "slow"

        def __init__(self) -> None:
            self.answers = [("code_generation", 0.05), ("complex_reasoning", 0.0)]

        async def choose_route(self, routes, conversation):
            route, delay = self.answers.pop(0)
            await asyncio.sleep(delay)
            return route

    engine = DecisionEngine(demo_config, RouterChain(Slow(), timeout_s=1))
    body = orjson.dumps({"messages": [{"role": "user", "content": "hi"}]})
    first = asyncio.create_task(engine.route(OPENAI_CHAT.parse(body), "s"))
    await asyncio.sleep(0.01)
    second = (await engine.route(OPENAI_CHAT.parse(body), "s")).decision  # routed and pinned while the first waits
    first_decision = (await first).decision
    assert (second.route, second.pinned) == ("complex_reasoning", False)
    # the first request's own decision lost the race: it answers with the pin the second one wrote
    assert (first_decision.route, first_decision.pinned, first_decision.models) == ("complex_reasoning", True, second.models)


async def test_a_pin_that_names_no_model_of_the_config_is_routed_anew(demo_config):
    from plano_extproc.apis import OPENAI_CHAT
    from plano_extproc.engine import DecisionEngine
    from plano_extproc.router.chain import RouterChain
    from tests.test_decision import ScriptedRouter

    engine = DecisionEngine(demo_config, RouterChain(ScriptedRouter("scripted", answer="complex_reasoning"), timeout_s=1))
    key = affinity_key("s")
    await engine.sessions.pin(key, AffinityEntry(("openai/removed-model",), "gone"), 60)  # e.g. a model a reload removed
    routed = await engine.route(OPENAI_CHAT.parse(orjson.dumps({"messages": [{"role": "user", "content": "hi"}]})), "s")
    assert (routed.decision.route, routed.decision.pinned) == ("complex_reasoning", False)
    assert (await engine.sessions.get(key)).route == "complex_reasoning"  # the pin was replaced


async def test_the_decide_api_reads_the_tenant_from_grpc_metadata(tmp_path):
    import grpc

    from plano_extproc.api import routing_pb2, routing_pb2_grpc
    from plano_extproc.extproc.server import ExtProcServer
    from plano_extproc.router.chain import RouterChain
    from tests.conftest import DEMO_ENV, demo_config_with
    from tests.processors_kit import KeywordRouter

    text = demo_config_with(session_cache={"tenant_header": "x-tenant"})
    server = ExtProcServer(parse_config(text, DEMO_ENV), f"unix:{tmp_path}/x.sock")
    server.engine.router = RouterChain(KeywordRouter(), 5.0)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = routing_pb2_grpc.RoutingServiceStub(channel)

            async def decide(text: str, tenant: str | None) -> routing_pb2.DecideResponse:
                body = orjson.dumps({"messages": [{"role": "user", "content": text}]})
                metadata = (("x-tenant", tenant),) if tenant else ()
                return await stub.Decide(routing_pb2.DecideRequest(api="openai_chat", body=body, affinity_id="s"), metadata=metadata, timeout=10)

            assert (await decide("code_generation please", "acme")).route == "code_generation"
            other = await decide("complex_reasoning please", "globex")
            assert (other.route, other.pinned) == ("complex_reasoning", False)
            again = await decide("complex_reasoning please", "acme")
            assert (again.route, again.pinned) == ("code_generation", True)
        assert await server.engine.sessions.get("plano:affinity:acme:s") is not None
    finally:
        await server.stop(0)
