"""Envoy's composite cluster config (``envoy.extensions.clusters.composite.v3.ClusterConfig``).

xds-protos 1.85 does not ship it, so ``proto/plano_extproc/bootstrap/composite_cluster.proto`` declares the
part we render under Envoy's own package (the type URL Envoy checks comes from it). Its Python module lives
in this package, not under ``envoy/``, so it cannot shadow xds-protos' ``envoy`` package. When an
xds-protos release ships the message, that one is used and ours is never loaded: the same full name may
only be registered once in the protobuf descriptor pool.
"""

from __future__ import annotations

try:
    from envoy.extensions.clusters.composite.v3 import cluster_pb2 as composite_pb2
except ImportError:
    from plano_extproc.bootstrap import composite_cluster_pb2 as composite_pb2

__all__ = ["composite_pb2"]
