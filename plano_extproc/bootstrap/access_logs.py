"""The gRPC access logs that carry response observation to the ext_proc service (``observability.responses``
``headers`` or ``bodies``).

Envoy batches access-log entries on one long-lived gRPC stream per worker and logger, so observing a
response costs the Python process a share of one message instead of a gRPC stream per request
(docs/envoy.md finding (v)):

* the request log (the HCM's ``access_log``): one entry per request the routing processor forwarded —
  final status, attempt count, timings, the decision metadata and the usage counts json_to_metadata wrote;
* the attempt log (the router's ``upstream_log``): one entry per upstream attempt — its status and the
  sub-cluster of its model (a 429 that Envoy retried included).

With ``bodies``, json_to_metadata (``filters.usage_filter``) adds a non-streaming answer's token counts to
the request's metadata, and streamed answers pass the streaming observer (``filters.observer_filter``) for
their time to first token and token usage.
"""

from __future__ import annotations

from typing import Any

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.type.matcher.v3 import metadata_pb2, value_pb2

from plano_extproc.contract import (
    ATTEMPT_LOG,
    DECIDED_KEY,
    EXTPROC_CLUSTER,
    FINGERPRINT_METADATA,
    METADATA_NAMESPACE,
    REQUEST_LOG,
)

from .common import pack, seconds

#: how long Envoy holds access-log entries before sending them (Envoy's default, 1 s) ...
ACCESS_LOG_FLUSH_S = 1.0
#: ... unless this many bytes are waiting (Envoy's default is 16 KiB: at ~0.7 KiB an entry, a few dozen
#: entries per gRPC message under load)
ACCESS_LOG_BUFFER_BYTES = 64 * 1024


def _logger(log_name: str, fingerprint: str, log_filter: Any = None) -> Any:
    service = grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=EXTPROC_CLUSTER),
        # the service ignores entries of a bootstrap rendered from another config (their clusters and
        # decisions are not this config's)
        initial_metadata=[base_pb2.HeaderValue(key=FINGERPRINT_METADATA, value=fingerprint)],
    )
    common = als_pb2.CommonGrpcAccessLogConfig(
        log_name=log_name,
        grpc_service=service,
        transport_api_version=config_source_pb2.V3,
        buffer_flush_interval=seconds(ACCESS_LOG_FLUSH_S),
    )
    common.buffer_size_bytes.value = ACCESS_LOG_BUFFER_BYTES
    config = als_pb2.HttpGrpcAccessLogConfig(common_config=common)
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.http_grpc", filter=log_filter, typed_config=pack(config))


def request_log(fingerprint: str) -> Any:
    """One entry per proxied request: only requests the routing processor forwarded (the decision metadata
    is there); decision-only requests, 404s and the requests it answered itself are counted by it."""
    decided = accesslog_pb2.MetadataFilter(
        matcher=metadata_pb2.MetadataMatcher(
            filter=METADATA_NAMESPACE,
            path=[metadata_pb2.MetadataMatcher.PathSegment(key=DECIDED_KEY)],
            value=value_pb2.ValueMatcher(present_match=True),
        )
    )
    # without this a request without the key is logged (the default is true)
    decided.match_if_key_not_found.value = False
    return _logger(REQUEST_LOG, fingerprint, accesslog_pb2.AccessLogFilter(metadata_filter=decided))


def attempt_log(fingerprint: str) -> Any:
    """One entry per upstream attempt (the router's ``upstream_log``). No filter: an attempt's entry has no
    dynamic metadata, and every upstream request through the router is one the processor forwarded."""
    return _logger(ATTEMPT_LOG, fingerprint)
