"""The plano config file, v0.4.0 (README, "Configuration"; docs/plano-compatibility.md): parsing, validation with paths, migration, secrets.

Pure: `parse_config` takes the already-read YAML text and an environment mapping; `load_config` is the
only function that touches the file system.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from plano_extproc.providers import PROVIDERS
from plano_extproc.ranking import SelectionPolicy
from plano_extproc.router.base import MAX_EXAMPLE_CHARS, MAX_ROUTE_EXAMPLES
from plano_extproc.router.settings import EmbeddedRouterSettings

CURRENT_VERSION = (0, 4, 0)
DEFAULT_LISTENER_PORT = 12000


class ConfigError(Exception):
    """Every problem found in a config file, each line naming the path of the offending value."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LegacyRoutePreference(_Strict):
    """A route declared under a provider (before v0.4.0): the provider's model is implied."""

    name: str = Field(min_length=1)
    description: str = Field(min_length=1)


#: an example request of a route (the embedded router learns from them; Arch-Router ignores them)
RouteExample = Annotated[str, Field(min_length=1, max_length=MAX_EXAMPLE_CHARS)]


class RoutePreference(_Strict):
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    models: tuple[str, ...] = Field(min_length=1)
    examples: tuple[RouteExample, ...] = Field(default=(), max_length=MAX_ROUTE_EXAMPLES)
    selection_policy: SelectionPolicy | None = None

    @property
    def prefer(self) -> str:
        return self.selection_policy.prefer if self.selection_policy is not None else "none"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(value: str) -> float:
    """'30s', '500ms', '5m', '1h' -> seconds."""
    match = _DURATION.fullmatch(value.strip())
    if not match:
        raise ValueError(f"'{value}' is not a duration like '30s', '500ms' or '5m'")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


Duration = Annotated[str, AfterValidator(lambda v: (duration_seconds(v), v)[1])]


class OnTimeout(_Strict):
    #: an attempt whose provider sends nothing (no headers, no bytes) for this long is abandoned and the
    #: next attempt starts (Envoy's per-try idle timeout); default: 300 s, at most the listener timeout
    #: shared by the attempts
    timeout: Duration | None = None


class RetryAfterHandling(_Strict):
    #: a same-model retry waits out the provider's retry-after up to this long (Envoy's rate-limited
    #: back-off); a fall-over to another model never waits for it
    max_retry_after_seconds: float = Field(default=10.0, ge=0, le=3600)


class Backoff(_Strict):
    #: back-off between same-model attempts (jittered exponential, Envoy's retry back-off)
    base_ms: int = Field(default=250, ge=1, le=60_000)
    max_ms: int = Field(default=2000, ge=1, le=600_000)


class RetryPolicy(_Strict):
    """plano's ``model_providers[].retry_policy``, the parts Envoy enforces (README, "Retries and
    timeouts"). Which models are tried and in what order is the route's ranked ``models`` list here."""

    on_timeout: OnTimeout = OnTimeout()
    retry_after_handling: RetryAfterHandling = RetryAfterHandling()
    backoff: Backoff = Backoff()

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in ("fallback_models", "default_strategy", "default_max_attempts", "on_status_codes", "on_high_latency"):
                if key in data:
                    raise ValueError(
                        f"{key} is not supported: the route's ranked models decide the fall-over order, every model "
                        "gets one attempt and 429/5xx/resets/timeouts move to the next"
                    )
        return data


class ProviderConfig(_Strict):
    model: str = Field(description="<provider>/<model id>")
    name: str | None = None
    access_key: SecretStr | None = None
    default: bool = False
    base_url: str | None = None
    provider_interface: str | None = None
    http_host: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    passthrough_auth: bool = False
    retry_policy: RetryPolicy = RetryPolicy()
    routing_preferences: tuple[LegacyRoutePreference, ...] = ()

    @field_validator("model")
    @classmethod
    def _provider_slash_model(cls, value: str) -> str:
        provider, sep, model_id = value.partition("/")
        if not sep or not provider or not model_id:
            raise ValueError(f"'{value}' must be '<provider>/<model id>', e.g. 'openai/gpt-4o'")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"'{value}' must be an http:// or https:// URL")
        return value

    @property
    def provider(self) -> str:
        return self.model.partition("/")[0]

    @property
    def model_id(self) -> str:
        return self.model.partition("/")[2]

    @property
    def interface(self) -> str:
        """Which API family the upstream speaks (decides auth headers and paths)."""
        given = self.provider_interface or self.provider
        return _INTERFACE_ALIASES.get(given, given)

    @property
    def wildcard(self) -> bool:
        """``vendor/*``: serves any model of that vendor, the requested id passed through."""
        return self.model_id == "*"

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: object) -> object:
        if isinstance(data, dict):
            if "capabilities" in data:
                raise ValueError(
                    "capabilities is not supported by plano-extproc (capability filtering of a route's models): every "
                    "model of a route is tried in order and a provider that cannot serve the request falls over"
                )
            if "arbitrage_policy" in data:
                raise ValueError(
                    "arbitrage_policy is not supported by plano-extproc: a route's ranked models are the fall-over "
                    "order (selection_policy: {prefer: cheapest} ranks them by cost)"
                )
        return data


#: plano's provider_interface names for API families this gateway names otherwise
_INTERFACE_ALIASES = {"claude": "anthropic", "plano": "openai_compatible"}


class ModelAlias(_Strict):
    target: str = Field(min_length=1)


