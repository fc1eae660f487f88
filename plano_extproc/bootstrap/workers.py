"""The bootstrap for an ext_proc that runs as N worker processes (`serve --workers N`): a pass over the
bootstrap rendered for one process, so it applies to whatever processor filters the chains hold.

What ties a request's streams to one worker is its in-flight record (extproc/tracking.py: the kept body,
the client body the response translator reads, the config generation that decided it) — held by the
worker whose routing processor decided the request. So (docs/envoy.md finding (y)):

* The ext_proc cluster (`contract.EXTPROC_CLUSTER`) gets one endpoint per worker address
  (`contract.worker_address`), least-request balanced: the routing processor's streams, the health checks
  (readiness needs all workers but one healthy) and the Decide API go there.
* Each worker also gets a cluster of its own (`contract.worker_cluster_name`), its only endpoint that
  worker's address.
* The routing processor of worker k sets ``x-plano-worker: k`` on every request it forwards
  (`contract.WORKER_HEADER`; a client's value was removed before). Every other processor filter — on the
  listener and on every composite cluster — is rendered N times: copy k talks to worker k's cluster and is
  wrapped in match_delegate, skipped (no gRPC stream) unless the header says k, on top of the skip rules
  it had. Per-route configuration of such a filter is repeated for every copy (copies have their own
  names, `contract.worker_filter_name`). A processor run by a composite filter (the response translator,
  finding (x)) stays one filter: each of its matcher's rules becomes N rules, rule k also requiring the
  header to say k and running a processor that talks to worker k's cluster.
* On a composite cluster, a header_mutation filter ahead of the copies sets the header again on every
  attempt from the decision metadata (``plano.worker``, written by the routing processor): the strip
  before a provider removed it on attempt 1, and upstream header mutations persist into the next attempt
  (finding (d)).
* A gRPC access log on the listener (a request's outcome, read by the worker that holds its record) is
  rendered N times, each copy filtered on the decision metadata's worker; gRPC access logs elsewhere (the
  router's per-attempt log, read from the entry alone) go to the balanced cluster.
* The header is removed before a provider sees the request, with the other internal headers.
* Every ext_proc filter tells its worker the number it was rendered for (`contract.WORKERS_METADATA`): a
  worker of another number of workers refuses its streams instead of serving half a request.

With one worker nothing is changed: the bootstrap is the single-process one.
"""

from __future__ import annotations

from typing import Any

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import base_pb2, extension_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.common.matching.v3 import extension_matcher_pb2
from envoy.extensions.filters.common.matcher.action.v3 import skip_action_pb2
from envoy.extensions.filters.http.composite.v3 import composite_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.health_check.v3 import health_check_pb2 as health_check_http_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2
from envoy.type.matcher.v3 import http_inputs_pb2, metadata_pb2, string_pb2, value_pb2
from xds.core.v3 import extension_pb2 as xds_extension_pb2
from xds.type.matcher.v3 import matcher_pb2
from xds.type.matcher.v3 import string_pb2 as string_matcher_pb2

from plano_extproc.contract import (
    CLUSTER_HEADER,
    EXTPROC_CLUSTER,
    METADATA_NAMESPACE,
    PROCESSOR_METADATA,
    WORKER_HEADER,
    WORKER_KEY,
    WORKERS_METADATA,
    Processor,
    worker_address,
    worker_cluster_name,
    worker_filter_name,
)

from .clusters import parse_extproc_address
from .common import HTTP_PROTOCOL_OPTIONS, one_endpoint, pack, pipe_address, seconds, socket_address

#: a worker that refused a connection gets no routing streams for this long (growing with each ejection
#: in a row, up to the maximum); a restart takes one to two seconds
OUTLIER_EJECTION_S = 1.0
OUTLIER_MAX_EJECTION_S = 5.0
OUTLIER_INTERVAL_S = 1.0

#: the header_mutation filter at the head of a composite's filters that sets the worker header per attempt
WORKER_HEADER_FILTER = "plano.worker_header"

_Predicate = matcher_pb2.Matcher.MatcherList.Predicate
_FieldMatcher = matcher_pb2.Matcher.MatcherList.FieldMatcher


