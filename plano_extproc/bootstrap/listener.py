"""The gateway listener: HTTP connection manager with the downstream filter chain, the route table, a
JSON access log on stdout, the request log for response observation (gRPC, access_logs.py) and, when
configured, Envoy's own OpenTelemetry spans."""

from __future__ import annotations

from typing import Any

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import address_pb2, grpc_service_pb2, substitution_format_string_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.tracing.v3 import custom_tag_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import struct_pb2
from google.protobuf.wrappers_pb2 import UInt32Value

from plano_extproc.config import PlanoConfig

from .access_logs import request_log
from .clusters import OTEL_CLUSTER
from .common import BUFFER_LIMIT_BYTES, pack, seconds, socket_address
from .filters import Observation, downstream_chain
from .local_replies import local_reply_config
from .routes import route_config

LISTENER = "plano_listener"
#: Without bytes for this long a stream is closed (non-streamed generations can be silent for minutes).
STREAM_IDLE_TIMEOUT_S = 900

#: one JSON line per request; no header that could carry a key or a prompt
ACCESS_LOG_FIELDS = {
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


def http_connection_manager_filter(hcm: Any) -> Any:
    """The network filter that carries ``hcm`` (also used by the probe listener)."""
    return listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager", typed_config=pack(hcm))


def _access_log() -> Any:
    fields = struct_pb2.Struct()
    fields.update(ACCESS_LOG_FIELDS)
    log_format = substitution_format_string_pb2.SubstitutionFormatString(json_format=fields)
    stdout = stream_pb2.StdoutAccessLog(log_format=log_format)
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.stdout", typed_config=pack(stdout))


def _tracing(config: PlanoConfig) -> Any:
    """Envoy's own spans (one per request, joined to the client's traceparent or the one the processor
    sets upstream) go to the same collector as the ext_proc's, over OTLP/gRPC."""
    otel = opentelemetry_pb2.OpenTelemetryConfig(
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=OTEL_CLUSTER), timeout=seconds(1)
        ),
        service_name="plano-envoy",
    )
    return hcm_pb2.HttpConnectionManager.Tracing(
        random_sampling=percent_pb2.Percent(value=config.tracing.sampling_ratio * 100),
        provider=http_tracer_pb2.Tracing.Http(name="envoy.tracers.opentelemetry", typed_config=pack(otel)),
        # plano's span_attributes.static on Envoy's spans too (header prefixes exist only for the ext_proc's:
        # Envoy tags name exact headers)
        custom_tags=[
            custom_tag_pb2.CustomTag(tag=key, literal=custom_tag_pb2.CustomTag.Literal(value=value))
            for key, value in sorted(config.tracing.span_attributes.static.items())
        ],
    )


def listener(config: PlanoConfig, port: int, fingerprint: str, observation: Observation) -> Any:
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix="plano",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        stream_idle_timeout=seconds(STREAM_IDLE_TIMEOUT_S),
        route_config=route_config(config, observation),
        http_filters=downstream_chain(config, fingerprint, observation),
        access_log=[_access_log(), *([request_log(fingerprint)] if observation.enabled else [])],
        # an edge listener: every client is external, whatever its address. Envoy then strips the
        # x-envoy-* control headers clients send, makes its own x-request-id (the processors key their
        # in-flight records by it), and trusts no X-Forwarded-For.
        # (an empty internal address list means Envoy's default, loopback and private ranges: name one
        # address no peer can have instead, so a client on loopback - a sidecar's app - is external too)
        xff_num_trusted_hops=0,
        internal_address_config=hcm_pb2.HttpConnectionManager.InternalAddressConfig(
            cidr_ranges=[address_pb2.CidrRange(address_prefix="0.0.0.0", prefix_len=UInt32Value(value=32))]
        ),
        local_reply_config=local_reply_config(),
    )
    hcm.use_remote_address.value = True
    if config.tracing.envoy_otlp_grpc:
        hcm.tracing.CopyFrom(_tracing(config))
    result = listener_pb2.Listener(
        name=LISTENER,
        address=socket_address(config.listener_address, port),
        filter_chains=[listener_components_pb2.FilterChain(filters=[http_connection_manager_filter(hcm)])],
    )
    # 413 comes from this limit in BUFFERED mode (docs/envoy.md)
    result.per_connection_buffer_limit_bytes.value = BUFFER_LIMIT_BYTES
    return result
