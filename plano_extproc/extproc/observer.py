"""The streaming observer: an ext_proc filter in ``observability_mode`` (Envoy never waits for it) that reads
a streamed answer for its time to first token and its token usage.

Envoy runs it only for requests whose client asked for a stream (``x-plano-observe: 1``, set by the routing
processor) when ``observability.responses`` is ``bodies``: one stream per such request. Response headers
(status, content type, and as attributes the request id, start time, attempt count and the decision's
attempts and client API, docs/envoy.md finding (u)), then every body chunk as it passes (STREAMED). It
records, by the model that answered, the time to the first body byte and, at the end, the token usage the
provider reported. Everything else about a request — outcome, attempts, fall-over, duration, each
attempt's status, a non-streaming answer's usage — comes from Envoy's access logs (``access_log``).

It needs nothing from the in-process record (the decision comes with the headers), so it works in any
process; where the record is at hand it lets its kept body go at the response headers (no more attempts)
and closes it at the end.

Nothing here can fail or slow a request: Envoy does not wait for these streams, no reply is ever sent, and
every error is swallowed (logged at debug). Per body chunk the work is a length check and, for SSE, a
scan for newlines and ``"usage"``.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from envoy.service.ext_proc.v3 import external_processor_pb2 as ext

from plano_extproc.apis import BY_NAME
from plano_extproc.contract import (
    API_ATTRIBUTE,
    ATTEMPT_COUNT_ATTRIBUTE,
    ATTEMPTS_ATTRIBUTE,
    REQUEST_ID_ATTRIBUTE,
    REQUEST_TIME_ATTRIBUTE,
    Processor,
    attempts_of,
    model_for_attempt,
)
from plano_extproc.extproc.tracking import InFlightRequests
from plano_extproc.forwarding import Forwarder
from plano_extproc.metrics import Metrics
from plano_extproc.usage import UsageReader, usage_reader

log = logging.getLogger(__name__)

#: the processors whose streams are observers (Envoy ignores their replies)
OBSERVERS = frozenset({Processor.OBSERVE})

_MAX_CLOCK_SKEW = 86_400.0


class ObserverContext:
    """Shared by all observer streams: the metrics and the in-flight request records."""

    def __init__(self, metrics: Metrics, inflight: InFlightRequests, forwarder: Forwarder) -> None:
        self.metrics = metrics
        self.inflight = inflight
        self.forwarder = forwarder


def _attributes(request: ext.ProcessingRequest) -> dict[str, object]:
    out: dict[str, object] = {}
    for struct in request.attributes.values():  # keyed by the filter's name
        for key, value in struct.fields.items():
            kind = value.WhichOneof("kind")
            out[key] = value.number_value if kind == "number_value" else value.string_value if kind == "string_value" else None
    return out


def _headers(headers: ext.HttpHeaders, wanted: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for h in headers.headers.headers:
        if h.key in wanted:
            out[h.key] = h.raw_value.decode("latin-1") if h.raw_value else h.value
    return out


def _int(value: object, default: int) -> int:
    if isinstance(value, (int, float, str)):
        try:
            return int(value)
        except ValueError:
            pass
    return default


class ResponseObserver:
    """One streamed answer, as the provider sends it (before any translation)."""

    __slots__ = ("ctx", "done", "first_byte", "model", "ok", "reader", "request_id", "started_wall")

    def __init__(self, ctx: ObserverContext) -> None:
        self.ctx = ctx
        self.request_id = ""
        self.ok = False  # a 2xx answer
        self.model = ""
        self.reader: UsageReader | None = None
        self.started_wall: float | None = None  # Envoy's request.time (wall clock)
        self.first_byte = False
        self.done = False

    async def handle(self, request: ext.ProcessingRequest) -> None:
        if self.done:
            return
        try:
            kind = request.WhichOneof("request")
            if kind == "response_body":
                body = request.response_body
                if body.body:
                    if not self.first_byte:
                        self._first_byte()
                    if self.reader is not None:
                        self.reader.feed(body.body)
                if body.end_of_stream:
                    self.finish()
            elif kind == "response_headers":
                self._headers(request)
            elif kind == "response_trailers":
                self.finish()
        except Exception:  # observation never fails a request
            log.debug("response observer failed", exc_info=True)
            self.done = True
        return

    def _headers(self, request: ext.ProcessingRequest) -> None:
        attrs = _attributes(request)
        self.request_id = str(attrs.get(REQUEST_ID_ATTRIBUTE) or "")
        attempts = attempts_of(attrs.get(ATTEMPTS_ATTRIBUTE))
        api = BY_NAME.get(str(attrs.get(API_ATTRIBUTE) or ""))
        if not attempts or api is None:  # not a request our routing processor forwarded
            self.done = True
            return
        if self.request_id:
            self.ctx.inflight.responding(self.request_id)  # no more attempts: a kept body can go
        headers = request.response_headers
        h = _headers(headers, (":status", "content-type", "content-encoding"))
        status = _int(h.get(":status"), 0)
        self.model = model_for_attempt(attempts, _int(attrs.get(ATTEMPT_COUNT_ATTRIBUTE), 1))
        self.started_wall = _parse_time(attrs.get(REQUEST_TIME_ATTRIBUTE))
        self.ok = 200 <= status < 300
        if self.ok:
            # the observer sees the provider's answer (before any translation): read it in the API it was in
            route = self.ctx.forwarder.route(api, self.model)
            if route is not None:
                wire = BY_NAME[route.wire]
                self.reader = usage_reader(wire.read_usage, h.get("content-type", ""), h.get("content-encoding", ""))
        if headers.end_of_stream:
            self.finish()

    def _first_byte(self) -> None:
        self.first_byte = True
        if self.ok and self.started_wall is not None:
            elapsed = time.time() - self.started_wall
            if 0 <= elapsed < _MAX_CLOCK_SKEW:
                self.ctx.metrics.record_first_token(self.model, elapsed)

    def finish(self) -> None:
        """Record the usage once: at the end of the answer, or when the stream ends early."""
        if self.done:
            return
        self.done = True
        if self.reader is not None:
            usage = self.reader.result()
            if usage is not None:
                self.ctx.metrics.record_tokens(self.model, usage.input_tokens, usage.output_tokens)
        if self.request_id:
            self.ctx.inflight.close(self.request_id)


def _parse_time(value: object) -> float | None:
    """Envoy's ``request.time`` attribute (RFC 3339, e.g. ``2026-01-02T03:04:05.123456+00:00``)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