def spread_over_workers(bootstrap: Any, workers: int, extproc_address: str) -> None:
    """Change `bootstrap` (a ``Bootstrap`` message rendered for one ext_proc process) in place for
    `workers` processes at the addresses `contract.worker_address` derives from `extproc_address`."""
    if workers <= 1:
        return
    resources = bootstrap.static_resources
    _spread_clusters(resources, workers, extproc_address)
    for listener in resources.listeners:
        for chain in listener.filter_chains:
            for network_filter in chain.filters:
                if network_filter.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                    hcm = hcm_pb2.HttpConnectionManager()
                    network_filter.typed_config.Unpack(hcm)
                    _spread_readiness(hcm, workers)
                    if _spread_hcm(hcm, workers):
                        network_filter.typed_config.CopyFrom(pack(hcm))
    for cluster in resources.clusters:
        packed = cluster.typed_extension_protocol_options.get(HTTP_PROTOCOL_OPTIONS)
        if packed is None:
            continue
        options = hpo_pb2.HttpProtocolOptions()
        packed.Unpack(options)
        if not options.http_filters:
            continue
        filters, copied = _spread_chain(options.http_filters, workers)
        if copied:
            # attempt 2 sees what the strip before a provider left of attempt 1's headers (finding (d)): the
            # worker header is set again, from the decision metadata, ahead of the copies
            filters.insert(0, _worker_header_from_metadata())
        del options.http_filters[:]
        options.http_filters.extend(filters)
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(pack(options))


# ------------------------------------------------------------------------------------------- clusters


def _endpoint(address: str) -> Any:
    kind, host, port = parse_extproc_address(address)
    return pipe_address(host) if kind == "unix" else socket_address(host, port)


def _spread_clusters(resources: Any, workers: int, extproc_address: str) -> None:
    shared = next((c for c in resources.clusters if c.name == EXTPROC_CLUSTER), None)
    if shared is None:
        return
    addresses = [worker_address(extproc_address, k, workers) for k in range(workers)]
    own: list[Any] = []
    for k, address in enumerate(addresses):
        cluster = cluster_pb2.Cluster()
        cluster.CopyFrom(shared)
        cluster.name = worker_cluster_name(k)
        # no health check of its own: the shared cluster's checks of the same address tell readiness
        cluster.ClearField("health_checks")
        cluster.load_assignment.CopyFrom(one_endpoint(cluster.name, _endpoint(address)))
        own.append(cluster)
    # a routing decision costs very different CPU (decision cache hit or not, prompt size): least request
    shared.lb_policy = cluster_pb2.Cluster.LEAST_REQUEST
    shared.outlier_detection.CopyFrom(_outlier_detection(workers))
    shared.load_assignment.CopyFrom(
        endpoint_pb2.ClusterLoadAssignment(
            cluster_name=EXTPROC_CLUSTER,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=_endpoint(a)))
                        for a in addresses
                    ]
                )
            ],
        )
    )
    at = list(resources.clusters).index(shared) + 1
    for offset, cluster in enumerate(own):
        resources.clusters.insert(at + offset, cluster)


def _outlier_detection(workers: int) -> Any:
    """A worker that refuses a connection (it died; the supervisor restarts it in a second or two) gets no
    new requests for a while: without this, until the health check noticed, every request balanced onto it
    failed (finding (y)). Only failures of our own making count (connect failures, resets), never an
    answer, so a busy worker is not ejected; at most all workers but one are."""
    detection = outlier_detection_pb2.OutlierDetection(split_external_local_origin_errors=True)
    detection.consecutive_local_origin_failure.value = 1
    detection.enforcing_consecutive_local_origin_failure.value = 100
    # nothing else ejects: the processors' answers are not failures of the worker
    detection.enforcing_consecutive_5xx.value = 0
    detection.enforcing_consecutive_gateway_failure.value = 0
    detection.enforcing_success_rate.value = 0
    detection.enforcing_local_origin_success_rate.value = 0
    detection.enforcing_failure_percentage.value = 0
    detection.enforcing_failure_percentage_local_origin.value = 0
    detection.interval.CopyFrom(seconds(OUTLIER_INTERVAL_S))
    detection.base_ejection_time.CopyFrom(seconds(OUTLIER_EJECTION_S))
    detection.max_ejection_time.CopyFrom(seconds(OUTLIER_MAX_EJECTION_S))
    detection.max_ejection_percent.value = 100 * (workers - 1) // workers
    return detection


# ------------------------------------------------------------------------------------------- listener


