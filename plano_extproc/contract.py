"""The contract between the rendered Envoy bootstrap and the ext_proc processors. Pure.

The renderer (`plano_extproc.bootstrap`) and the processors (`plano_extproc.extproc`) both import this
module and nothing of each other. It says:

* which processor a gRPC stream belongs to (`Processor`, sent as gRPC initial metadata by each filter);
* which config the bootstrap was rendered from (`config_fingerprint`, sent beside it; a processor
  serving another config refuses the stream instead of naming clusters Envoy does not have);
* the gRPC access logs Envoy sends (one entry per proxied request, one per upstream attempt) and the
  metadata namespace in which Envoy's json_to_metadata filter leaves a non-streaming answer's token counts;
* the internal headers (the cluster header the downstream processor sets, the attempt counter Envoy sets);
* the decision the downstream processor hands to every upstream attempt (`DecisionMetadata`, carried as
  Envoy dynamic metadata: headers would not survive, upstream header mutations persist across attempts,
  docs/envoy.md finding (d));
* how clusters are named, which model lists get a prebuilt composite cluster, which model attempt N
  uses and how many retries a list gets.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from google.protobuf import struct_pb2

if TYPE_CHECKING:
    from envoy.config.core.v3 import base_pb2

    from plano_extproc.config import PlanoConfig

#: bumped whenever the meaning of anything below changes; part of the fingerprint
CONTRACT_VERSION = 4


class Processor(enum.StrEnum):
    """Which processor a stream is for; the value travels as ``PROCESSOR_METADATA``."""

    DOWNSTREAM = "downstream"  # router level: parse, decide, answer or choose the composite cluster
    UPSTREAM = "upstream"  # per retry attempt on a composite cluster: fit the request to attempt N's provider
    OBSERVE = "observe"  # streamed answers: response observer after the routing filter (observability_mode)
    TRANSLATE = "translate"  # the response of a request some attempt of which is translated


#: gRPC initial metadata keys set by every rendered ext_proc filter
PROCESSOR_METADATA = "x-plano-processor"
FINGERPRINT_METADATA = "x-plano-config"
#: and, only in a bootstrap rendered for several ext_proc worker processes, their number: a worker refuses
#: the streams of a bootstrap rendered for another number (its later streams would miss their worker)
WORKERS_METADATA = "x-plano-workers"
#: set ("1") by every filter of a bootstrap that turns on GRACEFUL_CLOSE_FEATURE: Envoy then half-closes a
#: stream it is done with and waits for our status instead of resetting it, so the handler need not wait
#: for a reset before it returns (docs/envoy.md (ac))
GRACEFUL_CLOSE_METADATA = "x-plano-graceful-close"
#: the Envoy runtime feature the rendered bootstrap turns on (off by default in Envoy 1.40)
GRACEFUL_CLOSE_FEATURE = "envoy.reloadable_features.ext_proc_graceful_grpc_close"

# ------------------------------------------------------------------------------------------- headers

#: internal request headers: set only by our downstream processor, dropped from client requests, never
#: forwarded to a provider
INTERNAL_PREFIX = "x-plano-"
CLUSTER_HEADER = "x-plano-cluster"  # the route's cluster_header: which composite cluster to use
ROUTE_HEADER = "x-plano-route"  # the matched route (informational, for access logs)
#: set by Envoy on each upstream attempt (``include_request_attempt_count`` on the virtual host)
ATTEMPT_COUNT_HEADER = "x-envoy-attempt-count"
#: set by the downstream processor; overrides the route's retry budget for this request
MAX_RETRIES_HEADER = "x-envoy-max-retries"
#: set by the downstream processor on every proxied request: "1" when some attempt is translated (the
#: response then passes the translate processor), "0" when none is (its filter is skipped)
TRANSLATE_HEADER = "x-plano-translate"
#: its value when the response translator must run (anything else, or no header: skipped)
TRANSLATE_ON = "1"
#: set by the downstream processor: "ready" when it prepared attempt 1 itself (the per-attempt processor
#: is then skipped for it), "translate" when attempt 1 is translated by the per-attempt processor
FIRST_ATTEMPT_HEADER = "x-plano-first"
FIRST_READY, FIRST_TRANSLATE = "ready", "translate"
#: set by the downstream processor on every proxied request when response bodies are observed
#: (``observability.responses: bodies``): "1" when the client asked for a stream (the streaming observer
#: reads the answer), "0" otherwise (its filter is skipped; json_to_metadata reads the usage)
OBSERVE_HEADER = "x-plano-observe"
#: removed after the upstream processor, before the provider sees the request
STRIPPED_BEFORE_PROVIDER = (CLUSTER_HEADER, ROUTE_HEADER, ATTEMPT_COUNT_HEADER, TRANSLATE_HEADER, FIRST_ATTEMPT_HEADER, OBSERVE_HEADER)
#: with several worker processes: set by the downstream processor of worker k to "k" on every request it
#: forwards; each later processor's filter is rendered once per worker and runs only on its worker's
#: requests (`worker_cluster_name`), so every stream of a request reaches the process that holds its
#: in-flight record. Like every x-plano-* header a client sends, a client's value is removed first.
WORKER_HEADER = "x-plano-worker"

# ------------------------------------------------------------------------------------------- filters

#: filter names; per-route configuration is keyed by them (docs/envoy.md finding (i))
ROUTING_FILTER = "plano.routing"
OBSERVE_FILTER = "plano.observe"
UPSTREAM_FILTER = "plano.upstream"
TRANSLATE_FILTER = "plano.translate"
#: Envoy's json_to_metadata filter on non-streaming answers (token usage, USAGE_NAMESPACE)
USAGE_FILTER = "plano.usage"

# ------------------------------------------------------------------------------------------- metadata

#: Envoy dynamic metadata namespace the downstream processor writes and the upstream filters receive
METADATA_NAMESPACE = "plano"
#: the key whose presence the proxy routes require: only a request our processor decided reaches a
#: composite cluster, whatever headers it carries
DECIDED_KEY = "models"
#: keys the proxy routes' response headers read (bootstrap/routes.py, docs/envoy.md finding (t)): the
#: model of the latest attempt (written by the downstream processor for attempt 1 and by the per-attempt
#: processor for every attempt it prepares), the route and the decision's source
ANSWERED_MODEL_KEY = "model"
ROUTE_KEY = "route"
SOURCE_KEY = "source"
#: with several worker processes: the worker that decided the request (WORKER_HEADER's value). Upstream
#: header mutations persist into the next attempt (finding (d)), so the header that the strip before a
#: provider removed on attempt 1 is set again from this key at the head of every attempt's filters
WORKER_KEY = "worker"
#: "1" when the client asked for a streamed answer (absent otherwise): the streaming observer, not the
#: access log, then reads its time to first token and token usage
STREAM_KEY = "stream"

#: the dynamic metadata namespace json_to_metadata writes a non-streaming answer's ``usage`` counts to,
#: under the names the provider used (the access log reads them with the provider API's ``read_usage``)
USAGE_NAMESPACE = "plano.usage"
#: the fields of a response body's ``usage`` object that some provider API's ``read_usage`` reads (Chat
#: Completions' prompt/completion, Responses' and Messages' input/output, Messages' prompt-cache counts)
USAGE_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)

# ------------------------------------------------------------------------------------------- attributes

#: attributes Envoy sends the observers with the response headers (docs/envoy.md finding (f))
REQUEST_ID_ATTRIBUTE = "request.id"
REQUEST_TIME_ATTRIBUTE = "request.time"
ATTEMPT_COUNT_ATTRIBUTE = "upstream.request_attempt_count"
#: the decision's attempts and client API as CEL expressions over the dynamic metadata (finding (u)):
#: they come with the response headers only, not with every body chunk as forwarded metadata would
ATTEMPTS_ATTRIBUTE = f"metadata.filter_metadata['{METADATA_NAMESPACE}']['{DECIDED_KEY}']"
API_ATTRIBUTE = f"metadata.filter_metadata['{METADATA_NAMESPACE}']['api']"
OBSERVE_ATTRIBUTES = (REQUEST_ID_ATTRIBUTE, REQUEST_TIME_ATTRIBUTE, ATTEMPT_COUNT_ATTRIBUTE, ATTEMPTS_ATTRIBUTE, API_ATTRIBUTE)
TRANSLATE_ATTRIBUTES = (REQUEST_ID_ATTRIBUTE, ATTEMPT_COUNT_ATTRIBUTE)

# ------------------------------------------------------------------------------------------- access logs

#: the ``log_name`` of Envoy's gRPC access logs (each logger has its own stream; the name comes with its
#: first message): one entry per proxied request (the HCM's access log, only requests the routing
#: processor forwarded), one per upstream attempt (the router's ``upstream_log``)
REQUEST_LOG = "plano.requests"
ATTEMPT_LOG = "plano.attempts"


@dataclass(frozen=True, slots=True)
class DecisionMetadata:
    """What every upstream attempt needs from the routing decision."""

    #: the model of each attempt, in order (``attempt_list``)
    attempts: tuple[str, ...]
    #: the client API's name (``plano_extproc.apis.ClientApi.name``)
    api: str
    route: str | None = None
    #: the client's own credential headers, only when some provider passes them through
    client_credentials: Mapping[str, str] | None = None
    #: which rule decided (decision.DecisionSource value)
    source: str = ""
    #: the client asked for a streamed answer
    stream: bool = False
    #: the worker process that decided (several workers only)
    worker: str | None = None

    def model_for_attempt(self, attempt: int) -> str:
        return model_for_attempt(self.attempts, attempt)

    def to_struct(self) -> struct_pb2.Struct:
        """The ``ProcessingResponse.dynamic_metadata`` value."""
        fields: dict[str, str | dict[str, str]] = {
            DECIDED_KEY: ",".join(self.attempts),
            "api": self.api,
            ROUTE_KEY: self.route or "",
            SOURCE_KEY: self.source,
            ANSWERED_MODEL_KEY: self.attempts[0],
        }
        if self.stream:
            fields[STREAM_KEY] = "1"
        if self.client_credentials:
            fields["client_credentials"] = dict(self.client_credentials)
        if self.worker is not None:
            fields[WORKER_KEY] = self.worker
        struct = struct_pb2.Struct()
        struct.update({METADATA_NAMESPACE: fields})
        return struct

    @classmethod
    def from_metadata(cls, metadata: base_pb2.Metadata) -> DecisionMetadata | None:
        """The decision in a ``ProcessingRequest.metadata_context``; None when it is missing or malformed."""
        found = metadata.filter_metadata.get(METADATA_NAMESPACE)
        if found is None:
            return None
        fields = found.fields
        try:
            attempts = tuple(m for m in fields[DECIDED_KEY].string_value.split(",") if m)
            api = fields["api"].string_value
        except KeyError:
            return None
        if not attempts or not api:
            return None
        route = fields["route"].string_value if "route" in fields else ""
        credentials = None
        if "client_credentials" in fields:
            credentials = {k: v.string_value for k, v in fields["client_credentials"].struct_value.fields.items()}
        source = fields[SOURCE_KEY].string_value if SOURCE_KEY in fields else ""
        stream = STREAM_KEY in fields and fields[STREAM_KEY].string_value == "1"
        worker = fields[WORKER_KEY].string_value if WORKER_KEY in fields else None
        return cls(attempts, api, route or None, credentials or None, source, stream, worker)


def attempts_of(models: object) -> tuple[str, ...]:
    """The attempt list of the decision metadata's ``models`` value (``ATTEMPTS_ATTRIBUTE``)."""
    return tuple(m for m in models.split(",") if m) if isinstance(models, str) else ()


