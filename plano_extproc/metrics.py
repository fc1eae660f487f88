"""Prometheus metrics of the ext_proc service (its own registry, served on its own port).

Every label has a bounded set of values: routes and models come from the config (anything else a request
brings inline is counted as "inline" / "other"), formats, sources, kinds and outcomes are fixed sets.
Never a prompt, a session id or a key. Names follow Prometheus conventions (base units, `_total`).

OpenTelemetry GenAI semantic conventions, and the names here that carry the same meaning:
  gen_ai.client.token.usage        -> plano_gen_ai_client_token_usage_tokens (histogram, per response;
                                      labels model, type = input | output as gen_ai.token.type)
                                      and plano_tokens_total (the running sum, for rate() in dashboards)
  gen_ai.client.operation.duration -> plano_gen_ai_client_operation_duration_seconds (request start to
                                      response end, proxied requests)
  gen_ai.server.time_to_first_token -> plano_gen_ai_time_to_first_token_seconds (request start to first
                                      response body byte, proxied requests)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from plano_extproc import __version__
from plano_extproc.affinity import AffinityCache, MemorySessionStore, SessionStore
from plano_extproc.config import PlanoConfig
from plano_extproc.decision import Decision, DecisionSource
from plano_extproc.model_metrics import LiveLatency
from plano_extproc.ttl_cache import TtlLruCache

ROUTER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PHASE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
LLM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)
ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 8)

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


def config_reloads_counter(registry: CollectorRegistry) -> Counter:
    """``plano_config_reloads_total{result}``: kept by a serving process, or by the supervisor of its workers."""
    return Counter(
        "plano_config_reloads",
        "Config file changes seen: applied (in place), restarted (applied with an Envoy hot restart), bootstrap_mismatch "
        "(applied for streams of a matching bootstrap only: Envoy needs the re-rendered bootstrap), invalid (kept the old "
        "config), failed (valid but could not be applied; kept the old config)",
        ["result"],
        registry=registry,
    )


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    return "client_error" if status < 500 else "server_error"


class _CacheCollector(Collector):
    """Reads a cache's counters at scrape time: nothing is paid on the request path."""

    def __init__(self, cache: TtlLruCache[Any, Any], prefix: str, what: str) -> None:
        self.cache, self.prefix, self.what = cache, prefix, what

    def collect(self) -> Iterable[Metric]:
        stats = self.cache.stats
        lookups = CounterMetricFamily(f"{self.prefix}_lookups", f"{self.what} lookups", labels=["result"])
        lookups.add_metric(["hit"], stats.hits)
        lookups.add_metric(["miss"], stats.misses)
        yield lookups
        yield CounterMetricFamily(f"{self.prefix}_evictions", "Entries dropped by the LRU bound", value=stats.evictions)
        yield CounterMetricFamily(f"{self.prefix}_expirations", "Entries dropped by their TTL", value=stats.expirations)
        yield GaugeMetricFamily(f"{self.prefix}_entries", f"{self.what} entries now", value=len(self.cache))


class _CacheSource(Collector):
    """`_CacheCollector` over whichever cache a getter returns now (a config reload may replace it)."""

    def __init__(self, prefix: str, what: str) -> None:
        self.prefix, self.what = prefix, what
        self.source: Callable[[], TtlLruCache[Any, Any] | None] = lambda: None

    def collect(self) -> Iterable[Metric]:
        cache = self.source()
        if cache is not None:
            yield from _CacheCollector(cache, self.prefix, self.what).collect()


class _SessionCollector(Collector):
    """The session store's counters at scrape time (memory or Redis; `affinity.SessionStats`)."""

    def __init__(self) -> None:
        self.source: Callable[[], SessionStore | None] = lambda: None

    def collect(self) -> Iterable[Metric]:
        store = self.source()
        if store is None:
            return
        stats = store.stats
        lookups = CounterMetricFamily("plano_affinity_lookups", "X-Model-Affinity (pinned sessions) lookups", labels=["result"])
        lookups.add_metric(["hit"], stats.hits)
        lookups.add_metric(["miss"], stats.misses)
        yield lookups
        yield CounterMetricFamily("plano_affinity_evictions", "Pins dropped by the LRU bound (memory store)", value=stats.evictions)
        yield CounterMetricFamily("plano_affinity_expirations", "Pins dropped by their TTL (memory store)", value=stats.expirations)
        pins = CounterMetricFamily(
            "plano_affinity_pins", "Pin writes: stored, or lost to an earlier decision for the session (a race, another replica)", labels=["result"]
        )
        pins.add_metric(["stored"], stats.stored)
        pins.add_metric(["lost"], stats.conflicts)
        yield pins
        errors = CounterMetricFamily(
            "plano_affinity_store_errors",
            "Session store calls that failed and were answered as a new session (fail-open); kind: timeout, error, unavailable, bad_value",
            labels=["backend", "operation", "kind"],
        )
        for (operation, kind), count in sorted(stats.errors.items()):
            errors.add_metric([store.kind, operation, kind], count)
        yield errors
        up = GaugeMetricFamily("plano_affinity_store_up", "1 while the session store answers, 0 during an outage", labels=["backend"])
        up.add_metric([store.kind], 1 if stats.available else 0)
        yield up
        entries = store.entries()
        if entries is not None:
            yield GaugeMetricFamily("plano_affinity_entries", "X-Model-Affinity (pinned sessions) entries now", value=entries)