class Listener(_Strict):
    name: str = "egress_traffic"
    #: only model listeners are served (plano's prompt and agent listeners are not part of this gateway)
    type: Literal["model", "llm"] = "model"
    port: int = Field(default=DEFAULT_LISTENER_PORT, ge=1, le=65535)
    address: str = "0.0.0.0"
    #: bounds a whole request, retries included (plano's meaning); unset: no overall bound
    timeout: Duration | None = None
    #: plano's only value; the listener serves all three client APIs whatever it says
    message_format: Literal["openai"] | None = None
    #: at most this many retries after a failed attempt (fall-overs and same-model retries alike); a
    #: ranked list never gets more than one attempt per model (docs/plano-compatibility.md)
    max_retries: int | None = Field(default=None, ge=0, le=100)

    @model_validator(mode="before")
    @classmethod
    def _filters(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in ("input_filters", "output_filters", "filter_chain"):
                if key in data:
                    raise ValueError(f"{key} is not supported by plano-extproc (filter chains are not part of this gateway)")
        return data

    @field_validator("type", mode="before")
    @classmethod
    def _served_type(cls, value: object) -> object:
        if value in ("prompt", "agent"):
            raise ValueError(f"'{value}' listeners (prompt targets, agents) are not supported by plano-extproc; it serves type: model")
        return value

    @property
    def timeout_seconds(self) -> float | None:
        return duration_seconds(self.timeout) if self.timeout else None


class Overrides(_Strict):
    """plano's `overrides`. Each key here works; plano's keys for features this gateway does not have
    (prompt targets, agent orchestration, signals) are rejected with a reason."""

    #: a declared model that is the router (an OpenAI-compatible server, e.g. Arch-Router on vLLM or
    #: Ollama): sets routing.router to backend openai at that model's base_url, model id and key
    llm_routing_model: str | None = None
    #: the Arch-Router prompt's token budget (routing.router.prompt_max_tokens)
    orchestrator_model_context_length: int | None = Field(default=None, ge=256, le=131072)
    #: connect timeout of the provider clusters
    upstream_connect_timeout: Duration | None = None
    #: the CA bundle provider certificates are verified with
    upstream_tls_ca_path: str | None = None
    #: signal analysis does not exist here: true is what happens anyway
    disable_signals: Literal[True] | None = None

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: object) -> object:
        if isinstance(data, dict):
            for key, why in _UNSUPPORTED_OVERRIDES.items():
                if key in data:
                    raise ValueError(f"{key} is not supported by plano-extproc ({why})")
            if "router_model" in data:  # plano's older name
                if "llm_routing_model" in data:
                    raise ValueError("router_model is the older name of llm_routing_model: set one of them")
                data = {**data, "llm_routing_model": data["router_model"]}
                del data["router_model"]
        return data


_UNSUPPORTED_OVERRIDES = {
    "prompt_target_intent_matching_threshold": "prompt targets are not part of this gateway",
    "optimize_context_window": "the gateway does not rewrite conversations",
    "use_agent_orchestrator": "agent orchestration is not part of this gateway",
    "agent_orchestration_model": "agent orchestration is not part of this gateway",
    "empty_pool_behavior": "capability filtering of a route's models is not part of this gateway",
    "orchestrator_model": "agent orchestration is not part of this gateway",
    "model_capabilities_source": "capability filtering of a route's models is not part of this gateway",
}


class TritonTuning(_Strict):
    max_tokens: int = Field(default=16, ge=1, le=256)
    max_concurrency: int = Field(default=64, ge=1, le=4096)


class OpenAIRouterTuning(_Strict):
    api_key: SecretStr | None = None
    temperature: float = Field(default=0.01, ge=0.0, le=2.0)
    max_tokens: int = Field(default=16, ge=1, le=256)


class RouterConfig(_Strict):
    backend: Literal["embedded", "triton", "openai"] = "embedded"
    url: str | None = None
    model: str | None = None
    timeout_ms: int = Field(default=1000, ge=1, le=120_000)
    #: token budget of the Arch-Router prompt (estimated as bytes // 4); the conversation is cut to fit
    prompt_max_tokens: int = Field(default=2048, ge=256, le=131072)
    #: who decides when the configured router fails: the embedded router, or nobody (request/default model)
    fallback: Literal["embedded", "default"] = "embedded"
    #: consecutive failures that open the circuit breaker, and how long it stays open before a probe
    breaker_failures: int = Field(default=3, ge=1, le=1000)
    breaker_open_seconds: float = Field(default=10.0, gt=0, le=3600)
    #: identical (routes, conversation) pairs within this many seconds reuse the router's answer; 0 = off
    decision_cache_seconds: float = Field(default=60.0, ge=0, le=86400)
    decision_cache_entries: int = Field(default=10_000, ge=1)
    embedded: EmbeddedRouterSettings = EmbeddedRouterSettings()
    triton: TritonTuning = TritonTuning()
    openai: OpenAIRouterTuning = OpenAIRouterTuning()


#: request headers whose value pins a session (X-Model-Affinity, its older demo name, Claude Code's own)
DEFAULT_SESSION_HEADERS = ("x-model-affinity", "x-session-id", "x-claude-code-session-id")

