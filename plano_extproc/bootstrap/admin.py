"""Envoy's admin interface and, on request, a probe listener that exposes only readiness and
``/stats/prometheus`` (kubelet probes, Prometheus, `up`'s users).

The admin can drain or quit Envoy and switch it to debug logging, which prints request headers — the
providers' keys among them. So it listens on 127.0.0.1 (a TCP port) or, better, on a Unix socket only its
owner may open (mode 0600, what `up` uses); readiness and stats reach the outside only through the probe
listener. Readiness there also requires the ext_proc to be healthy (its cluster is health-checked over
gRPC): a gateway whose processor is down is not ready, though Envoy itself is.
"""

from __future__ import annotations

from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.health_check.v3 import health_check_pb2 as health_check_http_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import string_pb2

from plano_extproc.contract import EXTPROC_CLUSTER

from .common import one_endpoint, pipe_address, seconds, socket_address
from .filters import http_filter, router
from .listener import http_connection_manager_filter

PROBE_LISTENER = "plano_probes"
ADMIN_CLUSTER = "plano_admin"


#: an admin Unix socket only its owner may use
ADMIN_SOCKET_MODE = 0o600


def admin_address(admin: int | str) -> Any:
    """`admin`: a port on 127.0.0.1, or ``unix:/path`` (created with mode 0600)."""
    if isinstance(admin, str) and admin.startswith("unix:"):
        return pipe_address(admin[len("unix:") :], ADMIN_SOCKET_MODE)
    return socket_address("127.0.0.1", int(admin))


def admin(admin: int | str) -> Any:
    """Also serves Envoy's /stats/prometheus."""
    return bootstrap_pb2.Admin(address=admin_address(admin))


def _get(path: str, timeout_s: float) -> Any:
    get = rc.HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact="GET"))
    return rc.Route(
        match=rc.RouteMatch(path=path, headers=[get]),
        route=rc.RouteAction(cluster=ADMIN_CLUSTER, timeout=seconds(timeout_s)),
    )


def readiness_filter() -> Any:
    """``/ready`` answers 200 only while every ext_proc host passes its gRPC health check (with N worker
    processes, all but one: bootstrap/workers.py) and, passed through, while the admin itself says ready;
    503 otherwise."""
    check = health_check_http_pb2.HealthCheck(
        headers=[rc.HeaderMatcher(name=":path", string_match=string_pb2.StringMatcher(exact="/ready"))],
    )
    check.pass_through_mode.value = False
    check.cluster_min_healthy_percentages[EXTPROC_CLUSTER].value = 100.0
    return http_filter("envoy.filters.http.health_check", check)


def probe_listener(probe_port: int, admin: int | str, address: str = "0.0.0.0") -> tuple[Any, Any]:
    """The probe listener on ``address``:``probe_port`` and the cluster that reaches the admin."""
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
        http_filters=[readiness_filter(), router()],
    )
    listener = listener_pb2.Listener(
        name=PROBE_LISTENER,
        address=socket_address(address, probe_port),
        filter_chains=[listener_components_pb2.FilterChain(filters=[http_connection_manager_filter(hcm)])],
    )
    cluster = cluster_pb2.Cluster(
        name=ADMIN_CLUSTER,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=seconds(1),
        load_assignment=one_endpoint(ADMIN_CLUSTER, admin_address(admin)),
    )
    return listener, cluster
