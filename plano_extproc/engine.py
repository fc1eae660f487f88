"""Glue between the pure core and the router: parse -> affinity -> router -> decide -> remember.

Every front end (ext_proc, the gRPC Decide API, the `route` CLI) asks this one object.
"""

from __future__ import annotations

from dataclasses import dataclass

from plano_extproc.affinity import AffinityCache
from plano_extproc.apis import ClientApi, ParsedRequest
from plano_extproc.config import PlanoConfig
from plano_extproc.decision import Decision, RouterOutcome, active_preferences, check_request, decide_route, route_specs
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


class DecisionEngine:
    def __init__(self, config: PlanoConfig, router: RouterChain, metrics: Metrics | None = None) -> None:
        self.config = config
        self.router = router
        self.metrics = metrics
        self.affinity = AffinityCache(config.routing.session_ttl_seconds, config.routing.session_max_entries)
        #: cost / latency numbers for selection_policy, refreshed in the background
        self.model_metrics = ModelMetrics(
            config,
            metrics.live_latency if metrics is not None else None,
            metrics.record_metrics_refresh if metrics is not None else None,
        )
        if metrics is not None:
            metrics.watch_affinity(self.affinity)
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

    async def route(self, request: ParsedRequest, session_id: str | None = None) -> RoutedRequest:
        check_request(self.config, request)  # raises RequestFormatError (unknown model, ...)
        entry = self.affinity.get(session_id) if session_id else None
        if entry is not None:
            decision = decide_route(self.config, request, None, entry)
            outcome = None
        else:
            preferences = active_preferences(self.config, request)
            outcome = await self.router.choose(route_specs(preferences), request.conversation) if preferences else None
            decision = decide_route(self.config, request, outcome, snapshot=self.model_metrics.snapshot)
            if session_id:
                self.affinity.put(session_id, decision.models, decision.route)
        if self.metrics is not None:
            self.metrics.record_decision(decision, inline=request.preferences is not None)
        return RoutedRequest(request, decision, outcome)

    async def route_raw(self, api: ClientApi, body: bytes, session_id: str | None = None) -> RoutedRequest:
        """Parse and route; raises RequestFormatError for bad bodies."""
        return await self.route(api.parse(body), session_id)

    async def close(self) -> None:
        await self.model_metrics.close()
        await self.router.close()