def answered_model_metadata(model: str) -> struct_pb2.Struct:
    """The per-attempt processor's ``dynamic_metadata``: the model this attempt goes to (Envoy merges it
    into the namespace, so the proxy routes' ``x-plano-model`` header names the model that answered)."""
    struct = struct_pb2.Struct()
    struct.update({METADATA_NAMESPACE: {ANSWERED_MODEL_KEY: model}})
    return struct


# ------------------------------------------------------------------------------------------- clusters

#: the ext_proc service's cluster (with several workers: one endpoint per worker, load balanced; it gets
#: the routing processor's streams, the health checks and the Decide API)
EXTPROC_CLUSTER = "plano_extproc"
#: the gRPC health service that says the ext_proc process is alive (container probes check it). Envoy's
#: health check of EXTPROC_CLUSTER asks for service "", which a draining worker answers NOT_SERVING so
#: Envoy sends it no new requests while it finishes the ones it has (workers/supervisor.py, recycling).
ALIVE_SERVICE = "plano.extproc.alive"
#: response code details of the processors' own replies: Envoy's local reply mappers leave them alone
OWN_REPLY_DETAILS = "plano_extproc"
#: the cluster of the decision-only routes; never reached, the processor answers first
DECISION_CLUSTER = "plano_decision_blackhole"
MODEL_PREFIX = "model."
COMPOSITE_PREFIX = "ranked."

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _safe(model: str) -> str:
    return _UNSAFE.sub("_", model.replace("/", "_"))


