"""Names shared by the Envoy renderer and the ext_proc service: internal headers and cluster names.

Both sides compute cluster names from the same functions, so a decision's ranked model list always
maps to the composite cluster the renderer built for it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

#: internal request headers: set only by our downstream processor, stripped from client requests and
#: never forwarded to a provider
CLUSTER_HEADER = "x-plano-cluster"  # the route's cluster_header: which composite cluster to use
ROUTE_HEADER = "x-plano-route"  # the matched route (informational, for logs)
INTERNAL_HEADERS = (CLUSTER_HEADER, ROUTE_HEADER)
INTERNAL_PREFIX = "x-plano-"

#: Envoy dynamic metadata namespace carrying the decision from the downstream processor to the upstream
#: processor on every attempt (headers would not do: upstream header mutations persist across attempts,
#: so headers stripped before the provider on attempt 1 are gone on attempt 2). Keys: models (comma
#: separated attempt list), format (ApiFormat value), route, client_credentials (passthrough only).
DECISION_METADATA_NAMESPACE = "plano"

#: gRPC initial metadata that tells the service which processor a stream belongs to
PHASE_METADATA = "x-plano-phase"

EXTPROC_CLUSTER = "plano_extproc"
#: the cluster of the decision-only routes; never reached, the ext_proc answers first
DECISION_CLUSTER = "plano_decision_blackhole"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def model_cluster_name(model: str) -> str:
    """One Envoy cluster per declared model ("openai/gpt-4o" -> "model.openai_gpt-4o")."""
    return "model." + _UNSAFE.sub("_", model.replace("/", "_"))


def composite_cluster_name(models: Iterable[str]) -> str:
    """The composite cluster over a ranked model list: attempt N goes to models[N-1]."""
    models = tuple(models)
    readable = "+".join(_UNSAFE.sub("_", m.replace("/", "_")) for m in models)
    if len(readable) <= 80:
        return "ranked." + readable
    digest = hashlib.sha256("\n".join(models).encode()).hexdigest()[:16]
    return f"ranked.{digest}"


def attempt_list(models: Iterable[str]) -> tuple[str, ...]:
    """The models a composite cluster walks, one per attempt.

    Envoy answers 503 "no healthy upstream" when attempts outnumber a composite's sub-clusters, so a
    single model is listed twice: one same-provider retry on 429/5xx instead of none.
    """
    models = tuple(models)
    return models if len(models) > 1 else models * 2


def prebuilt_model_lists(preference_model_lists: Iterable[Iterable[str]], declared_models: Iterable[str]) -> list[tuple[str, ...]]:
    """The attempt lists that get a composite cluster: every route's models, and every single model."""
    lists: dict[tuple[str, ...], None] = {}
    for models in preference_model_lists:
        lists[attempt_list(models)] = None
    for model in declared_models:
        lists[attempt_list((model,))] = None
    return list(lists)
