"""The clusters: one per declared model, one composite per prebuilt attempt list, our ext_proc service,
the decision black hole and (optionally) the OTLP collector for Envoy's spans.

API keys never appear here: they live only in the ext_proc process; the processors inject them.
"""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2
from envoy.type.matcher.v3 import string_pb2

from plano_extproc.config import Overrides, ProviderConfig, duration_seconds
from plano_extproc.contract import DECISION_CLUSTER, EXTPROC_CLUSTER, composite_cluster_name, model_cluster_name
from plano_extproc.providers import endpoint_for

from .common import (
    BUFFER_LIMIT_BYTES,
    is_ip,
    one_endpoint,
    pack,
    pipe_address,
    seconds,
    set_http_protocol_options,
    socket_address,
)
from .composite import composite_pb2
from .filters import upstream_chain

#: System CA bundle used to verify provider certificates (Debian/Ubuntu/Alpine path).
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
UPSTREAM_CONNECT_TIMEOUT_S = 5
#: The ext_proc cluster carries one gRPC stream per request per phase; the default circuit breakers (1024
#: requests) would cap the gateway at a few hundred concurrent requests.
EXTPROC_CIRCUIT_LIMIT = 100_000
#: Streams per HTTP/2 connection to the ext_proc before Envoy opens another connection.
EXTPROC_MAX_CONCURRENT_STREAMS = 1024
OTEL_CLUSTER = "plano_otel_collector"

_Cluster = cluster_pb2.Cluster


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


def _cluster(name: str, *, connect_timeout_s: float, buffer_limit: bool = True, **fields: Any) -> Any:
    cluster = _Cluster(name=name, connect_timeout=seconds(connect_timeout_s), **fields)
    if buffer_limit:
        cluster.per_connection_buffer_limit_bytes.value = BUFFER_LIMIT_BYTES
    return cluster


def _tls(san: str, ca_bundle: str) -> Any:
    """TLS with SNI, the system CAs (or `overrides.upstream_tls_ca_path`) and the provider's name as the
    only accepted SAN."""
    validation = common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(filename=ca_bundle),
        match_typed_subject_alt_names=[
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.DNS, matcher=string_pb2.StringMatcher(exact=san)
            )
        ],
    )
    context = tls_pb2.UpstreamTlsContext(
        sni=san, common_tls_context=tls_pb2.CommonTlsContext(validation_context=validation)
    )
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(context))


def model_cluster(provider: ProviderConfig, overrides: Overrides) -> Any:
    endpoint = endpoint_for(provider.interface, provider.base_url)
    name = model_cluster_name(provider.model)
    connect = overrides.upstream_connect_timeout
    cluster = _cluster(
        name,
        connect_timeout_s=duration_seconds(connect) if connect else UPSTREAM_CONNECT_TIMEOUT_S,
        # the endpoint's hostname is what the route's auto_host_rewrite sends as this attempt's Host
        load_assignment=one_endpoint(
            name, socket_address(endpoint.host, endpoint.port), hostname=endpoint.host_header(provider.http_host)
        ),
    )
    if is_ip(endpoint.host):
        cluster.type = _Cluster.STATIC
    else:
        # One logical connection target per provider API host (the recommended type for large web services
        # behind rotating DNS); prefer IPv4, many containers have no IPv6 route.
        cluster.type = _Cluster.LOGICAL_DNS
        cluster.dns_lookup_family = _Cluster.V4_PREFERRED
    options = hpo_pb2.HttpProtocolOptions()
    if endpoint.tls:
        cluster.transport_socket.CopyFrom(_tls(provider.http_host or endpoint.host, overrides.upstream_tls_ca_path or CA_BUNDLE))
        # HTTP/2 when the provider offers it through ALPN, else HTTP/1.1
        options.auto_config.http_protocol_options.SetInParent()
        options.auto_config.http2_protocol_options.SetInParent()
    else:
        options.explicit_http_config.http_protocol_options.SetInParent()
    set_http_protocol_options(cluster, options)
    return cluster


