"""The HTTP filters: our ext_proc processors and the streaming observer, the match_delegate wrapper that
skips one, json_to_metadata for token usage, the header strip before a provider, and Envoy's terminal
filters.

Two chains are built here: the downstream one on the listener (routing processor, response translator,
usage reader, streaming observer, router with its attempt log) and the upstream one on every composite
cluster (per-attempt processor, header strip, codec). Filter names, processors, attributes and the metadata
namespaces come from `plano_extproc.contract`, which the processors read too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import base_pb2, grpc_service_pb2
from envoy.extensions.common.matching.v3 import extension_matcher_pb2
from envoy.extensions.filters.common.matcher.action.v3 import skip_action_pb2
from envoy.extensions.filters.http.composite.v3 import composite_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2, processing_mode_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.json_to_metadata.v3 import json_to_metadata_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.http.upstream_codec.v3 import upstream_codec_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import http_inputs_pb2, regex_pb2, string_pb2
from google.protobuf.message import Message
from xds.core.v3 import extension_pb2 as xds_extension_pb2
from xds.type.matcher.v3 import matcher_pb2
from xds.type.matcher.v3 import string_pb2 as string_matcher_pb2

from plano_extproc.config import PlanoConfig
from plano_extproc.contract import (
    ATTEMPT_COUNT_HEADER,
    EXTPROC_CLUSTER,
    FINGERPRINT_METADATA,
    FIRST_ATTEMPT_HEADER,
    FIRST_READY,
    GRACEFUL_CLOSE_METADATA,
    METADATA_NAMESPACE,
    OBSERVE_ATTRIBUTES,
    OBSERVE_FILTER,
    OBSERVE_HEADER,
    PROCESSOR_METADATA,
    ROUTING_FILTER,
    STRIPPED_BEFORE_PROVIDER,
    TRANSLATE_ATTRIBUTES,
    TRANSLATE_FILTER,
    TRANSLATE_HEADER,
    TRANSLATE_ON,
    UPSTREAM_FILTER,
    USAGE_FIELDS,
    USAGE_FILTER,
    USAGE_NAMESPACE,
    Processor,
)

from .access_logs import attempt_log
from .common import milliseconds, pack, seconds, typed_extension

#: Time the downstream processor may spend beyond the router's own timeout (parsing, JSON rewriting of a
#: big body, fallback router, a busy machine). Envoy's default message timeout is 200 ms.
EXTPROC_MARGIN_MS = 5000
#: The upstream processor never calls the router: it only rewrites the request for the attempt's provider.
UPSTREAM_EXTPROC_TIMEOUT_MS = 5000
#: Upper bound for ``override_message_timeout`` sent by a processor (e.g. a slow cold router).
MAX_MESSAGE_TIMEOUT_S = 30
#: how long Envoy keeps an observer stream open after the HTTP stream ended (finding (h); default 5 s)
OBSERVER_DEFERRED_CLOSE_S = 1
#: the response content types json_to_metadata parses: JSON with or without parameters (a plain
#: ``allow_content_types`` entry matches only the bare type, not "application/json; charset=utf-8",
#: finding (w)). Server-sent events pass the filter untouched and unbuffered.
JSON_CONTENT_TYPES = r"(?i)\s*application/json\s*(;.*)?"

_Mode = processing_mode_pb2.ProcessingMode


@dataclass(frozen=True, slots=True)
class Observation:
    """How responses are observed: the config's ``observability.responses``."""

    #: the gRPC access logs (access_logs.py): each request's outcome, attempts, fall-over and duration, each
    #: attempt's status
    enabled: bool
    #: and the answers' bodies: json_to_metadata reads a non-streaming answer's token usage, the streaming
    #: observer a streamed answer's time to first token and token usage
    bodies: bool

    @classmethod
    def of(cls, config: PlanoConfig) -> Observation:
        mode = config.observability.responses
        return cls(enabled=mode != "off", bodies=mode == "bodies")


# ------------------------------------------------------------------------------------------ ext_proc


def http_filter(name: str, config: Message) -> Any:
    return hcm_pb2.HttpFilter(name=name, typed_config=pack(config))


def _service(processor: Processor, fingerprint: str) -> Any:
    """Our gRPC service; the initial metadata tells it which processor a stream is for and which config
    this bootstrap was rendered from (a processor serving another config refuses the stream)."""
    return grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=EXTPROC_CLUSTER),
        initial_metadata=[
            base_pb2.HeaderValue(key=PROCESSOR_METADATA, value=processor.value),
            base_pb2.HeaderValue(key=FINGERPRINT_METADATA, value=fingerprint),
            base_pb2.HeaderValue(key=GRACEFUL_CLOSE_METADATA, value="1"),
        ],
    )