def model_cluster_name(model: str) -> str:
    """One Envoy cluster per declared model ("openai/gpt-4o" -> "model.openai_gpt-4o")."""
    return MODEL_PREFIX + _safe(model)


def composite_cluster_name(attempts: Iterable[str]) -> str:
    """The composite cluster over an attempt list: attempt N goes to sub-cluster N."""
    attempts = tuple(attempts)
    readable = "+".join(_safe(m) for m in attempts)
    if len(readable) <= 80:
        return COMPOSITE_PREFIX + readable
    return COMPOSITE_PREFIX + hashlib.sha256("\n".join(attempts).encode()).hexdigest()[:16]


def attempt_list(models: Iterable[str]) -> tuple[str, ...]:
    """The model of each attempt for a ranked model list.

    Envoy answers 503 "no healthy upstream" when attempts outnumber a composite's sub-clusters (finding
    (a)), so a single model is listed twice: one same-provider retry on 429/5xx instead of none.
    """
    models = tuple(models)
    return models if len(models) > 1 else models * 2


def model_for_attempt(attempts: tuple[str, ...], attempt: int) -> str:
    """Attempt N (1-based, as in ``x-envoy-attempt-count``) uses attempts[N-1]; past the end, the last."""
    return attempts[min(max(attempt, 1), len(attempts)) - 1]


