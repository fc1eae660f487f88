"""The plano config file, v0.4.0 (DESIGN §5): parsing, validation with paths, migration, secrets.

Pure: `parse_config` takes the already-read YAML text and an environment mapping; `load_config` is the
only function that touches the file system.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from plano_extproc.providers import PROVIDERS
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
        return self.provider_interface or self.provider


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
        return data


_UNSUPPORTED_OVERRIDES = {
    "prompt_target_intent_matching_threshold": "prompt targets are not part of this gateway",
    "optimize_context_window": "the gateway does not rewrite conversations",
    "use_agent_orchestrator": "agent orchestration is not part of this gateway",
    "agent_orchestration_model": "agent orchestration is not part of this gateway",
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
    router: RouterConfig = RouterConfig()


class TracingConfig(_Strict):
    """OpenTelemetry export. Spans go to an OTLP/HTTP collector (e.g. http://otel-collector:4318)."""

    otlp_endpoint: str | None = None
    #: Envoy's own spans go to the same collector over OTLP/gRPC when this is set (host:port, e.g. :4317)
    envoy_otlp_grpc: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+:\d{1,5}$")
    service_name: str = "plano-extproc"
    sampling_ratio: float = Field(default=1.0, ge=0.0, le=1.0)


class ObservabilityConfig(_Strict):
    """What the response path reports. `bodies`: status, timing and token usage (an async observer reads
    every response); `headers`: status and timing only; `off`: no response observation (fastest; request
    side metrics stay). Measured cost: bench/README.md."""

    responses: Literal["bodies", "headers", "off"] = "bodies"

    @field_validator("responses", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted `off` as false (and `on` as true)
        return {False: "off", True: "bodies"}.get(value, value) if isinstance(value, bool) else value


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


@dataclass(frozen=True)
class PlanoConfig:
    """A validated, migrated config. Lookups the request path needs are precomputed once here."""

    version: str
    listeners: tuple[Listener, ...]
    providers: tuple[ProviderConfig, ...]
    routing_preferences: tuple[RoutePreference, ...]
    model_aliases: Mapping[str, str]
    routing: RoutingConfig
    default_model: str
    tracing: TracingConfig = field(default_factory=TracingConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    overrides: Overrides = field(default_factory=Overrides)
    warnings: tuple[str, ...] = ()
    #: full model name ("openai/gpt-4o") -> provider entry
    by_model: Mapping[str, ProviderConfig] = field(default_factory=dict)
    #: every spelling a client may use ("gpt-4o", "openai/gpt-4o", aliases) -> full model name
    model_lookup: Mapping[str, str] = field(default_factory=dict)

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
        """The declared model a client's `model` value names (directly, by bare id, or by alias)."""
        if not requested:
            return None
        return self.model_lookup.get(requested)


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


def _parse_version(raw: Any) -> tuple[int, ...] | None:
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?", str(raw).strip())
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
        try:
            listeners.append(Listener.model_validate(body))
        except ValidationError as exc:
            errors.extend(f"{where}.{m}" for m in _pydantic_errors(exc))
    if len(listeners) > 1:
        errors.append(f"listeners: {len(listeners)} model listeners; plano-extproc serves one (one Envoy listener per gateway)")
    return tuple(listeners[:1]) or (Listener(),)


_ENV_REF = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$")


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

    version = _parse_version(data.get("version"))
    if "version" not in data:
        errors.append("version: missing (this file format is v0.4.0)")
    elif version is None:
        errors.append(f"version: '{data.get('version')}' is not a version like v0.4.0")
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
    if errors:
        raise ConfigError(errors)
    return _build(raw, env if env is not None else {}, resolve_secrets)


def _build(raw: _RawConfig, env: Mapping[str, str], resolve_secrets: bool) -> PlanoConfig:
    errors: list[str] = []
    warnings: list[str] = []
    listeners = _normalise_listeners(raw.listeners, errors)

    providers: list[ProviderConfig] = []
    by_model: dict[str, ProviderConfig] = {}
    bare_ids: dict[str, list[str]] = {}
    for i, p in enumerate(raw.model_providers):
        where = f"model_providers[{i}]"
        if p.model in by_model:
            errors.append(f"{where}.model: '{p.model}' is declared twice")
        if p.interface not in PROVIDERS and p.base_url is None:
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
        providers.append(p)
        by_model[p.model] = p
        bare_ids.setdefault(p.model_id, []).append(p.model)
        if p.name:
            bare_ids.setdefault(p.name, []).append(p.model)

    defaults = [p.model for p in providers if p.default]
    if len(defaults) > 1:
        errors.append(f"model_providers: only one provider may be default: true (found {', '.join(defaults)})")
    # Rule when none is marked: the first declared provider is the default.
    default_model = defaults[0] if defaults else providers[0].model

    lookup: dict[str, str] = {}
    for bare, fulls in bare_ids.items():
        if len(fulls) == 1:
            lookup[bare] = fulls[0]
    lookup.update({m: m for m in by_model})

    aliases: dict[str, str] = {}
    for alias, spec in raw.model_aliases.items():
        target = lookup.get(spec.target)
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
            full = lookup.get(model)
            if full is None:
                errors.append(f"routing_preferences[{i}].models[{j}]: '{model}' is not declared in model_providers")
            else:
                models.append(full)
        resolved_prefs.append(pref.model_copy(update={"models": tuple(models)}))

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
        tracing=raw.tracing,
        observability=raw.observability,
        overrides=raw.overrides,
        warnings=tuple(warnings),
        by_model=by_model,
        model_lookup=lookup,
    )


def _router_from_model(
    name: str, router: RouterConfig, lookup: Mapping[str, str], by_model: Mapping[str, ProviderConfig], errors: list[str]
) -> RouterConfig:
    """`overrides.llm_routing_model`: the router is that declared model, called as an OpenAI-compatible
    server (how plano serves Arch-Router: vLLM, Ollama, or a hosted endpoint)."""
    where = "overrides.llm_routing_model"
    full = lookup.get(name)
    if full is None:
        errors.append(f"{where}: '{name}' is not declared in model_providers")
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