def _namespaces() -> Any:
    return ext_proc_pb2.MetadataOptions.MetadataNamespaces(untyped=[METADATA_NAMESPACE])


def _processor(which: Processor, fingerprint: str, *, message_timeout_ms: int) -> Any:
    """A request processor (routing or per-attempt): headers sent, body buffered, fail closed."""
    processor = ext_proc_pb2.ExternalProcessor(
        grpc_service=_service(which, fingerprint),
        # Fail closed: when the processor is down or too slow the client gets a 5xx (500 when it is
        # unreachable, finding (c)) instead of being sent, unrouted and without credentials, upstream.
        failure_mode_allow=False,
        processing_mode=_Mode(
            # SEND also downstream, though the processor only needs a few headers: with SKIP the router
            # filter picks the route from the headers before the body decision exists (finding (k)).
            request_header_mode=_Mode.SEND,
            request_body_mode=_Mode.BUFFERED,
            response_header_mode=_Mode.SKIP,
            response_body_mode=_Mode.NONE,
            request_trailer_mode=_Mode.SKIP,
            response_trailer_mode=_Mode.SKIP,
        ),
        message_timeout=milliseconds(message_timeout_ms),
        max_message_timeout=seconds(MAX_MESSAGE_TIMEOUT_S),
        # Our processors are trusted: they may set routing headers (:authority, :path) and x-envoy-*
        # headers (x-envoy-max-retries, finding (b)); without this Envoy silently drops those mutations.
        mutation_rules=mutation_rules_pb2.HeaderMutationRules(),
    )
    processor.mutation_rules.allow_all_routing.value = True
    processor.mutation_rules.allow_envoy.value = True
    return processor


def routing_filter(config: PlanoConfig, fingerprint: str) -> Any:
    """The downstream processor: parse, decide, answer or pick the composite; it writes the decision as
    dynamic metadata (finding (d))."""
    # The router model is called inside the body message, so the message timeout is the router's timeout
    # plus a margin; a message timeout is answered by Envoy with 504 (fail closed).
    processor = _processor(
        Processor.DOWNSTREAM, fingerprint, message_timeout_ms=config.routing.router.timeout_ms + EXTPROC_MARGIN_MS
    )
    processor.metadata_options.receiving_namespaces.CopyFrom(_namespaces())
    return http_filter(ROUTING_FILTER, processor)


def upstream_filter(fingerprint: str) -> Any:
    """The per-attempt processor (attempt N's model id, credentials, Host, path, translated body), skipped
    on attempt 1 when the downstream processor prepared it (``x-plano-first: ready``), which saves a gRPC
    stream on almost every request."""
    processor = _processor(Processor.UPSTREAM, fingerprint, message_timeout_ms=UPSTREAM_EXTPROC_TIMEOUT_MS)
    # the decision reaches every attempt as metadata, never as a header (finding (d))
    processor.metadata_options.forwarding_namespaces.CopyFrom(_namespaces())
    # and each attempt names its model back: the proxy routes' x-plano-model reads it (finding (t))
    processor.metadata_options.receiving_namespaces.CopyFrom(_namespaces())
    both = matcher_pb2.Matcher.MatcherList.Predicate.PredicateList(
        predicate=[_header_is(ATTEMPT_COUNT_HEADER, "1"), _header_is(FIRST_ATTEMPT_HEADER, FIRST_READY)]
    )
    rule = matcher_pb2.Matcher.MatcherList.FieldMatcher(
        predicate=matcher_pb2.Matcher.MatcherList.Predicate(and_matcher=both), on_match=_skip()
    )
    delegate = extension_matcher_pb2.ExtensionWithMatcher(
        extension_config=typed_extension(UPSTREAM_FILTER, processor),
        xds_matcher=matcher_pb2.Matcher(matcher_list=matcher_pb2.Matcher.MatcherList(matchers=[rule])),
    )
    return http_filter(UPSTREAM_FILTER, delegate)


def _header_is(header: str, value: str) -> Any:
    request_header = http_inputs_pb2.HttpRequestHeaderMatchInput(header_name=header)
    return matcher_pb2.Matcher.MatcherList.Predicate(
        single_predicate=matcher_pb2.Matcher.MatcherList.Predicate.SinglePredicate(
            input=_xds_extension(header, request_header), value_match=string_matcher_pb2.StringMatcher(exact=value)
        )
    )


def _skip() -> Any:
    return matcher_pb2.Matcher.OnMatch(action=_xds_extension("skip", skip_action_pb2.SkipFilter()))