def retry_budget(attempts: tuple[str, ...], max_retries: int | None = None) -> int:
    """Retries that walk an attempt list exactly once (one more would be Envoy's own 503), at most the
    listener's ``max_retries``."""
    budget = len(attempts) - 1
    return budget if max_retries is None else min(budget, max_retries)


#: a ranked route of up to this many models gets a composite for every order its ranking can give (24);
#: a longer one gets one per first model, the rest in the route's order
MAX_PERMUTED_MODELS = 4


def route_orders(models: tuple[str, ...], ranked: bool) -> list[tuple[str, ...]]:
    """The orders of a route's models Envoy needs a composite for."""
    if not ranked or len(models) < 2:
        return [models]
    if len(models) <= MAX_PERMUTED_MODELS:
        return list(itertools.permutations(models))
    return [(first, *(m for m in models if m != first)) for first in models]


def prebuilt_attempt_lists(config: PlanoConfig) -> list[tuple[str, ...]]:
    """The attempt lists that get a composite cluster, as lists of declared provider entries (a model a
    ``vendor/*`` entry serves goes to that entry's cluster): every configured route's models (in every
    order its selection policy can rank them), every entry alone."""
    lists: dict[tuple[str, ...], None] = {}
    for pref in config.routing_preferences:
        entries = tuple(config.entry_of(m) or m for m in pref.models)
        for order in route_orders(entries, pref.prefer != "none" and len(set(entries)) == len(entries)):
            lists[attempt_list(order)] = None
    for provider in config.providers:
        lists[attempt_list((provider.model,))] = None
    return list(lists)


# ------------------------------------------------------------------------------------------- workers


def worker_cluster_name(worker: int) -> str:
    """The single-endpoint cluster of worker `worker` (0-based): the later streams of its requests."""
    return f"{EXTPROC_CLUSTER}.{worker}"


def worker_filter_name(name: str, worker: int) -> str:
    """The name of worker `worker`'s copy of the filter `name` (per-route configuration is keyed by it)."""
    return f"{name}.{worker}"


def filter_names(name: str, workers: int) -> tuple[str, ...]:
    """Every rendered name of the filter `name`: itself with one process, one copy per worker with more."""
    return (name,) if workers <= 1 else tuple(worker_filter_name(name, k) for k in range(workers))


def worker_address(address: str, worker: int, workers: int) -> str:
    """Where worker `worker` (0-based) of `workers` listens, for the ext_proc address `address`: the
    address itself with one worker; else ``host:port`` → ``host:(port + worker)`` and ``unix:/d/x.sock`` →
    ``unix:/d/x-<worker>.sock`` (``unix:/d/x`` → ``unix:/d/x-<worker>``)."""
    if workers <= 1:
        return address
    if not 0 <= worker < workers:
        raise ValueError(f"worker {worker} of {workers}")
    if address.startswith("unix:"):
        head, slash, base = address.rpartition("/")
        stem, dot, ext = base.rpartition(".")
        named = f"{stem}-{worker}.{ext}" if dot and stem else f"{base}-{worker}"
        return f"{head}{slash}{named}"
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"extproc address '{address}' must be host:port or unix:/path/to.sock")
    if int(port) == 0 or int(port) + workers - 1 > 65535:
        raise ValueError(f"extproc address '{address}': ports {port}..{int(port) + workers - 1} do not all exist")
    return f"{host}:{int(port) + worker}"


# ------------------------------------------------------------------------------------------- fingerprint


def config_fingerprint(config: PlanoConfig) -> str:
    """A short hash of everything in the config that the bootstrap encodes and the processors rely on:
    clusters and their endpoints, the prebuilt composites, the contract version. Route descriptions,
    aliases, keys and router settings are not part of it: they change nothing Envoy knows. Nor is the
    order of routes or providers: a config that only reorders them (or moves a model list from one route
    to another) needs no other bootstrap, so a reload applies it in place."""
    facts = {
        "contract": CONTRACT_VERSION,
        "models": sorted(
            (p.model, p.interface, p.base_url or "", p.http_host or "") for p in config.providers
        ),
        "composites": sorted(prebuilt_attempt_lists(config)),
    }
    return hashlib.sha256(orjson.dumps(facts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
