"""Glue between the pure core and the router: parse -> affinity -> router -> decide -> remember.

Every front end (ext_proc, the gRPC Decide API, the `route` CLI) asks this one object. The session store
(`affinity.SessionStore`: in-process, or Redis shared by replicas) is an adapter the engine is given or
builds from `routing.session_cache`; the decision itself stays pure (`decision.decide_route`).
"""

from __future__ import annotations

from dataclasses import dataclass

from plano_extproc.affinity import AffinityEntry, MemorySessionStore, SessionStore, affinity_key
from plano_extproc.apis import ClientApi, ParsedRequest
from plano_extproc.config import PlanoConfig, SessionCacheConfig
from plano_extproc.decision import (
    Decision,
    RouterOutcome,
    active_preferences,
    check_model_used,
    check_request,
    decide_route,
    route_specs,
)
from plano_extproc.metrics import Metrics
from plano_extproc.model_metrics import ModelMetrics
from plano_extproc.router.base import RouterBackend
from plano_extproc.router.chain import CircuitBreaker, RouterChain
from plano_extproc.ttl_cache import TtlLruCache

#: recent router answers by (routes, filtered conversation)
DecisionCache = TtlLruCache[bytes, str | None]


@dataclass(frozen=True, slots=True)
class RoutedRequest:
    request: ParsedRequest
    decision: Decision
    outcome: RouterOutcome | None


def build_router_chain(config: PlanoConfig) -> RouterChain:
    settings = config.routing.router
    timeout_s = settings.timeout_ms / 1000.0
    cache: DecisionCache | None = (
        TtlLruCache(settings.decision_cache_seconds, settings.decision_cache_entries)
        if settings.decision_cache_seconds > 0
        else None
    )
    if settings.backend == "embedded":
        return RouterChain(_embedded(config), timeout_s, cache=cache)
    primary: RouterBackend
    if settings.backend == "triton":
        from plano_extproc.router.triton import TritonRouter

        primary = TritonRouter(settings)
    else:
        from plano_extproc.router.openai_compatible import OpenAICompatibleRouter

        primary = OpenAICompatibleRouter(settings)
    fallback = _embedded(config) if settings.fallback == "embedded" else None
    breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_open_seconds)
    return RouterChain(primary, timeout_s, fallback=fallback, breaker=breaker, cache=cache)


def _embedded(config: PlanoConfig) -> RouterBackend:
    from plano_extproc.router.embedded import EmbeddedRouter

    return EmbeddedRouter(config.routing.router.embedded)


def build_session_store(config: PlanoConfig, shared_file: str | None = None) -> SessionStore:
    """The store `routing.session_cache` names (memory by default). `shared_file`: the file in which the
    worker processes of one gateway share a ``memory`` cache (session_sqlite.py)."""
    cache: SessionCacheConfig = config.routing.session_cache
    if cache.type == "redis":
        from plano_extproc.session_redis import RedisSessionStore

        assert cache.url is not None  # validated
        return RedisSessionStore(cache.url, cache.timeout_ms / 1000.0)
    if shared_file is not None:
        from plano_extproc.session_sqlite import SqliteSessionStore

        return SqliteSessionStore(shared_file, config.routing.session_max_entries)
    return MemorySessionStore(config.routing.session_max_entries, config.routing.session_ttl_seconds)


def same_session_store(a: PlanoConfig, b: PlanoConfig) -> bool:
    """Whether a reloaded config can keep the store (and the pins) of the previous one."""
    return a.routing.session_cache.model_dump(exclude={"tenant_header"}) == b.routing.session_cache.model_dump(exclude={"tenant_header"})


class DecisionEngine:
    def __init__(
        self, config: PlanoConfig, router: RouterChain, metrics: Metrics | None = None, sessions: SessionStore | None = None
    ) -> None:
        self.config = config
        self.router = router
        self.metrics = metrics
        self.sessions: SessionStore = sessions if sessions is not None else build_session_store(config)
        #: the request header whose value scopes affinity keys (routing.session_cache.tenant_header)
        self.tenant_header = config.routing.session_cache.tenant_header
        #: cost / latency numbers for selection_policy, refreshed in the background
        self.model_metrics = ModelMetrics(
            config,
            metrics.live_latency if metrics is not None else None,
            metrics.record_metrics_refresh if metrics is not None else None,
        )
        if metrics is not None:
            # the latest engine's store and cache are the ones exported (a reload hands them over)
            metrics.watch_sessions(lambda: self.sessions)
            if router.cache is not None:
                metrics.watch_decision_cache(router.cache)
            router.on_call = metrics.record_router_call
            router.on_breaker = metrics.record_breaker

    async def warm_up(self) -> None:
        """Load the router and embed the configured routes before the first request arrives."""
        routes = route_specs(self.config.routing_preferences)
        await self.router.primary.warm_up(routes)
        if self.router.fallback is not None:
            await self.router.fallback.warm_up(routes)
        await self.model_metrics.start()

    async def route(
        self, request: ParsedRequest, session_id: str | None = None, tenant: str | None = None, *, decision_only: bool = False
    ) -> RoutedRequest:
        """`tenant`: the value of the tenant header (`routing.session_cache.tenant_header`), if sent;
        `decision_only`: the decision endpoint (nothing is forwarded: an unknown model is reported, not refused)."""
        check_request(self.config, request, decision_only=decision_only)  # raises RequestFormatError (unknown model, ...)
        key = affinity_key(session_id, tenant, tenant_scoped=self.tenant_header is not None) if session_id else None
        entry = await self.sessions.get(key) if key is not None else None
        stale = entry is not None and not self._servable(entry, request)
        if entry is not None and not stale:
            decision = decide_route(self.config, request, None, entry)
            outcome = None
        else:
            preferences = active_preferences(self.config, request)
            outcome = await self.router.choose(route_specs(preferences), request.conversation) if preferences else None
            decision = decide_route(self.config, request, outcome, snapshot=self.model_metrics.snapshot)
            if not decision_only:
                check_model_used(self.config, request, decision)
            if key is not None:
                mine = AffinityEntry(decision.models, decision.route)
                ttl = self.config.routing.session_ttl_seconds
                if stale:
                    await self.sessions.replace(key, mine, ttl)
                else:
                    held = await self.sessions.pin(key, mine, ttl)
                    if held is not None:
                        # another decision for this session was first (a race, another replica): it wins
                        decision = decide_route(self.config, request, None, held)
        if self.metrics is not None:
            self.metrics.record_decision(decision, inline=request.preferences is not None)
        return RoutedRequest(request, decision, outcome)

    def _servable(self, entry: AffinityEntry, request: ParsedRequest) -> bool:
        """A pin naming no model this config declares (removed by a reload, or written by a replica with
        another config) is routed anew; inline routes may name any model, so their pins stand."""
        return request.preferences is not None or any(m in self.config.by_model for m in entry.models)

    async def route_raw(self, api: ClientApi, body: bytes, session_id: str | None = None, tenant: str | None = None) -> RoutedRequest:
        """Parse and decide (the decision APIs: nothing is forwarded); raises RequestFormatError for bad bodies."""
        return await self.route(api.parse(body), session_id, tenant, decision_only=True)

    async def close(self) -> None:
        """Close what this engine built (a shared router or store is closed by its owner)."""
        await self.model_metrics.close()
        await self.router.close()
        await self.sessions.close()
