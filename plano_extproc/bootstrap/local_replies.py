"""Envoy's own error replies in the client API's error shape.

Envoy answers some requests itself: the ext_proc is down or too slow (500/504, empty body), the body is
over the buffer limit (413), the headers are too large (431), HTTP/1.0 (426), no provider host (503
"no healthy upstream"), an upstream timeout (504). An SDK expects its API's error JSON for those too, so
the connection manager's ``local_reply_config`` rewrites their bodies: one mapper per client API and
status, chosen by the request path, with the error object the API module itself defines
(``ClientApi.error_json``). Replies our processor made (response code details ``plano_extproc``) and
the route table's direct responses (already JSON) are left alone.
"""

from __future__ import annotations

from typing import Any

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import substitution_format_string_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import struct_pb2

from plano_extproc.apis import CLIENT_APIS, DEFAULT_API, ClientApi
from plano_extproc.contract import OWN_REPLY_DETAILS

from .common import pack

#: the statuses Envoy answers with itself; any other local reply gets its status class's shape
ENVOY_STATUSES = (400, 404, 408, 413, 426, 431, 500, 502, 503, 504)
#: response code details of replies that already carry a JSON body
OWN_REPLIES = (OWN_REPLY_DETAILS, "direct_response")
#: what a client reads: Envoy's reason (e.g. "no_healthy_upstream") and its body, if any
MESSAGE = "gateway: %RESPONSE_CODE_DETAILS% %LOCAL_REPLY_BODY%"


def _cel(expression: str) -> Any:
    cel = cel_pb2.ExpressionFilter(expression=expression)
    return accesslog_pb2.AccessLogFilter(
        extension_filter=accesslog_pb2.ExtensionFilter(name="envoy.access_loggers.extension_filters.cel", typed_config=pack(cel))
    )


def _paths(api: ClientApi) -> str:
    return f"(request.path.startsWith('{api.path}') || request.path.startsWith('{api.routing_path}'))"


def _format(api: ClientApi, status: int) -> Any:
    body = struct_pb2.Struct()
    body.update(api.error_json(status, MESSAGE, None))
    return substitution_format_string_pb2.SubstitutionFormatString(json_format=body, content_type="application/json")


def _mapper(api: ClientApi, status_test: str, status: int) -> Any:
    own = " && ".join(f"response.code_details != '{d}'" for d in OWN_REPLIES)
    paths = "" if api is DEFAULT_API else f" && {_paths(api)}"
    return hcm_pb2.ResponseMapper(filter=_cel(f"{own} && {status_test}{paths}"), body_format_override=_format(api, status))


def local_reply_config() -> Any:
    """Mappers in order: every API but the default one by path, then the default for everything else."""
    ordered = [api for api in CLIENT_APIS if api is not DEFAULT_API] + [DEFAULT_API]
    mappers = []
    for api in ordered:
        mappers += [_mapper(api, f"response.code == {s}", s) for s in ENVOY_STATUSES]
        mappers.append(_mapper(api, "response.code >= 500", 500))
        mappers.append(_mapper(api, "response.code >= 400", 400))
    return hcm_pb2.LocalReplyConfig(mappers=mappers)