def _spread_readiness(hcm: Any, workers: int) -> None:
    """``/ready`` (bootstrap/admin.py) holds while at most one worker fails Envoy's health check: a worker
    restarted after a crash or replaced on purpose (draining, workers/supervisor.py) leaves the others
    serving every new request, so the gateway is still ready; with two down (or both of two) it is not."""
    for http_filter in hcm.http_filters:
        if not http_filter.typed_config.Is(health_check_http_pb2.HealthCheck.DESCRIPTOR):
            continue
        check = health_check_http_pb2.HealthCheck()
        http_filter.typed_config.Unpack(check)
        if EXTPROC_CLUSTER in check.cluster_min_healthy_percentages:
            check.cluster_min_healthy_percentages[EXTPROC_CLUSTER].value = 100.0 * (workers - 1) / workers
            http_filter.typed_config.CopyFrom(pack(check))


def _spread_hcm(hcm: Any, workers: int) -> bool:
    filters, copied = _spread_chain(hcm.http_filters, workers)
    del hcm.http_filters[:]
    hcm.http_filters.extend(filters)
    logs = [copy for log in hcm.access_log for copy in _spread_access_log(log, workers)]
    del hcm.access_log[:]
    hcm.access_log.extend(logs)
    if copied and hcm.HasField("route_config"):
        for vhost in hcm.route_config.virtual_hosts:
            _repeat_per_filter_config(vhost.typed_per_filter_config, copied, workers)
            for route in vhost.routes:
                _repeat_per_filter_config(route.typed_per_filter_config, copied, workers)
    return True


def _repeat_per_filter_config(configs: Any, copied: set[str], workers: int) -> None:
    for name in [n for n in configs if n in copied]:
        value = configs[name]
        for k in range(workers):
            configs[worker_filter_name(name, k)].CopyFrom(value)
        del configs[name]


def _spread_access_log(log: Any, workers: int) -> list[Any]:
    """A gRPC access log to the ext_proc: one copy per worker, each for the requests that worker decided."""
    if not log.typed_config.Is(als_pb2.HttpGrpcAccessLogConfig.DESCRIPTOR):
        return [log]
    config = als_pb2.HttpGrpcAccessLogConfig()
    log.typed_config.Unpack(config)
    if config.common_config.grpc_service.envoy_grpc.cluster_name != EXTPROC_CLUSTER:
        return [log]
    copies = []
    for k in range(workers):
        mine = config.__class__()
        mine.CopyFrom(config)
        mine.common_config.grpc_service.envoy_grpc.cluster_name = worker_cluster_name(k)
        # by the decision metadata, not the header: the strip before a provider removed that from the
        # request's headers by the time the entry is written
        decided = metadata_pb2.MetadataMatcher(
            filter=METADATA_NAMESPACE,
            path=[metadata_pb2.MetadataMatcher.PathSegment(key=WORKER_KEY)],
            value=value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=str(k))),
        )
        header = accesslog_pb2.AccessLogFilter(metadata_filter=accesslog_pb2.MetadataFilter(matcher=decided))
        copy = accesslog_pb2.AccessLog()
        copy.CopyFrom(log)
        copy.typed_config.CopyFrom(pack(mine))
        if log.HasField("filter"):
            copy.filter.CopyFrom(accesslog_pb2.AccessLogFilter(and_filter=accesslog_pb2.AndFilter(filters=[log.filter, header])))
        else:
            copy.filter.CopyFrom(header)
        copies.append(copy)
    return copies


# ------------------------------------------------------------------------------------------- filters


def _spread_chain(filters: Any, workers: int) -> tuple[list[Any], set[str]]:
    """A filter chain with every processor filter but the routing one rendered once per worker; the names
    of the filters copied."""
    out: list[Any] = []
    copied: set[str] = set()
    for http_filter in filters:
        composite = _spread_composite(http_filter, workers)
        if composite is not None:
            out.append(composite)
            continue
        found = _processor_of(http_filter)
        if found is None:
            out.append(_strip_worker_header(http_filter))
            continue
        processor, matcher = found
        _add_metadata(processor, WORKERS_METADATA, str(workers))
        if _processor_name(processor) == Processor.DOWNSTREAM.value:
            replaced = hcm_pb2.HttpFilter()
            replaced.CopyFrom(http_filter)
            replaced.typed_config.CopyFrom(_repack(http_filter, processor, matcher))
            out.append(replaced)
            continue
        copied.add(http_filter.name)
        for k in range(workers):
            name = worker_filter_name(http_filter.name, k)
            mine = ext_proc_pb2.ExternalProcessor()
            mine.CopyFrom(processor)
            mine.grpc_service.envoy_grpc.cluster_name = worker_cluster_name(k)
            delegate = extension_matcher_pb2.ExtensionWithMatcher(
                extension_config=extension_pb2.TypedExtensionConfig(name=name, typed_config=pack(mine)),
                xds_matcher=_worker_matcher(k, matcher),
            )
            copy = hcm_pb2.HttpFilter()
            copy.CopyFrom(http_filter)
            copy.name = name
            copy.typed_config.CopyFrom(pack(delegate))
            out.append(copy)
    return out, copied