def composite_cluster(attempts: tuple[str, ...], fingerprint: str) -> Any:
    """Attempt N goes to sub-cluster N (finding (a)); only the composite's own upstream filters run, once
    per attempt (docs/envoy.md)."""
    entries = [composite_pb2.ClusterConfig.ClusterEntry(name=model_cluster_name(m)) for m in attempts]
    cluster = _cluster(
        composite_cluster_name(attempts),
        connect_timeout_s=UPSTREAM_CONNECT_TIMEOUT_S,
        lb_policy=_Cluster.CLUSTER_PROVIDED,
        cluster_type=_Cluster.CustomClusterType(
            name="envoy.clusters.composite", typed_config=pack(composite_pb2.ClusterConfig(clusters=entries))
        ),
    )
    options = hpo_pb2.HttpProtocolOptions(http_filters=upstream_chain(fingerprint))
    # required next to http_filters; the sub-cluster's protocol options drive the connection
    options.use_downstream_protocol_config.SetInParent()
    set_http_protocol_options(cluster, options)
    return cluster


#: how often Envoy pings its connections to the ext_proc (the server side accepts it, extproc.server)
EXTPROC_KEEPALIVE_S = 30
#: the ext_proc's gRPC health, checked actively: readiness (the probe listener) follows it
EXTPROC_HEALTH_INTERVAL_S = 2


def extproc_cluster(extproc_address: str, keepalive_s: float = EXTPROC_KEEPALIVE_S) -> Any:
    """Our gRPC service over HTTP/2 (TCP or a Unix socket), with circuit breakers sized for one stream
    per request per processor, and an active gRPC health check."""
    kind, host, port = parse_extproc_address(extproc_address)
    address = pipe_address(host) if kind == "unix" else socket_address(host, port)
    cluster = _cluster(EXTPROC_CLUSTER, connect_timeout_s=1, load_assignment=one_endpoint(EXTPROC_CLUSTER, address))
    if kind == "tcp" and not is_ip(host):
        cluster.type = _Cluster.STRICT_DNS
        cluster.dns_lookup_family = _Cluster.V4_PREFERRED
    else:
        cluster.type = _Cluster.STATIC
    threshold = circuit_breaker_pb2.CircuitBreakers.Thresholds(priority=base_pb2.DEFAULT)
    for limit in (threshold.max_connections, threshold.max_pending_requests, threshold.max_requests):
        limit.value = EXTPROC_CIRCUIT_LIMIT
    cluster.circuit_breakers.thresholds.append(threshold)
    http2 = protocol_pb2.Http2ProtocolOptions(
        connection_keepalive=protocol_pb2.KeepaliveSettings(interval=seconds(keepalive_s), timeout=seconds(5))
    )
    http2.max_concurrent_streams.value = EXTPROC_MAX_CONCURRENT_STREAMS
    options = hpo_pb2.HttpProtocolOptions()
    options.explicit_http_config.http2_protocol_options.CopyFrom(http2)
    set_http_protocol_options(cluster, options)
    check = health_check_pb2.HealthCheck(
        timeout=seconds(1),
        interval=seconds(EXTPROC_HEALTH_INTERVAL_S),
        # Envoy counts the filters' gRPC streams as no traffic and would otherwise check once a minute
        no_traffic_interval=seconds(EXTPROC_HEALTH_INTERVAL_S),
        no_traffic_healthy_interval=seconds(EXTPROC_HEALTH_INTERVAL_S),
        grpc_health_check=health_check_pb2.HealthCheck.GrpcHealthCheck(),
    )
    check.unhealthy_threshold.value = 2
    check.healthy_threshold.value = 1
    cluster.health_checks.append(check)
    return cluster


def otel_cluster(address: str) -> Any:
    """The OTLP/gRPC collector for Envoy's own spans (``tracing.envoy_otlp_grpc``: host:port)."""
    host, _, port = address.rpartition(":")
    cluster = _cluster(
        OTEL_CLUSTER,
        connect_timeout_s=2,
        buffer_limit=False,
        type=_Cluster.STATIC if is_ip(host) else _Cluster.STRICT_DNS,
        load_assignment=one_endpoint(OTEL_CLUSTER, socket_address(host, int(port))),
    )
    options = hpo_pb2.HttpProtocolOptions()
    options.explicit_http_config.http2_protocol_options.SetInParent()
    set_http_protocol_options(cluster, options)
    return cluster


def decision_cluster() -> Any:
    """Never reached: /routing/v1/ requests are answered by the processor. No endpoints: if it ever were
    reached, Envoy answers 503 "no healthy upstream" rather than sending the request anywhere."""
    return _cluster(
        DECISION_CLUSTER,
        connect_timeout_s=1,
        buffer_limit=False,
        type=_Cluster.STATIC,
        load_assignment=endpoint_pb2.ClusterLoadAssignment(cluster_name=DECISION_CLUSTER),
    )
