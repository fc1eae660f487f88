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
MODELS_HEADER = "x-plano-models"  # the ranked models of the decision, comma separated
ROUTE_HEADER = "x-plano-route"  # the matched route (informational, for logs)
FORMAT_HEADER = "x-plano-format"  # the client's API format (openai_chat, anthropic_messages, openai_responses)
INTERNAL_HEADERS = (CLUSTER_HEADER, MODELS_HEADER, ROUTE_HEADER, FORMAT_HEADER)
INTERNAL_PREFIX = "x-plano-"

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