def translate_filter(fingerprint: str) -> Any:
    """The response translator: for requests some attempt of which goes to a provider in another API
    (``x-plano-translate: 1``; skipped otherwise, so same-API traffic pays nothing). After the routing
    processor, so on the response path it sees the provider's answer after the observer did. It reads the
    response headers, then switches the body mode per answer (finding (m)): none when the attempt that
    answered spoke the client's API, buffered for JSON, streamed for SSE."""
    processor = ext_proc_pb2.ExternalProcessor(
        grpc_service=_service(Processor.TRANSLATE, fingerprint),
        # a translator that cannot run must not hand the client another API's bytes
        failure_mode_allow=False,
        allow_mode_override=True,
        processing_mode=_Mode(
            request_header_mode=_Mode.SKIP,
            request_body_mode=_Mode.NONE,
            response_header_mode=_Mode.SEND,
            response_body_mode=_Mode.STREAMED,
            request_trailer_mode=_Mode.SKIP,
            response_trailer_mode=_Mode.SKIP,
        ),
        response_attributes=list(TRANSLATE_ATTRIBUTES),
        message_timeout=milliseconds(UPSTREAM_EXTPROC_TIMEOUT_MS),
        max_message_timeout=seconds(MAX_MESSAGE_TIMEOUT_S),
        mutation_rules=mutation_rules_pb2.HeaderMutationRules(),
    )
    processor.metadata_options.forwarding_namespaces.CopyFrom(_namespaces())
    # Created only when the routing processor asked for it (a composite filter, not match_delegate): on a
    # request the processor never saw, e.g. Envoy's own 431 for oversized headers, match_delegate cannot
    # evaluate its matcher and runs the filter, which then holds Envoy's reply until the connection is
    # closed without it; the composite filter creates nothing without request headers (finding (x))
    translate = http_inputs_pb2.HttpRequestHeaderMatchInput(header_name=TRANSLATE_HEADER)
    tree = matcher_pb2.Matcher.MatcherTree(input=_xds_extension(TRANSLATE_HEADER, translate))
    run = composite_pb2.ExecuteFilterAction(typed_config=typed_extension(TRANSLATE_FILTER, processor))
    tree.exact_match_map.map[TRANSLATE_ON].CopyFrom(matcher_pb2.Matcher.OnMatch(action=_xds_extension(TRANSLATE_FILTER, run)))
    delegate = extension_matcher_pb2.ExtensionWithMatcher(
        extension_config=typed_extension("envoy.filters.http.composite", composite_pb2.Composite()),
        xds_matcher=matcher_pb2.Matcher(matcher_tree=tree),
    )
    return http_filter(TRANSLATE_FILTER, delegate)


def observer_filter(fingerprint: str) -> Any:
    """The streaming observer: an ext_proc in observability_mode (Envoy never waits for it, finding (e)) that
    sees a streamed answer's headers and every chunk, for its time to first token and token usage. Skipped
    (no gRPC stream) unless the client asked for a stream (``x-plano-observe``, set by the routing
    processor as ``x-plano-translate`` is, finding (l)). The decision comes as CEL attributes with the
    response headers (finding (u)); forwarded metadata would come with every chunk (finding (g)). Its own
    name lets routes disable it apart from the routing processor (finding (i))."""
    observer = ext_proc_pb2.ExternalProcessor(
        grpc_service=_service(Processor.OBSERVE, fingerprint),
        observability_mode=True,
        # observation must never cost a request anything: a processor that is down is ignored
        failure_mode_allow=True,
        processing_mode=_Mode(
            request_header_mode=_Mode.SKIP,
            request_body_mode=_Mode.NONE,
            response_header_mode=_Mode.SEND,
            response_body_mode=_Mode.STREAMED,
            request_trailer_mode=_Mode.SKIP,
            response_trailer_mode=_Mode.SKIP,
        ),
        # request identity without request headers (finding (f)), the decision (finding (u))
        response_attributes=list(OBSERVE_ATTRIBUTES),
        deferred_close_timeout=seconds(OBSERVER_DEFERRED_CLOSE_S),
    )
    streamed = http_inputs_pb2.HttpRequestHeaderMatchInput(header_name=OBSERVE_HEADER)
    return _skip_when(OBSERVE_FILTER, observer, OBSERVE_HEADER, streamed, exact="0")


