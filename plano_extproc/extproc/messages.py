"""Small builders for ext_proc protobuf messages, shared by both processors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from envoy.type.v3 import http_status_pb2

from plano_extproc.contract import OWN_REPLY_DETAILS

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


class Exchange(Protocol):
    """One ext_proc stream's processor: a reply per message (None for observers), `finish` at the end.
    `done` turns true when the processor expects no more messages: the server then closes the stream
    (Envoy treats that as processing complete), so nothing on that stream can fail the request later."""

    done: bool

    async def handle(self, request: ext.ProcessingRequest) -> ext.ProcessingResponse | None: ...

    def finish(self) -> None: ...


def header_dict(headers: ext.HttpHeaders) -> dict[str, str]:
    """Request headers as a dict of lower-case names. Envoy sends values in raw_value (bytes)."""
    return read_headers(headers)[0]


def read_headers(headers: ext.HttpHeaders) -> tuple[dict[str, str], int]:
    """`header_dict`, and the headers' size as Envoy counts it against its limits (names and values, in
    bytes), in the same pass."""
    out: dict[str, str] = {}
    size = 0
    for h in headers.headers.headers:
        key, raw = h.key, h.raw_value
        if raw:
            out[key] = raw.decode("utf-8", "replace")
            size += len(key) + len(raw)
        else:
            value = out[key] = h.value
            size += len(key) + len(value.encode())
    return out, size


#: prebuilt header options by (name, value): most headers a processor sets repeat from request to
#: request (the cluster, the internal switches, the gateway's own provider key), and building a
#: HeaderValueOption costs ~4x copying one in (profiled: 18 vs 5 us for the 12 headers of a proxied
#: request). Bounded: emptied when full. Client credentials (passthrough) and per-request values are not
#: kept: a client's key must not outlive its request here.
_OPTIONS: dict[tuple[str, str], base_pb2.HeaderValueOption] = {}
_OPTIONS_MAX = 1024
_NOT_KEPT = frozenset({"authorization", "x-api-key", "api-key", "traceparent", "content-length", "x-request-id"})


def header_option(key: str, value: str) -> base_pb2.HeaderValueOption:
    option = _OPTIONS.get((key, value))
    if option is None:
        option = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, raw_value=value.encode()), append_action=_OVERWRITE)
        if key not in _NOT_KEPT:
            if len(_OPTIONS) >= _OPTIONS_MAX:
                _OPTIONS.clear()
            _OPTIONS[(key, value)] = option
    return option


def header_mutation(set_headers: Iterable[tuple[str, str]] = (), remove: Iterable[str] = ()) -> ext.HeaderMutation:
    # the message copies each option in: a kept one is never changed by what is done to the reply
    return ext.HeaderMutation(set_headers=[header_option(k, v) for k, v in set_headers], remove_headers=list(remove))


def continue_headers(
    mutation: ext.HeaderMutation | None = None, *, clear_route_cache: bool = False, body: bytes | None = None
) -> ext.ProcessingResponse:
    """Continue after the headers; with `body`, replace the body too (CONTINUE_AND_REPLACE): Envoy then
    sends no body message for this stream."""
    if body is not None:
        common = ext.CommonResponse(
            status=ext.CommonResponse.CONTINUE_AND_REPLACE,
            header_mutation=mutation,
            body_mutation=ext.BodyMutation(body=body),
            clear_route_cache=clear_route_cache,
        )
    elif mutation or clear_route_cache:
        common = ext.CommonResponse(header_mutation=mutation, clear_route_cache=clear_route_cache)
    else:
        common = ext.CommonResponse()
    return ext.ProcessingResponse(request_headers=ext.HeadersResponse(response=common))


def continue_body(
    mutation: ext.HeaderMutation | None = None, body: bytes | None = None, *, clear_route_cache: bool = False
) -> ext.ProcessingResponse:
    common = ext.CommonResponse(
        header_mutation=mutation,
        body_mutation=ext.BodyMutation(body=body) if body is not None else None,
        clear_route_cache=clear_route_cache,
    )
    return ext.ProcessingResponse(request_body=ext.BodyResponse(response=common))


def immediate(
    status: int, body: bytes, content_type: str = "application/json", extra: Iterable[tuple[str, str]] = (), details: str = OWN_REPLY_DETAILS
) -> ext.ProcessingResponse:
    """A reply Envoy sends the client instead of proxying; marked as ours so Envoy's local reply mappers
    do not wrap it a second time."""
    return ext.ProcessingResponse(
        immediate_response=ext.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=status),
            headers=header_mutation([("content-type", content_type), *extra]),
            body=body,
            details=details,
        )
    )
