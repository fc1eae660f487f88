"""Envoy's admin interface (127.0.0.1 only: it can also drain or quit Envoy) and, on request, a probe
listener reachable from outside the pod that exposes only the admin's ``/ready`` and
``/stats/prometheus`` (kubelet probes, Prometheus)."""

from __future__ import annotations

from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import string_pb2

from .common import one_endpoint, seconds, socket_address
from .filters import router
from .listener import http_connection_manager_filter

PROBE_LISTENER = "plano_probes"
ADMIN_CLUSTER = "plano_admin"


def admin(admin_port: int) -> Any:
    """Also serves Envoy's /stats/prometheus."""
    return bootstrap_pb2.Admin(address=socket_address("127.0.0.1", admin_port))


def _get(path: str, timeout_s: float) -> Any:
    get = rc.HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact="GET"))
    return rc.Route(
        match=rc.RouteMatch(path=path, headers=[get]),
        route=rc.RouteAction(cluster=ADMIN_CLUSTER, timeout=seconds(timeout_s)),
    )


def probe_listener(probe_port: int, admin_port: int) -> tuple[Any, Any]:
    """The probe listener on 0.0.0.0:``probe_port`` and the cluster that reaches the admin."""
    routes = [
        _get("/ready", 5),
        _get("/stats/prometheus", 10),
        rc.Route(match=rc.RouteMatch(prefix="/"), direct_response=rc.DirectResponseAction(status=404)),
    ]
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=PROBE_LISTENER,
        route_config=route_pb2.RouteConfiguration(
            name=PROBE_LISTENER, virtual_hosts=[rc.VirtualHost(name="probes", domains=["*"], routes=routes)]
        ),
        http_filters=[router()],
    )
    listener = listener_pb2.Listener(
        name=PROBE_LISTENER,
        address=socket_address("0.0.0.0", probe_port),
        filter_chains=[listener_components_pb2.FilterChain(filters=[http_connection_manager_filter(hcm)])],
    )
    cluster = cluster_pb2.Cluster(
        name=ADMIN_CLUSTER,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=seconds(1),
        load_assignment=one_endpoint(ADMIN_CLUSTER, socket_address("127.0.0.1", admin_port)),
    )
    return listener, cluster
