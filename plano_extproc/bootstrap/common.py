"""What the listener, routes, clusters and filters share: the buffer limit, and small helpers at the
protobuf boundary (packing a typed config into an ``Any``, durations, addresses).

xds-protos ships no type stubs, so every Envoy message class is ``Any`` to a type checker; the helpers
here keep that to the messages themselves.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from envoy.config.core.v3 import address_pb2, extension_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message

#: Per-connection (listener) and per-cluster buffer limit. Envoy's default is 1 MiB; in BUFFERED mode a
#: chat request bigger than the limit is answered 413 before our processor sees it, and the router can
#: only retry (= fall over to the next model) a request whose body fits in this buffer. Long
#: conversations with images or documents easily pass 1 MiB, so allow 32 MiB deliberately.
BUFFER_LIMIT_BYTES = 32 * 1024 * 1024

#: the key of a cluster's ``typed_extension_protocol_options`` that Envoy's HTTP upstream reads
HTTP_PROTOCOL_OPTIONS = http_protocol_options_pb2.HttpProtocolOptions.DESCRIPTOR.full_name


def pack(message: Message) -> any_pb2.Any:
    """``message`` as a ``google.protobuf.Any``: the ``@type`` URL comes from the message's own type."""
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def typed_extension(name: str, message: Message) -> Any:
    """An ``envoy.config.core.v3.TypedExtensionConfig`` (filters, matcher inputs and actions, sockets)."""
    return extension_pb2.TypedExtensionConfig(name=name, typed_config=pack(message))


def seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(value * 1_000_000_000))
    return duration


def milliseconds(value: int) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(value)
    return duration


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def socket_address(host: str, port: int) -> Any:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


def pipe_address(path: str, mode: int = 0) -> Any:
    """A Unix socket; `mode` (e.g. 0o600) restricts who may connect when Envoy creates it."""
    return address_pb2.Address(pipe=address_pb2.Pipe(path=path, mode=mode))


def one_endpoint(cluster_name: str, address: Any, hostname: str = "") -> Any:
    """A ``ClusterLoadAssignment`` with a single endpoint (``hostname``: the Host ``auto_host_rewrite`` uses)."""
    endpoint = endpoint_components_pb2.Endpoint(address=address, hostname=hostname)
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster_name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[endpoint_components_pb2.LbEndpoint(endpoint=endpoint)]
            )
        ],
    )


def set_http_protocol_options(cluster: Any, options: Any) -> None:
    """Attach ``HttpProtocolOptions`` to ``cluster`` (the only protocol options we render)."""
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(pack(options))
