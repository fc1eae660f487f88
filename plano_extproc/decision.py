"""Pure decision logic: (config, parsed request, router outcome, affinity entry) -> Decision.

The rules (also in README.md, "How a model is chosen"):
1. A live affinity entry for the request's session wins: its models and route, `pinned: true`.
2. When routes apply (inline `routing_preferences` replace the configured ones) and the router named one
   of them, the decision is that route's `models`, ranked by its `selection_policy` (ranking.py) with the
   metrics snapshot the caller passes.
3. Otherwise the request's own `model`, resolved through `model_aliases` (or served by a `vendor/*`
   wildcard entry).
4. Otherwise (no model, or on the decision endpoint one this gateway does not serve) the default model.
A request naming a model this gateway does not serve is refused (400, plano's rule) where that model would
decide: on the proxy path, before any of this when no routes apply (`check_request`), else when no route
was chosen (`check_model_used`). The decision endpoint never refuses it: it reports rule 4. The `source`
says which rule decided; `fallback` marks decisions taken while the configured router failed.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from plano_extproc.affinity import AffinityEntry
from plano_extproc.apis.base import InlinePreference, ParsedRequest, RequestFormatError
from plano_extproc.config import PlanoConfig, RoutePreference, missing_metrics_source
from plano_extproc.ranking import EMPTY_SNAPSHOT, MetricsSnapshot, rank
from plano_extproc.router.base import RouteSpec


class DecisionSource(enum.StrEnum):
    ROUTER = "router"  # a configured route matched
    INLINE = "inline"  # a route given in the request matched
    AFFINITY = "affinity"  # pinned by X-Model-Affinity
    ALIAS = "alias"  # no route; the request's model is an alias
    DIRECT = "direct"  # no route; the request's model is declared
    DEFAULT = "default"  # no route and no servable model in the request
    FALLBACK = "fallback"  # the configured router failed; decided without it


@dataclass(frozen=True, slots=True)
class RouterOutcome:
    """What the router step produced. `failed`: the configured backend failed (a fallback may have decided)."""

    route: str | None
    backend: str | None = None
    failed: bool = False
    error_kind: str | None = None
    #: time spent asking routers (primary and fallback) for this request
    seconds: float = 0.0
    #: answered from the decision cache without calling the router
    cached: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    models: tuple[str, ...]
    route: str | None
    source: DecisionSource
    pinned: bool = False
    router_backend: str | None = None

    @property
    def model(self) -> str:
        return self.models[0]


Preference = RoutePreference | InlinePreference


def active_preferences(config: PlanoConfig, request: ParsedRequest) -> Sequence[Preference]:
    """Inline routes replace the configured ones for this request."""
    return request.preferences if request.preferences is not None else config.routing_preferences


def route_specs(preferences: Sequence[Preference]) -> tuple[RouteSpec, ...]:
    return tuple(RouteSpec(p.name, p.description, p.examples) for p in preferences)


def check_request(config: PlanoConfig, request: ParsedRequest, *, decision_only: bool = False) -> None:
    """Refuse, before routing, what no rule could serve: on the proxy path a `model` this gateway does not
    serve when no routes apply (plano answers 400; with routes, `check_model_used` decides after routing),
    and inline routes whose selection policy has no metrics source here. Raises RequestFormatError."""
    if not decision_only and not active_preferences(config, request):
        check_model_used(config, request, None)
    if request.model is None and config.default_model is None and request.preferences is None and not config.routing_preferences:
        raise RequestFormatError("name a model: this gateway has no default model (every provider entry is a vendor/* wildcard)", param="model")
    for i, pref in enumerate(request.preferences or ()):
        if missing_metrics_source(pref.prefer, config.cost_source, config.latency_source):
            kind = "cost" if pref.prefer == "cheapest" else "latency"
            raise RequestFormatError(
                f"routing_preferences[{i}].selection_policy.prefer: {pref.prefer} needs a {kind} source, and this "
                f"gateway's model_metrics_sources has none; use prefer: none or leave selection_policy out",
                param="routing_preferences",
            )


def check_model_used(config: PlanoConfig, request: ParsedRequest, decision: Decision | None) -> None:
    """On the proxy path, a `model` this gateway does not serve is refused (400) only when it would
    decide: no route was chosen for the request (`decision` None: none could be). A chosen route does
    not read it (clients send placeholders such as "auto"). The decision endpoint does not call this: it
    reports the default model (source `default`) where the proxy path refuses."""
    if request.model is None or config.resolve_model(request.model) is not None:
        return
    if decision is not None and (decision.route is not None or decision.pinned):
        return
    raise RequestFormatError(_unknown_model_message(config, request.model), param="model")


def _unknown_model_message(config: PlanoConfig, requested: str) -> str:
    message = f"model '{requested}' is not served by this gateway"
    if "/" not in requested and config.wildcards:
        served = ", ".join(sorted(config.wildcards.values()))
        message += f"; name its provider to use a wildcard entry ({served}), e.g. '{next(iter(sorted(config.wildcards)))}/{requested}'"
    else:
        message += "; GET /v1/models lists the models and aliases it serves"
    return message


def fallback_models(config: PlanoConfig, requested: str | None) -> tuple[tuple[str, ...], DecisionSource]:
    resolved = config.resolve_model(requested)
    if resolved is None:
        if config.default_model is None:  # check_request refuses such requests before they get here
            raise RequestFormatError("name a model: this gateway has no default model", param="model")
        return (config.default_model,), DecisionSource.DEFAULT
    if requested in config.model_aliases:
        return (resolved,), DecisionSource.ALIAS
    return (resolved,), DecisionSource.DIRECT


def _models_of(config: PlanoConfig, pref: Preference, snapshot: MetricsSnapshot) -> tuple[str, ...]:
    # Inline routes may name models by bare id or alias; unknown names pass through as given (the
    # decision endpoint reports them; the proxy path rejects what it cannot serve).
    models = tuple(dict.fromkeys(config.resolve_model(m) or m for m in pref.models))
    return rank(models, pref.prefer, snapshot)


def decide_route(
    config: PlanoConfig,
    request: ParsedRequest,
    outcome: RouterOutcome | None,
    affinity: AffinityEntry | None = None,
    snapshot: MetricsSnapshot = EMPTY_SNAPSHOT,
) -> Decision:
    if affinity is not None:
        return Decision(affinity.models, affinity.route, DecisionSource.AFFINITY, pinned=True)
    backend = outcome.backend if outcome else None
    if outcome is not None and outcome.route is not None:
        for pref in active_preferences(config, request):
            if pref.name == outcome.route:
                if outcome.failed:
                    source = DecisionSource.FALLBACK
                elif request.preferences is not None:
                    source = DecisionSource.INLINE
                else:
                    source = DecisionSource.ROUTER
                return Decision(_models_of(config, pref, snapshot), pref.name, source, router_backend=backend)
    models, source = fallback_models(config, request.model)
    if outcome is not None and outcome.failed:
        source = DecisionSource.FALLBACK
    return Decision(models, None, source, router_backend=backend)


def decision_payload(decision: Decision, trace_id: str, session_id: str | None = None) -> dict[str, object]:
    """The JSON body of a decision response (README, "Endpoints"). `model` (= models[0]) serves older clients."""
    payload: dict[str, object] = {
        "models": list(decision.models),
        "model": decision.model,
        "route": decision.route,
        "source": decision.source.value,
        "trace_id": trace_id,
    }
    if session_id is not None:
        payload["session_id"] = session_id
        payload["pinned"] = decision.pinned
    return payload


def models_listing(config: PlanoConfig) -> bytes:
    """`GET /v1/models` in OpenAI's shape: every declared model, then the aliases clients may use."""
    data = [{"id": p.model, "object": "model", "created": 0, "owned_by": p.provider} for p in config.providers]
    data += [{"id": alias, "object": "model", "created": 0, "owned_by": "alias:" + target} for alias, target in config.model_aliases.items()]
    return orjson.dumps({"object": "list", "data": data})