class _Labelled:
    """A metric's children by label values, each resolved once: `labels()` validates and takes a lock on
    every call (~1 us, several times per request). Label values here are bounded (`model_label`, ...)."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Metrics:
    def __init__(self, config: PlanoConfig, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._routes = frozenset(p.name for p in config.routing_preferences)
        self._models = frozenset(config.by_model)
        self._providers = {m: p.provider for m, p in config.by_model.items()}
        #: a model a vendor/* entry serves is counted under that entry ("openai/*")
        self._entry_of = config.entry_of
        self._lock = threading.Lock()
        self._sessions: _SessionCollector | None = None
        self._decision_cache: _CacheSource | None = None
        r = self.registry

        Info("plano_build", "Build information", registry=r).info({"version": __version__})
        self.requests = Counter(
            "plano_requests", "Requests seen by the ext_proc", ["endpoint", "api_format", "outcome"], registry=r
        )
        self.decisions = Counter("plano_decisions", "Routing decisions", ["route", "model", "source"], registry=r)
        self.router_duration = Histogram(
            "plano_router_duration_seconds", "Router backend call duration", ["backend"], buckets=ROUTER_BUCKETS, registry=r
        )
        self.router_failures = Counter("plano_router_failures", "Router failures", ["backend", "kind"], registry=r)
        self.breaker_state = Gauge(
            "plano_router_breaker_state", "Router circuit breaker: 0 closed, 1 half-open, 2 open", ["backend"], registry=r
        )
        self.phase_duration = Histogram(
            "plano_extproc_phase_duration_seconds",
            "Time the ext_proc spends on one message",
            ["processor", "phase"],
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.config_mismatches = Counter(
            "plano_config_mismatch",
            "ext_proc streams refused because Envoy's bootstrap was rendered from another config",
            registry=r,
        )
        self.config_reloads = config_reloads_counter(r)
        self.config_generation = Gauge("plano_config_generation", "Config generation serving new requests (1 = the config at start)", registry=r)
        self.config_generation.set(1)
        self.previous_bootstrap_streams = Counter(
            "plano_config_previous_bootstrap_streams",
            "ext_proc streams served with an earlier config because the Envoy that sent them runs its bootstrap",
            registry=r,
        )
        self.inflight = Gauge("plano_extproc_inflight_streams", "Open ext_proc streams", ["processor"], registry=r)
        self.access_log_entries = Counter(
            "plano_access_log_entries", "Envoy access-log entries received (response observation)", ["log"], registry=r
        )
        self.upstream_responses = Counter(
            "plano_upstream_responses", "Provider responses per attempt", ["model", "provider", "status_class"], registry=r
        )
        self.attempts = Histogram(
            "plano_upstream_attempts", "Attempts a proxied request needed", buckets=ATTEMPT_BUCKETS, registry=r
        )
        self.fallovers = Counter(
            "plano_upstream_fallovers", "Proxied requests answered by a later model than the first", ["model"], registry=r
        )
        self.tokens = Counter("plano_tokens", "Tokens reported in provider usage", ["model", "type"], registry=r)
        self.token_usage = Histogram(
            "plano_gen_ai_client_token_usage_tokens",
            "Tokens per response (OTel gen_ai.client.token.usage)",
            ["model", "type"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.operation_duration = Histogram(
            "plano_gen_ai_client_operation_duration_seconds",
            "Proxied request duration, request start to response end (OTel gen_ai.client.operation.duration)",
            ["model"],
            buckets=LLM_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "plano_gen_ai_time_to_first_token_seconds",
            "Request start to first response body byte, proxied requests",
            ["model"],
            buckets=LLM_BUCKETS,
            registry=r,
        )
        self.metrics_refreshes = Counter(
            "plano_model_metrics_refreshes",
            "Fetches of the model_metrics_sources (catalog, Prometheus query) by result",
            ["source", "result"],
            registry=r,
        )
        #: labelled children resolved once (hot path): open streams and per-message time by processor (and phase)
        self.inflight_streams, self.phase = _Labelled(self.inflight), _Labelled(self.phase_duration)
        self._requests, self._decisions = _Labelled(self.requests), _Labelled(self.decisions)
        self._upstream_responses, self._operation_duration = _Labelled(self.upstream_responses), _Labelled(self.operation_duration)
        self._first_token, self._tokens, self._token_usage = _Labelled(self.time_to_first_token), _Labelled(self.tokens), _Labelled(self.token_usage)
        latency = config.latency_source
        #: per-model latencies for a `provider: gateway` latency source (None when none is configured)
        self.live_latency: LiveLatency | None = (
            LiveLatency(latency.samples) if latency is not None and latency.provider == "gateway" else None
        )

    # label bounding -------------------------------------------------------------------------------

    def model_label(self, model: str | None) -> str:
        if model in self._models:
            return model
        entry = self._entry_of(model) if model else None
        return entry if entry is not None else "other"

    def route_label(self, route: str | None, inline: bool) -> str:
        if route is None:
            return "none"
        return "inline" if inline or route not in self._routes else route

    # recording ------------------------------------------------------------------------------------

    def watch_sessions(self, source: Callable[[], SessionStore | None]) -> None:
        """Export the store `source()` returns at each scrape; a later call replaces the source."""
        if self._sessions is None:
            self._sessions = _SessionCollector()
            self.registry.register(self._sessions)
        self._sessions.source = source

    def watch_affinity(self, cache: AffinityCache) -> None:
        store = MemorySessionStore(cache.max_entries, cache=cache)
        self.watch_sessions(lambda: store)

    def watch_decision_cache(self, cache: TtlLruCache[Any, Any] | None) -> None:
        """Export this decision cache (replacing one watched before)."""
        if self._decision_cache is None:
            self._decision_cache = _CacheSource("plano_router_cache", "Router decision cache")
            self.registry.register(self._decision_cache)
        self._decision_cache.source = lambda: cache

    def set_config(self, config: PlanoConfig) -> None:
        """A reloaded config: its routes and models become the label values (others count as other)."""
        self._routes = frozenset(p.name for p in config.routing_preferences)
        self._models = frozenset(config.by_model)
        self._providers = {m: p.provider for m, p in config.by_model.items()}

    def record_reload(self, result: str) -> None:
        self.config_reloads.labels(result).inc()

    def record_request(self, endpoint: str, api_format: str, status: int) -> None:
        self._requests(endpoint, api_format, outcome_of(status)).inc()

    def record_decision(self, decision: Decision, inline: bool) -> None:
        self._decisions(
            self.route_label(decision.route, inline and decision.source is not DecisionSource.AFFINITY),
            self.model_label(decision.model),
            decision.source.value,
        ).inc()

    def record_router_call(self, backend: str, seconds: float, failure_kind: str | None) -> None:
        if failure_kind != "breaker_open":
            self.router_duration.labels(backend).observe(seconds)
        if failure_kind:
            self.router_failures.labels(backend, failure_kind).inc()

    def record_metrics_refresh(self, source: str, ok: bool) -> None:
        self.metrics_refreshes.labels(source, "ok" if ok else "error").inc()

    def record_first_token(self, model: str, seconds: float) -> None:
        """A successful answer's time to first byte (histogram, and the gateway latency source)."""
        self._first_token(self.model_label(model)).observe(seconds)
        if self.live_latency is not None:
            self.live_latency.add(model, "time_to_first_token", seconds)

    def record_breaker(self, backend: str, state: str) -> None:
        self.breaker_state.labels(backend).set(BREAKER_STATES.get(state, 0))

    def record_upstream_response(self, model: str, status: int) -> None:
        label = self.model_label(model)
        self._upstream_responses(label, self._providers.get(label, "other"), status_class(status)).inc()

    def record_attempts(self, attempts: int, final_model: str, first_model: str) -> None:
        self.attempts.observe(attempts)
        if final_model != first_model:
            self.fallovers.labels(self.model_label(final_model)).inc()

    def record_tokens(self, model: str, input_tokens: int | None, output_tokens: int | None) -> None:
        label = self.model_label(model)
        for kind, count in (("input", input_tokens), ("output", output_tokens)):
            if count is not None and count >= 0:
                self._tokens(label, kind).inc(count)
                self._token_usage(label, kind).observe(count)

    def record_duration(self, model: str, seconds: float) -> None:
        """A proxied request's duration, request start to response end."""
        self._operation_duration(self.model_label(model)).observe(seconds)