#: an HTTP header name (RFC 9110 token)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class SessionCacheConfig(_Strict):
    """plano's ``routing.session_cache``: where X-Model-Affinity pins live. ``memory`` (default) is this
    process's own LRU; ``redis`` is shared by every replica pointed at the same server (affinity.py)."""

    type: Literal["memory", "redis"] = "memory"
    #: redis://[:password@]host:port[/db], rediss:// (TLS) or unix:///path; a $ENV_VAR reference is resolved
    url: str | None = None
    #: a request header whose value scopes the pins: keys plano:affinity:{tenant}:{session}
    tenant_header: str | None = None
    #: beyond plano: the bound on every Redis call (a slow or hung Redis costs a request at most this)
    timeout_ms: int = Field(default=250, ge=1, le=10_000)

    @field_validator("tenant_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _HEADER_NAME.match(value) or value.startswith(":"):
            raise ValueError(f"'{value}' is not an HTTP header name")
        return value.lower()

    def problems(self) -> list[str]:
        """What is wrong with this block, each with its path (checked where the paths are known)."""
        where = "routing.session_cache"
        if self.type == "redis":
            if not self.url:
                return [f"{where}.url: required when type is redis (e.g. redis://redis:6379)"]
            if not self.url.startswith("$") and not self.url.startswith(_REDIS_SCHEMES):
                return [f"{where}.url: must start with redis://, rediss:// or unix:// (or be a $ENV_VAR reference)"]
            return []
        return [
            f"{where}.{key}: only used with type: redis (the memory cache is this process's own)"
            for key in ("url", "timeout_ms")
            if key in self.model_fields_set
        ]


class RoutingConfig(_Strict):
    session_ttl_seconds: float = Field(default=600, gt=0)
    #: the bound of the in-process (memory) pin cache; Redis is bounded by the TTL and its own maxmemory
    session_max_entries: int = Field(default=10_000, ge=1)
    session_cache: SessionCacheConfig = SessionCacheConfig()
    #: the first of these headers a request carries is its affinity id
    session_headers: tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")], ...] = Field(default=DEFAULT_SESSION_HEADERS, min_length=1)

    @field_validator("session_headers")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(h.lower() for h in value)

    router: RouterConfig = RouterConfig()
    #: plano's turn-level routing switch; false (plano's default, per-request routing) is what happens here
    route_on_user_only: Literal[False] = False

    @field_validator("route_on_user_only", mode="before")
    @classmethod
    def _turn_level(cls, value: object) -> object:
        if value is True:
            raise ValueError(
                "true (turn-level pinning) is not supported by plano-extproc: every request is routed, and a request "
                "whose latest message is a tool result is routed on its latest user turn (the same route while the "
                "decision cache holds it); send X-Model-Affinity to pin a conversation to one model"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _older_router_keys(cls, data: object) -> object:
        if isinstance(data, dict):
            if "routing_budget" in data:
                raise ValueError(
                    "routing_budget is not supported by plano-extproc (per-session cost gate on model switches): "
                    "X-Model-Affinity pins a session to its first decision"
                )
            for key in ("llm_provider", "model", "model_provider"):
                if key in data:
                    raise ValueError(
                        f"{key} is not supported by plano-extproc (plano's hosted Arch-Router): name the router with "
                        "overrides.llm_routing_model (a declared model) or routing.router"
                    )
        return data


class SpanAttributes(_Strict):
    """plano's ``tracing.span_attributes``: extra attributes on every span."""

    #: request headers whose name starts with one of these become attributes of the ext_proc's spans, named
    #: as plano names them: the rest of the header name, dashes as dots (``x-user-`` + ``x-user-id`` -> ``id``)
    header_prefixes: tuple[str, ...] = ()
    #: attributes on every span, the ext_proc's and Envoy's
    static: dict[str, str] = Field(default_factory=dict)

    @field_validator("header_prefixes")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not p for p in value):
            raise ValueError("a header prefix must not be empty")
        return tuple(p.lower() for p in value)


#: where plano sends traces when its tracing block names no collector (its CLI's trace listener)
PLANO_DEFAULT_TRACING_GRPC = "http://localhost:4317"


class TracingConfig(_Strict):
    """OpenTelemetry export: our keys and plano's (docs/plano-compatibility.md, "tracing"). After parsing
    the two are resolved into one another: ``sampling_ratio``, ``envoy_otlp_grpc`` and
    ``opentracing_grpc_endpoint`` hold what is in force."""

    #: the ext_proc's spans over OTLP/HTTP (e.g. http://otel-collector:4318)
    otlp_endpoint: str | None = None
    #: Envoy's own spans go to the same collector over OTLP/gRPC when this is set (host:port, e.g. :4317)
    envoy_otlp_grpc: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+:\d{1,5}$")
    service_name: str = "plano-extproc"
    sampling_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    # ---- plano's keys
    #: percent of traces sampled (plano); sampling_ratio = random_sampling / 100
    random_sampling: int | None = Field(default=None, ge=0, le=100)
    #: OTLP/gRPC collector (http://host:port) for Envoy's spans and the ext_proc's (plano)
    opentracing_grpc_endpoint: str | None = None
    #: plano: spans of its internal calls; here the router call's span (plano.router). Unset: exported.
    trace_arch_internal: bool | None = None
    span_attributes: SpanAttributes = SpanAttributes()

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: object) -> object:
        if isinstance(data, dict) and "span_attribute_header_prefixes" in data:
            # plano's older spelling of span_attributes.header_prefixes
            if "span_attributes" in data:
                raise ValueError("span_attribute_header_prefixes is the older name of span_attributes.header_prefixes: set one of them")
            data = dict(data)
            data["span_attributes"] = {"header_prefixes": data.pop("span_attribute_header_prefixes")}
        if isinstance(data, dict) and "exporters" in data:
            raise ValueError(
                "exporters is not supported by plano-extproc (PostHog export): spans go to an OTLP collector, "
                "opentracing_grpc_endpoint (OTLP/gRPC) or otlp_endpoint (OTLP/HTTP)"
            )
        return data

    @property
    def enabled(self) -> bool:
        """The ext_proc exports spans."""
        return bool(self.otlp_endpoint or self.opentracing_grpc_endpoint)

    @property
    def router_spans(self) -> bool:
        return self.trace_arch_internal is not False


def _grpc_host_port(url: str) -> str | None:
    """``http://host:port`` (plano's opentracing_grpc_endpoint) -> ``host:port``; None when it is not one."""
    match = re.fullmatch(r"http://([A-Za-z0-9_.-]+)(?::(\d{1,5}))?/?", url.strip())
    if not match:
        return None
    return f"{match.group(1)}:{match.group(2) or 80}"


def _resolve_tracing(tracing: TracingConfig, env: Mapping[str, str], errors: list[str]) -> TracingConfig:
    """One set of tracing settings from our keys and plano's, as plano resolves its own: the collector is
    opentracing_grpc_endpoint (``$VAR`` expanded), else $OTEL_TRACING_GRPC_ENDPOINT, else localhost:4317
    — once any plano tracing key is present."""
    where = "tracing"
    update: dict[str, Any] = {}
    given = tracing.model_fields_set
    if tracing.random_sampling is not None:
        ratio = tracing.random_sampling / 100
        if "sampling_ratio" in given and abs(ratio - tracing.sampling_ratio) > 1e-9:
            errors.append(f"{where}.random_sampling: {tracing.random_sampling} % disagrees with sampling_ratio {tracing.sampling_ratio}; set one of them")
        update["sampling_ratio"] = ratio
    plano_keys = given & {"random_sampling", "opentracing_grpc_endpoint", "trace_arch_internal", "span_attributes"}
    endpoint = tracing.opentracing_grpc_endpoint
    if endpoint is None and plano_keys:
        endpoint = env.get("OTEL_TRACING_GRPC_ENDPOINT") or PLANO_DEFAULT_TRACING_GRPC
    if endpoint is not None:
        endpoint = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), m.group(0)), endpoint)
        host_port = _grpc_host_port(endpoint)
        if host_port is None:
            errors.append(f"{where}.opentracing_grpc_endpoint: '{endpoint}' must be http://host:port (plano's rule: scheme http, no path)")
        else:
            if tracing.envoy_otlp_grpc is not None and tracing.envoy_otlp_grpc != host_port:
                errors.append(f"{where}.opentracing_grpc_endpoint: names another collector than envoy_otlp_grpc ({tracing.envoy_otlp_grpc}); set one of them")
            update["envoy_otlp_grpc"] = host_port
            update["opentracing_grpc_endpoint"] = f"http://{host_port}"
    return tracing.model_copy(update=update) if update else tracing