def _spread_composite(http_filter: Any, workers: int) -> Any | None:
    """A composite filter that runs one of our processors, with a rule per worker; None for any other filter."""
    if not http_filter.typed_config.Is(extension_matcher_pb2.ExtensionWithMatcher.DESCRIPTOR):
        return None
    delegate = extension_matcher_pb2.ExtensionWithMatcher()
    http_filter.typed_config.Unpack(delegate)
    if not delegate.extension_config.typed_config.Is(composite_pb2.Composite.DESCRIPTOR):
        return None
    rules: list[Any] = []
    ours = False
    for rule in _as_rules(delegate.xds_matcher):
        found = _executed_processor(rule.on_match)
        if found is None:
            rules.append(rule)
            continue
        ours = True
        action, processor = found
        _add_metadata(processor, WORKERS_METADATA, str(workers))
        for k in range(workers):
            mine = ext_proc_pb2.ExternalProcessor()
            mine.CopyFrom(processor)
            mine.grpc_service.envoy_grpc.cluster_name = worker_cluster_name(k)
            run = composite_pb2.ExecuteFilterAction()
            run.CopyFrom(action)
            run.typed_config.typed_config.CopyFrom(pack(mine))
            on_match = matcher_pb2.Matcher.OnMatch()
            on_match.CopyFrom(rule.on_match)
            on_match.action.typed_config.CopyFrom(pack(run))
            both = _Predicate(and_matcher=_Predicate.PredicateList(predicate=[rule.predicate, _worker_is(k)]))
            rules.append(_FieldMatcher(predicate=both, on_match=on_match))
    if not ours:
        return None
    matcher = matcher_pb2.Matcher()
    if delegate.xds_matcher.HasField("on_no_match"):
        matcher.on_no_match.CopyFrom(delegate.xds_matcher.on_no_match)
    matcher.matcher_list.matchers.extend(rules)
    delegate.xds_matcher.CopyFrom(matcher)
    replaced = hcm_pb2.HttpFilter()
    replaced.CopyFrom(http_filter)
    replaced.typed_config.CopyFrom(pack(delegate))
    return replaced


def _executed_processor(on_match: Any) -> tuple[Any, Any] | None:
    """(the ExecuteFilterAction, its ext_proc config) of a composite rule that runs one of our processors."""
    if not on_match.HasField("action") or not on_match.action.typed_config.Is(composite_pb2.ExecuteFilterAction.DESCRIPTOR):
        return None
    action = composite_pb2.ExecuteFilterAction()
    on_match.action.typed_config.Unpack(action)
    if not action.typed_config.typed_config.Is(ext_proc_pb2.ExternalProcessor.DESCRIPTOR):
        return None
    processor = ext_proc_pb2.ExternalProcessor()
    action.typed_config.typed_config.Unpack(processor)
    if processor.grpc_service.envoy_grpc.cluster_name != EXTPROC_CLUSTER:
        return None
    return action, processor


def _processor_of(http_filter: Any) -> tuple[Any, Any] | None:
    """(the ext_proc config, its match_delegate matcher or None) of one of our processor filters."""
    config = http_filter.typed_config
    matcher = None
    if config.Is(extension_matcher_pb2.ExtensionWithMatcher.DESCRIPTOR):
        delegate = extension_matcher_pb2.ExtensionWithMatcher()
        config.Unpack(delegate)
        config, matcher = delegate.extension_config.typed_config, delegate.xds_matcher
    if not config.Is(ext_proc_pb2.ExternalProcessor.DESCRIPTOR):
        return None
    processor = ext_proc_pb2.ExternalProcessor()
    config.Unpack(processor)
    if processor.grpc_service.envoy_grpc.cluster_name != EXTPROC_CLUSTER:
        return None
    return processor, matcher


def _repack(http_filter: Any, processor: Any, matcher: Any) -> Any:
    if matcher is None:
        return pack(processor)
    delegate = extension_matcher_pb2.ExtensionWithMatcher()
    http_filter.typed_config.Unpack(delegate)
    delegate.extension_config.typed_config.CopyFrom(pack(processor))
    return pack(delegate)