def usage_filter() -> Any:
    """json_to_metadata on the response path: the ``usage`` counts of a whole JSON answer go to the
    request's dynamic metadata (``USAGE_NAMESPACE``) under the provider's field names, and from there into
    its access-log entry, where they are read with the provider API's ``read_usage``. After the response
    translator in the chain, so on the response path it reads the provider's own answer. Values keep their
    JSON type (``PROTOBUF_VALUE``): a count that is not a number is ignored, as when the processor read the
    body itself. It cannot read a compressed body (an Envoy decompressor before it hangs the response,
    finding (w)), so the routing processor asks for identity when it does not stream."""
    jtm = json_to_metadata_pb2.JsonToMetadata
    rules = [
        jtm.Rule(
            selectors=[jtm.Selector(key="usage"), jtm.Selector(key=field)],
            on_present=jtm.KeyValuePair(metadata_namespace=USAGE_NAMESPACE, key=field, type=jtm.PROTOBUF_VALUE),
        )
        for field in USAGE_FIELDS
    ]
    json_types = regex_pb2.RegexMatcher(regex=JSON_CONTENT_TYPES)
    return http_filter(USAGE_FILTER, jtm(response_rules=jtm.MatchRules(rules=rules, allow_content_types_regex=json_types)))


def _xds_extension(name: str, message: Message) -> Any:
    """The matcher's own (xds) ``TypedExtensionConfig``: same shape as Envoy's, another message type."""
    return xds_extension_pb2.TypedExtensionConfig(name=name, typed_config=pack(message))


def _skip_when(
    name: str,
    config: Message,
    header: str,
    header_input: Message,
    *,
    exact: str | None = None,
    prefix: str | None = None,
) -> Any:
    """The filter ``name`` wrapped in match_delegate: skipped (no gRPC stream at all) when ``header``, read
    by ``header_input``, equals ``exact`` or starts with ``prefix``."""
    skip = _skip()
    tree = matcher_pb2.Matcher.MatcherTree(input=_xds_extension(header, header_input))
    if exact is not None:
        tree.exact_match_map.map[exact].CopyFrom(skip)
    if prefix is not None:
        tree.prefix_match_map.map[prefix].CopyFrom(skip)
    delegate = extension_matcher_pb2.ExtensionWithMatcher(
        extension_config=typed_extension(name, config), xds_matcher=matcher_pb2.Matcher(matcher_tree=tree)
    )
    return http_filter(name, delegate)


# ------------------------------------------------------------------------------------------- others


def strip_internal_headers() -> Any:
    """Internal headers never reach a provider. After the per-attempt processor, which may read them on
    attempt 1; later attempts get the decision from metadata (finding (d))."""
    mutations = header_mutation_pb2.Mutations(
        request_mutations=[
            *(mutation_rules_pb2.HeaderMutation(remove=h) for h in STRIPPED_BEFORE_PROVIDER),
            # and whatever x-envoy-* header is left (Envoy's own are suppressed, clients' stripped at the edge)
            mutation_rules_pb2.HeaderMutation(
                remove_on_match=mutation_rules_pb2.HeaderMutation.RemoveOnMatch(
                    key_matcher=string_pb2.StringMatcher(prefix="x-envoy-")
                )
            ),
        ]
    )
    return http_filter("envoy.filters.http.header_mutation", header_mutation_pb2.HeaderMutation(mutations=mutations))


def router(*upstream_logs: Any) -> Any:
    # no x-envoy-* headers of Envoy's own (expected timeout, attempt count...) on requests to providers
    return http_filter("envoy.filters.http.router", router_pb2.Router(suppress_envoy_headers=True, upstream_log=upstream_logs))


def upstream_codec() -> Any:
    """The mandatory last filter of an upstream chain."""
    return http_filter("envoy.filters.http.upstream_codec", upstream_codec_pb2.UpstreamCodec())


def disabled(*names: str) -> dict[str, Any]:
    """``typed_per_filter_config`` entries that turn the named ext_proc filters off on a route."""
    return {name: pack(ext_proc_pb2.ExtProcPerRoute(disabled=True)) for name in names}


# ------------------------------------------------------------------------------------------- chains


def downstream_chain(config: PlanoConfig, fingerprint: str, observation: Observation) -> list[Any]:
    chain = [routing_filter(config, fingerprint), translate_filter(fingerprint)]
    if observation.bodies:
        # after the translator: on the response path they see the provider's answer, as the router hands it back
        chain += [usage_filter(), observer_filter(fingerprint)]
    # with response observation, one access-log entry per upstream attempt (access_logs.py)
    chain.append(router(attempt_log(fingerprint)) if observation.enabled else router())
    return chain


def upstream_chain(fingerprint: str) -> list[Any]:
    """The composite cluster's own filters: the only ones that run per attempt (docs/envoy.md: a
    sub-cluster's filters do not run when it is reached through the composite)."""
    return [upstream_filter(fingerprint), strip_internal_headers(), upstream_codec()]