class ObservabilityConfig(_Strict):
    """What the response path reports. `bodies`: status, timing and token usage (Envoy's access logs and
    json_to_metadata; streamed answers also pass an async observer); `headers`: status and timing only
    (access logs), no time to first token or tokens; `off`: no response observation (request side metrics
    stay). Measured cost: bench/README.md."""

    responses: Literal["bodies", "headers", "off"] = "bodies"

    @field_validator("responses", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted `off` as false (and `on` as true)
        return {False: "off", True: "bodies"}.get(value, value) if isinstance(value, bool) else value


#: plano's cost catalog (DigitalOcean's Gradient model catalog)
DIGITALOCEAN_CATALOG_URL = "https://api.digitalocean.com/v2/gen-ai/models/catalog"


class Price(_Strict):
    """USD per million tokens; a model's cost for ranking is input + output, as plano ranks DigitalOcean's."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)

    @property
    def rank_value(self) -> float:
        return self.input_per_million + self.output_per_million


class CostSource(_Strict):
    """``model_metrics_sources[]`` of ``type: cost``: a catalog fetched (``digitalocean``) or a price table
    written in the config (``static``, ours)."""

    type: Literal["cost"]
    provider: Literal["digitalocean", "static"]
    #: seconds between catalog fetches; unset: fetched once at start-up (plano)
    refresh_interval: int | None = Field(default=None, ge=1)
    #: catalog key (DigitalOcean's model_id) -> the model name routes use
    model_aliases: dict[str, str] = Field(default_factory=dict)
    #: where the catalog is fetched from (ours; default DigitalOcean's public catalog)
    url: str | None = None
    #: sent as Authorization: Bearer (DigitalOcean's catalog wants a personal access token; ours)
    access_key: SecretStr | None = None
    #: ``static``: model -> price
    prices: dict[str, Price] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _shape(self) -> CostSource:
        if self.provider == "static":
            extra = [k for k in ("refresh_interval", "model_aliases", "url", "access_key") if k in self.model_fields_set]
            if extra:
                raise ValueError(f"{', '.join(extra)}: only for a fetched catalog (provider: digitalocean); a static table has only prices")
            if not self.prices:
                raise ValueError("prices: a static cost source needs at least one model's price")
        elif self.prices:
            raise ValueError("prices: only for provider: static (a catalog brings its own prices)")
        if self.url is not None and not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError(f"url: '{self.url}' must be an http:// or https:// URL")
        return self

    @property
    def catalog_url(self) -> str:
        return self.url or DIGITALOCEAN_CATALOG_URL


class LatencySource(_Strict):
    """``model_metrics_sources[]`` of ``type: latency``: a Prometheus query (plano), or the gateway's own
    measurements of each model (``gateway``, ours)."""

    type: Literal["latency"]
    provider: Literal["prometheus", "gateway"]
    #: Prometheus: its base URL; the instant query goes to {url}/api/v1/query
    url: str | None = None
    #: Prometheus: one series per model, labelled model_name (plano) or model; lower is faster
    query: str | None = None
    #: seconds between queries (prometheus; unset: once at start-up) or snapshot updates (gateway; default 5)
    refresh_interval: int | None = Field(default=None, ge=1)
    #: gateway: what is measured, from the request's start: the first response byte, or the whole answer
    measure: Literal["time_to_first_token", "total"] = "time_to_first_token"
    #: gateway: answers older than this do not count
    window_seconds: float = Field(default=300.0, gt=0, le=86400)
    #: gateway: the latest answers per model that count (their median is the model's latency)
    samples: int = Field(default=20, ge=1, le=10_000)

    @model_validator(mode="after")
    def _shape(self) -> LatencySource:
        if self.provider == "prometheus":
            missing = [k for k in ("url", "query") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"{' and '.join(missing)}: required for provider: prometheus")
            extra = [k for k in ("measure", "window_seconds", "samples") if k in self.model_fields_set]
            if extra:
                raise ValueError(f"{', '.join(extra)}: only for provider: gateway (a Prometheus query says what it measures)")
            assert self.url is not None
            if not re.match(r"^https?://[^/\s]+", self.url):
                raise ValueError(f"url: '{self.url}' must be an http:// or https:// URL")
        else:
            extra = [k for k in ("url", "query") if k in self.model_fields_set]
            if extra:
                raise ValueError(f"{', '.join(extra)}: only for provider: prometheus (the gateway measures its own answers)")
        return self

    @property
    def interval_seconds(self) -> float | None:
        if self.refresh_interval is not None:
            return float(self.refresh_interval)
        return 5.0 if self.provider == "gateway" else None


MetricsSource = CostSource | LatencySource
#: plano's older model_metrics_sources types -> (type, provider)
_OLDER_SOURCE_TYPES = {"digitalocean_pricing": ("cost", "digitalocean"), "prometheus_metrics": ("latency", "prometheus")}


def _metrics_sources(raw: Any, errors: list[str]) -> tuple[CostSource | None, LatencySource | None]:
    """``model_metrics_sources``: at most one source of each type (plano's rule), each validated with its path."""
    if raw is None:
        return None, None
    if not isinstance(raw, list):
        errors.append("model_metrics_sources: must be a list of {type: cost | latency, provider, ...}")
        return None, None
    found: dict[str, CostSource | LatencySource] = {}
    for i, body in enumerate(raw):
        where = f"model_metrics_sources[{i}]"
        kind = body.get("type") if isinstance(body, dict) else None
        if isinstance(body, dict) and kind in _OLDER_SOURCE_TYPES:
            # plano's older spellings, one type per provider
            kind, provider = _OLDER_SOURCE_TYPES[str(kind)]
            body = {**body, "type": kind, "provider": provider}
        elif kind == "cost" and isinstance(body, dict) and body.get("provider") == "models.dev":
            errors.append(
                f"{where}.provider: 'models.dev' is not supported by plano-extproc: use digitalocean (a catalog of "
                "DigitalOcean's shape, fetched from any url) or static (a price table in the config)"
            )
            continue
        elif kind == "cost_metrics":
            errors.append(
                f"{where}.type: cost_metrics (a flat JSON price map) is not supported by plano-extproc: use "
                "{type: cost, provider: digitalocean, url: ...} for a fetched catalog or provider: static for a table"
            )
            continue
        if kind not in ("cost", "latency"):
            errors.append(f"{where}.type: must be cost or latency")
            continue
        try:
            source: CostSource | LatencySource = (CostSource if kind == "cost" else LatencySource).model_validate(body)
        except ValidationError as exc:
            errors.extend(_under(where, m) for m in _pydantic_errors(exc))
            continue
        if source.type in found:
            errors.append(f"{where}: only one {source.type} metrics source is allowed")
            continue
        found[source.type] = source
    cost, latency = found.get("cost"), found.get("latency")
    return (cost if isinstance(cost, CostSource) else None), (latency if isinstance(latency, LatencySource) else None)


class ClientKey(_Strict):
    """A key clients present to use the gateway (never forwarded to a provider)."""

    #: a label for logs (never the key itself)
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    #: the key, usually a `$VAR` reference
    key: SecretStr
    #: when given, the only models this key may use (a decision is narrowed to them)
    models: tuple[str, ...] | None = Field(default=None, min_length=1)
    #: when given, the only configured routes this key may be routed by
    routes: tuple[str, ...] | None = Field(default=None, min_length=1)


class ClientAuth(_Strict):
    """Client authentication: with keys, a request without a valid one is answered 401 (README, "Security")."""

    keys: tuple[ClientKey, ...] = ()
    #: a directory of key files, e.g. a mounted Kubernetes Secret: each file's name is a key's name and its
    #: content the key (no model or route limits); read at start-up
    keys_dir: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.keys) or self.keys_dir is not None


class _RawConfig(_Strict):
    version: str
    #: list form or the older object form; validated by _normalise_listeners to name paths precisely
    listeners: Any = None
    model_providers: list[ProviderConfig] = Field(min_length=1)
    routing_preferences: tuple[RoutePreference, ...] = ()
    model_aliases: dict[str, ModelAlias] = Field(default_factory=dict)
    routing: RoutingConfig = RoutingConfig()
    tracing: TracingConfig = TracingConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    overrides: Overrides = Overrides()
    client_auth: ClientAuth = ClientAuth()
    #: validated by _metrics_sources to name each source's path
    model_metrics_sources: Any = None
    #: plano's gateway mode: this gateway is the LLM gateway
    mode: Literal["llm"] | None = None

    @field_validator("mode", mode="before")
    @classmethod
    def _prompt_mode(cls, value: object) -> object:
        if value == "prompt":
            raise ValueError("'prompt' (prompt targets) is not supported by plano-extproc; it is an LLM gateway (mode: llm)")
        return value


#: providers plano serves through something of its own, with the reason
_UNSUPPORTED_PROVIDERS = {
    "claude-cli": "plano runs the Claude Code CLI as a provider; this gateway calls provider APIs only",
    "chatgpt": "plano signs in with a ChatGPT subscription; this gateway calls provider APIs with keys",
}

#: plano's top-level keys for what this gateway does not do, with the reason given for each
UNSUPPORTED_TOP_LEVEL = {
    "agents": "agent orchestration is not part of this gateway",
    "filters": "filter chains (MCP / HTTP filters) are not part of this gateway",
    "endpoints": "prompt-target endpoints are not part of this gateway; providers are reached at their base_url",
    "system_prompt": "prompt targets are not part of this gateway; the gateway does not rewrite conversations",
    "prompt_targets": "prompt targets (function calling) are not part of this gateway",
    "prompt_guards": "prompt guards are not part of this gateway",
    "ratelimits": "token rate limits are not enforced by this gateway; providers' 429s fall over to the next model",
    "state_storage": "conversation state (Responses previous_response_id) is kept by the provider, not the gateway",
    "prompt_caching": "prompt-caching orchestration is not part of this gateway",
}
#: the version values plano's schema allows
PLANO_VERSIONS = ("v0.1", "v0.1.0", "0.1-beta", "0.2.0", "v0.3.0", "v0.4.0")


@dataclass(frozen=True)
class PlanoConfig:
    """A validated, migrated config. Lookups the request path needs are precomputed once here."""

    version: str
    listeners: tuple[Listener, ...]
    providers: tuple[ProviderConfig, ...]
    routing_preferences: tuple[RoutePreference, ...]
    model_aliases: Mapping[str, str]
    routing: RoutingConfig
    #: None only when every declared entry is a vendor/* wildcard: a request must then name its model
    default_model: str | None
    tracing: TracingConfig = field(default_factory=TracingConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    overrides: Overrides = field(default_factory=Overrides)
    client_auth: ClientAuth = field(default_factory=ClientAuth)
    warnings: tuple[str, ...] = ()
    #: full model name ("openai/gpt-4o") -> provider entry
    by_model: Mapping[str, ProviderConfig] = field(default_factory=dict)
    #: every spelling a client may use ("gpt-4o", "openai/gpt-4o", aliases) -> full model name
    model_lookup: Mapping[str, str] = field(default_factory=dict)
    #: vendor -> its wildcard entry ("openai" -> "openai/*"): any "openai/<id>" is served by it
    wildcards: Mapping[str, str] = field(default_factory=dict)
    #: model_metrics_sources: the cost and the latency source (at most one each)
    cost_source: CostSource | None = None
    latency_source: LatencySource | None = None

    @property
    def listener(self) -> Listener:
        """The one listener served (validation allows exactly one)."""
        return self.listeners[0]

    @property
    def listener_port(self) -> int:
        return self.listener.port

    @property
    def listener_address(self) -> str:
        return self.listener.address

    def resolve_model(self, requested: str | None) -> str | None:
        """The model a client's `model` value names: a declared one (directly, by bare id, or by alias), or
        ``vendor/<id>`` served by a ``vendor/*`` wildcard entry (the id passed through as given)."""
        if not requested:
            return None
        found = self.model_lookup.get(requested)
        if found is not None:
            return found
        vendor, sep, model_id = requested.partition("/")
        if sep and model_id and model_id != "*" and vendor in self.wildcards:
            return requested
        return None

    def entry_of(self, model: str) -> str | None:
        """The declared provider entry that serves `model` (a full name): itself, or its vendor's wildcard."""
        if model in self.by_model:
            return model
        vendor, sep, model_id = model.partition("/")
        return self.wildcards.get(vendor) if sep and model_id else None

    def provider_of(self, model: str) -> ProviderConfig | None:
        entry = self.entry_of(model)
        return self.by_model[entry] if entry is not None else None


# --------------------------------------------------------------------------------------------- parsing


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML silently keeps the last of two equal keys; a config typo like that must be an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _pydantic_errors(error: ValidationError) -> list[str]:
    messages = []
    for item in error.errors(include_url=False, include_input=False):
        # Drop pydantic's union-branch tags ("list[Listener]") so paths read like the YAML.
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        messages.append(f"{_format_loc(loc)}: {msg}")
    return messages


def _under(where: str, message: str) -> str:
    """A nested model's error message, with its path under `where`."""
    top = "(top level): "
    return f"{where}: {message[len(top):]}" if message.startswith(top) else f"{where}.{message}"


def _parse_version(raw: Any) -> tuple[int, ...] | None:
    text = str(raw).strip()
    if text == "0.1-beta":  # in plano's enum
        return (0, 1, 0)
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return None
    return tuple(int(g or 0) for g in match.groups())


def _normalise_listeners(raw: Any, errors: list[str]) -> tuple[Listener, ...]:
    if raw is None:
        return (Listener(),)
    entries: list[tuple[str, str | None, Any]]
    if isinstance(raw, list):
        entries = [(f"listeners[{i}]", None, body) for i, body in enumerate(raw)]
    elif isinstance(raw, dict):
        # Older object form: {egress_traffic: {...}, ingress_traffic: {...}}
        entries = [(f"listeners.{name}", name, body) for name, body in raw.items()]
    else:
        errors.append("listeners: must be a list of listeners or the older {egress_traffic: {...}} mapping")
        return (Listener(),)
    listeners = []
    for where, name, body in entries:
        if not isinstance(body, dict):
            errors.append(f"{where}: must be a mapping")
            continue
        if name is not None:
            body = {"name": name, "type": "model" if name == "egress_traffic" else "prompt", **body}
        if body.get("type") in ("prompt", "agent"):
            # one error for the listener, not one per key of a kind of listener this gateway does not have
            errors.append(f"{where}.type: '{body['type']}' listeners (prompt targets, agents) are not supported by plano-extproc; it serves type: model")
            continue
        try:
            listeners.append(Listener.model_validate(body))
        except ValidationError as exc:
            errors.extend(_under(where, m) for m in _pydantic_errors(exc))
    if len(listeners) > 1:
        errors.append(f"listeners: {len(listeners)} model listeners; plano-extproc serves one (one Envoy listener per gateway)")
    return tuple(listeners[:1]) or (Listener(),)


_ENV_REF = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$")


_ENV_IN_TEXT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def _expand_url(url: str, env: Mapping[str, str], where: str, errors: list[str], *, strict: bool) -> str:
    """``$VAR`` / ``${VAR}`` in a base_url from the environment (plano's e2e configs put ports there). A
    variable that is not set is an error when secrets are resolved (start-up), else left for later."""
    missing: list[str] = []

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if env.get(name):
            return env[name]
        missing.append(name)
        return match.group(0)

    expanded = _ENV_IN_TEXT.sub(value, url)
    if missing and strict:
        errors.append(f"{where}: environment variable ${missing[0]} is not set")
    elif not missing:
        try:
            _ = urlsplit(expanded).port
        except ValueError:
            errors.append(f"{where}: '{expanded}' has no valid port")
    return expanded


def _resolve_secret(secret: SecretStr | None, env: Mapping[str, str], where: str, errors: list[str]) -> SecretStr | None:
    if secret is None:
        return None
    match = _ENV_REF.match(secret.get_secret_value().strip())
    if not match:
        return secret
    name = match.group(1)
    if name not in env or env[name] == "":
        errors.append(f"{where}: environment variable ${name} is not set")
        return None
    return SecretStr(env[name])


def parse_config(text: str, env: Mapping[str, str] | None = None, *, resolve_secrets: bool = True) -> PlanoConfig:
    """Validate a config file's text. Raises ConfigError listing every problem with its path."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError([f"(top level): {problem}{where}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(["(top level): the config must be a mapping of keys such as version, model_providers"])

    errors: list[str] = []
    data = dict(data)
    if "llm_providers" in data:
        if "model_providers" in data:
            errors.append("llm_providers: use either model_providers or its older name llm_providers, not both")
        else:
            data["model_providers"] = data.pop("llm_providers")

    for key, why in UNSUPPORTED_TOP_LEVEL.items():
        if key in data:
            errors.append(f"{key}: not supported by plano-extproc ({why})")
            del data[key]
    version = _parse_version(data.get("version"))
    if "version" not in data:
        errors.append("version: missing; say which plano config format this file is (version: v0.4.0)")
        data["version"] = "v0.4.0"  # so that the rest is still checked, without a second error about it
    elif version is None:
        errors.append(f"version: '{data.get('version')}' is not a version like v0.4.0 (plano's: {', '.join(PLANO_VERSIONS)})")
    elif version[:2] > CURRENT_VERSION[:2]:
        errors.append(f"version: {data.get('version')} is newer than the supported v0.4.0")
    elif version < CURRENT_VERSION and data.get("routing_preferences"):
        errors.append(
            f"routing_preferences: top-level routing_preferences need version v0.4.0 (this file says "
            f"{data.get('version')}); set version: v0.4.0 or declare routes under each provider"
        )
    if "version" in data:
        data["version"] = str(data["version"])

    try:
        raw = _RawConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(errors + _pydantic_errors(exc)) from None
    try:
        config = _build(raw, env if env is not None else {}, resolve_secrets)
    except ConfigError as exc:  # every problem at once, the early ones first
        raise ConfigError(errors + exc.errors) from None
    if errors:
        raise ConfigError(errors)
    return config


def _build(raw: _RawConfig, env: Mapping[str, str], resolve_secrets: bool) -> PlanoConfig:
    errors: list[str] = []
    warnings: list[str] = []
    listeners = _normalise_listeners(raw.listeners, errors)

    providers: list[ProviderConfig] = []
    by_model: dict[str, ProviderConfig] = {}
    #: bare id or provider name -> (the model that declared it, where)
    bare_ids: dict[str, tuple[str, str]] = {}
    wildcards: dict[str, str] = {}
    for i, p in enumerate(raw.model_providers):
        where = f"model_providers[{i}]"
        if p.model in by_model:
            errors.append(f"{where}.model: '{p.model}' is declared twice")
        if p.wildcard:
            # plano's rules for vendor/* entries
            if p.default:
                errors.append(f"{where}.default: '{p.model}' is a wildcard; a default model must be one model")
            if p.routing_preferences:
                errors.append(f"{where}.routing_preferences: '{p.model}' is a wildcard; routes name models")
            wildcards.setdefault(p.provider, p.model)
        if p.provider in _UNSUPPORTED_PROVIDERS and p.base_url is None:
            errors.append(f"{where}.model: provider '{p.provider}' is not supported by plano-extproc ({_UNSUPPORTED_PROVIDERS[p.provider]})")
        elif p.interface not in PROVIDERS and p.base_url is None:
            errors.append(
                f"{where}.model: unknown provider '{p.provider}'; known: {', '.join(sorted(PROVIDERS))} "
                "(any OpenAI-compatible server works with base_url set)"
            )
        needs_url = any(n in PROVIDERS and PROVIDERS[n].requires_base_url for n in (p.provider, p.interface))
        if needs_url and p.base_url is None:
            errors.append(f"{where}.base_url: required for provider '{p.provider}'")
        if resolve_secrets:
            key = _resolve_secret(p.access_key, env, f"{where}.access_key (provider {p.model})", errors)
            p = p.model_copy(update={"access_key": key})
        if p.base_url is not None and "$" in p.base_url:
            p = p.model_copy(update={"base_url": _expand_url(p.base_url, env, f"{where}.base_url", errors, strict=resolve_secrets)})
        if resolve_secrets and p.passthrough_auth and p.access_key is not None:
            warnings.append(
                f"{where}: passthrough_auth is set, so access_key is never used: the client's own credentials "
                "go to this provider (plano's rule)"
            )
        providers.append(p)
        by_model[p.model] = p
        # A bare id (or a provider's name) must name one model: plano rejects the config otherwise, since a
        # request for it could mean either.
        names = [] if p.wildcard else [("model id", p.model_id)]
        if p.name and p.name != p.model:
            names.append(("name", p.name))
        for kind, bare in names:
            if bare in bare_ids and bare_ids[bare][0] != p.model:
                other, other_where = bare_ids[bare]
                errors.append(
                    f"{where}.{'model' if kind == 'model id' else 'name'}: {kind} '{bare}' is also declared by {other} "
                    f"({other_where}); a request for '{bare}' would be ambiguous (plano rejects duplicate model ids)"
                )
            else:
                bare_ids[bare] = (p.model, where)

    defaults = [p.model for p in providers if p.default]
    if len(defaults) > 1:
        errors.append(f"model_providers: only one provider may be default: true (found {', '.join(defaults)})")
    # Rule when none is marked: the first declared model is the default (a wildcard is no one model).
    concrete = [p.model for p in providers if not p.wildcard]
    default_model = defaults[0] if defaults else (concrete[0] if concrete else None)

    lookup: dict[str, str] = {bare: full for bare, (full, _) in bare_ids.items()}
    lookup.update({m: m for m in by_model if not by_model[m].wildcard})

    aliases: dict[str, str] = {}
    for alias, spec in raw.model_aliases.items():
        target = _lookup_model(spec.target, lookup, wildcards)
        if target is None:
            errors.append(f"model_aliases.{alias}.target: '{spec.target}' is not declared in model_providers")
            continue
        aliases[alias] = target
    for alias, target in aliases.items():
        lookup.setdefault(alias, target)

    prefs = list(raw.routing_preferences)
    legacy: dict[str, RoutePreference] = {}
    for i, p in enumerate(raw.model_providers):
        for old_style in p.routing_preferences:
            if prefs:
                errors.append(
                    f"model_providers[{i}].routing_preferences: routes are declared at the top level already; "
                    "move this one there too"
                )
                break
            if old_style.name in legacy:
                old = legacy[old_style.name]
                legacy[old_style.name] = old.model_copy(update={"models": (*old.models, p.model)})
            else:
                legacy[old_style.name] = RoutePreference(name=old_style.name, description=old_style.description, models=(p.model,))
    if legacy and not prefs:
        warnings.append(
            "model_providers[].routing_preferences is deprecated: moved "
            f"{len(legacy)} route(s) ({', '.join(legacy)}) to top-level routing_preferences"
        )
        prefs = list(legacy.values())

    seen: set[str] = set()
    resolved_prefs = []
    for i, pref in enumerate(prefs):
        if pref.name in seen:
            errors.append(f"routing_preferences[{i}].name: '{pref.name}' is used by another route already")
        seen.add(pref.name)
        models = []
        for j, model in enumerate(pref.models):
            full = _lookup_model(model, lookup, wildcards)
            if full is None:
                errors.append(f"routing_preferences[{i}].models[{j}]: '{model}' is not declared in model_providers")
            elif full in models:
                errors.append(f"routing_preferences[{i}].models[{j}]: '{model}' is listed twice in this route")
            else:
                models.append(full)
        resolved_prefs.append(pref.model_copy(update={"models": tuple(models)}))

    cost_source, latency_source = _metrics_sources(raw.model_metrics_sources, errors)
    for i, pref in enumerate(resolved_prefs):
        missing = missing_metrics_source(pref.prefer, cost_source, latency_source)
        if missing:
            errors.append(f"routing_preferences[{i}].selection_policy.prefer: {missing}")
    if resolve_secrets and cost_source is not None and cost_source.access_key is not None:
        key = _resolve_secret(cost_source.access_key, env, "model_metrics_sources (cost).access_key", errors)
        cost_source = cost_source.model_copy(update={"access_key": key})
    tracing = _resolve_tracing(raw.tracing, env, errors)

    router = raw.routing.router
    overrides = raw.overrides
    if overrides.orchestrator_model_context_length is not None:
        router = router.model_copy(update={"prompt_max_tokens": overrides.orchestrator_model_context_length})
    if overrides.llm_routing_model is not None:
        router = _router_from_model(overrides.llm_routing_model, router, lookup, by_model, errors)
    if router.backend in ("triton", "openai") and not router.url:
        errors.append(f"routing.router.url: required for backend '{router.backend}'")
    if router.backend == "triton" and not router.model:
        errors.append("routing.router.model: required for backend 'triton' (the served model name)")
    if resolve_secrets and router.openai.api_key is not None:
        key = _resolve_secret(router.openai.api_key, env, "routing.router.openai.api_key", errors)
        router = router.model_copy(update={"openai": router.openai.model_copy(update={"api_key": key})})

    client_auth = _client_auth(raw.client_auth, providers, lookup, {p.name for p in resolved_prefs}, env, resolve_secrets, errors)
    routing = raw.routing.model_copy(update={"router": router})
    errors.extend(routing.session_cache.problems())
    session_url = routing.session_cache.url
    if resolve_secrets and session_url is not None and _ENV_REF.match(session_url.strip()):
        resolved = _resolve_secret(SecretStr(session_url), env, "routing.session_cache.url", errors)
        if resolved is not None:
            url = resolved.get_secret_value()
            if not url.startswith(_REDIS_SCHEMES):
                errors.append("routing.session_cache.url: the environment variable's value must start with redis://, rediss:// or unix://")
            routing = routing.model_copy(update={"session_cache": routing.session_cache.model_copy(update={"url": url})})

    if errors:
        raise ConfigError(errors)
    return PlanoConfig(
        version=raw.version,
        listeners=listeners,
        providers=tuple(providers),
        routing_preferences=tuple(resolved_prefs),
        model_aliases=aliases,
        routing=routing,
        default_model=default_model,
        tracing=tracing,
        observability=raw.observability,
        overrides=raw.overrides,
        client_auth=client_auth,
        warnings=tuple(warnings),
        by_model=by_model,
        model_lookup=lookup,
        wildcards=wildcards,
        cost_source=cost_source,
        latency_source=latency_source,
    )


def _lookup_model(name: str, lookup: Mapping[str, str], wildcards: Mapping[str, str]) -> str | None:
    found = lookup.get(name)
    if found is not None:
        return found
    vendor, sep, model_id = name.partition("/")
    return name if sep and model_id and model_id != "*" and vendor in wildcards else None


def missing_metrics_source(prefer: str, cost: CostSource | None, latency: LatencySource | None) -> str | None:
    """Why a selection policy cannot work with these sources (plano: a start-up error), else None."""
    if prefer == "cheapest" and cost is None:
        return "cheapest needs a cost source: add {type: cost, ...} to model_metrics_sources"
    if prefer == "fastest" and latency is None:
        return "fastest needs a latency source: add {type: latency, ...} to model_metrics_sources"
    return None


#: the router models plano serves itself (katanemo's hosted endpoint) when no provider declares them
_PLANO_HOSTED_ROUTERS = frozenset({"plano-orchestrator", "arch-router", "arch/arch-router", "plano/plano-orchestrator"})


def _client_auth(
    auth: ClientAuth,
    providers: list[ProviderConfig],
    lookup: Mapping[str, str],
    route_names: set[str],
    env: Mapping[str, str],
    resolve_secrets: bool,
    errors: list[str],
) -> ClientAuth:
    if not auth.enabled:
        return auth
    passthrough = [p.model for p in providers if p.passthrough_auth]
    if passthrough:
        errors.append(
            f"client_auth: cannot be combined with passthrough_auth ({', '.join(passthrough)}): a client's key is the "
            "gateway's key then, and would reach a provider"
        )
    keys = []
    seen: set[str] = set()
    for i, entry in enumerate(auth.keys):
        where = f"client_auth.keys[{i}]"
        if entry.name in seen:
            errors.append(f"{where}.name: '{entry.name}' is used by another key already")
        seen.add(entry.name)
        models = None
        if entry.models is not None:
            models = tuple(lookup.get(m, m) for m in entry.models)
            for j, (given, full) in enumerate(zip(entry.models, models, strict=True)):
                if full not in lookup.values():
                    errors.append(f"{where}.models[{j}]: '{given}' is not declared in model_providers")
        for j, route in enumerate(entry.routes or ()):
            if route not in route_names:
                errors.append(f"{where}.routes[{j}]: '{route}' is not a configured route")
        key = _resolve_secret(entry.key, env, f"{where}.key", errors) if resolve_secrets else entry.key
        keys.append(entry.model_copy(update={"key": key, "models": models}))
    return auth.model_copy(update={"keys": tuple(keys)})


def _router_from_model(
    name: str, router: RouterConfig, lookup: Mapping[str, str], by_model: Mapping[str, ProviderConfig], errors: list[str]
) -> RouterConfig:
    """`overrides.llm_routing_model`: the router is that declared model, called as an OpenAI-compatible
    server (how plano serves Arch-Router: vLLM, Ollama, or a hosted endpoint)."""
    where = "overrides.llm_routing_model"
    full = lookup.get(name)
    if full is None:
        hosted = (
            " (plano's hosted router is not reachable from here: declare the router model, e.g. Arch-Router on "
            "vLLM or Ollama, as a model provider)"
            if name.lower() in _PLANO_HOSTED_ROUTERS
            else ""
        )
        errors.append(f"{where}: '{name}' is not declared in model_providers{hosted}")
        return router
    if "backend" in router.model_fields_set and router.backend != "openai":
        errors.append(f"{where}: conflicts with routing.router.backend: {router.backend} (set one of them)")
        return router
    provider = by_model[full]
    if provider.base_url:
        url = provider.base_url
    else:
        facts = PROVIDERS.get(provider.interface)
        if facts is None or facts.host is None:
            errors.append(f"{where}: '{full}' needs a base_url to be called as the router")
            return router
        url = f"https://{facts.host}{facts.prefix}"
    openai = router.openai.model_copy(update={"api_key": provider.access_key}) if provider.access_key else router.openai
    return router.model_copy(update={"backend": "openai", "url": url, "model": provider.model_id, "openai": openai})


def load_config(path: str | Path, env: Mapping[str, str] | None = None, *, resolve_secrets: bool = True) -> PlanoConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file ({exc.strerror})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: the config file is not UTF-8 text"]) from None
    return parse_config(text, env, resolve_secrets=resolve_secrets)