def _processor_name(processor: Any) -> str:
    for header in processor.grpc_service.initial_metadata:
        if header.key == PROCESSOR_METADATA:
            return str(header.value)
    return Processor.DOWNSTREAM.value


def _add_metadata(processor: Any, key: str, value: str) -> None:
    processor.grpc_service.initial_metadata.append(base_pb2.HeaderValue(key=key, value=value))


def _strip_worker_header(http_filter: Any) -> Any:
    """The header strip before a provider (the header_mutation filter removing the internal headers)
    also removes the worker header."""
    if not http_filter.typed_config.Is(header_mutation_pb2.HeaderMutation.DESCRIPTOR):
        return http_filter
    mutation = header_mutation_pb2.HeaderMutation()
    http_filter.typed_config.Unpack(mutation)
    removed = {m.remove for m in mutation.mutations.request_mutations}
    if CLUSTER_HEADER not in removed or WORKER_HEADER in removed:
        return http_filter
    rules = list(mutation.mutations.request_mutations)
    position = max(i for i, m in enumerate(rules) if m.remove) + 1
    rules.insert(position, mutation_rules_pb2.HeaderMutation(remove=WORKER_HEADER))
    del mutation.mutations.request_mutations[:]
    mutation.mutations.request_mutations.extend(rules)
    replaced = hcm_pb2.HttpFilter()
    replaced.CopyFrom(http_filter)
    replaced.typed_config.CopyFrom(pack(mutation))
    return replaced


def _worker_header_from_metadata() -> Any:
    value = base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=WORKER_HEADER, value=f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{WORKER_KEY})%"),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )
    mutation = header_mutation_pb2.HeaderMutation(
        mutations=header_mutation_pb2.Mutations(request_mutations=[mutation_rules_pb2.HeaderMutation(append=value)])
    )
    return hcm_pb2.HttpFilter(name=WORKER_HEADER_FILTER, typed_config=pack(mutation))


# ------------------------------------------------------------------------------------------- matchers


def _xds_extension(name: str, message: Any) -> Any:
    return xds_extension_pb2.TypedExtensionConfig(name=name, typed_config=pack(message))


def _skip() -> Any:
    return matcher_pb2.Matcher.OnMatch(action=_xds_extension("skip", skip_action_pb2.SkipFilter()))


def _worker_matcher(worker: int, existing: Any) -> Any:
    """Skip unless ``x-plano-worker`` is `worker`; then the filter's own skip rules, in order."""
    rules = [_FieldMatcher(predicate=_Predicate(not_matcher=_worker_is(worker)), on_match=_skip())]
    matcher = matcher_pb2.Matcher()
    if existing is not None:
        rules += _as_rules(existing)
        if existing.HasField("on_no_match"):
            matcher.on_no_match.CopyFrom(existing.on_no_match)
    matcher.matcher_list.matchers.extend(rules)
    return matcher


def _worker_is(worker: int) -> Any:
    header = _xds_extension(WORKER_HEADER, http_inputs_pb2.HttpRequestHeaderMatchInput(header_name=WORKER_HEADER))
    return _Predicate(
        single_predicate=_Predicate.SinglePredicate(input=header, value_match=string_matcher_pb2.StringMatcher(exact=str(worker)))
    )


def _as_rules(matcher: Any) -> list[Any]:
    """A matcher's rules as an (ordered, first match wins) list."""
    if matcher.HasField("matcher_list"):
        return list(matcher.matcher_list.matchers)
    tree = matcher.matcher_tree
    if not matcher.HasField("matcher_tree") or tree.HasField("custom_match"):
        raise ValueError("cannot render this filter's matcher once per worker")
    rules = []
    for value, on_match in sorted(tree.exact_match_map.map.items()):
        single = _Predicate.SinglePredicate(input=tree.input, value_match=string_matcher_pb2.StringMatcher(exact=value))
        rules.append(_FieldMatcher(predicate=_Predicate(single_predicate=single), on_match=on_match))
    # a tree's prefix map takes the longest matching prefix: the list tries the longest first
    for value, on_match in sorted(tree.prefix_match_map.map.items(), key=lambda item: -len(item[0])):
        single = _Predicate.SinglePredicate(input=tree.input, value_match=string_matcher_pb2.StringMatcher(prefix=value))
        rules.append(_FieldMatcher(predicate=_Predicate(single_predicate=single), on_match=on_match))
    return rules
