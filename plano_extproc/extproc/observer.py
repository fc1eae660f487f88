"""The response-path observers: ext_proc filters in ``observability_mode`` (Envoy never waits for them).

* ``observe`` (downstream HCM, after the routing processor): one stream per proxied request. Response
  headers (status, content type, the attempt count and request id as attributes), then — when body
  observation is rendered — every body chunk as it passes (STREAMED). At the end of the response it
  records the request outcome, the attempts and fall-over, time to first body byte, the operation
  duration and the token usage the provider reported, all by the model that answered, and closes the
  request's InFlightRequests record.
* ``upstream-observe`` (the composite cluster's upstream filters): one stream per *failed* attempt
  (Envoy skips the filter for a 2xx status, docs/envoy.md finding (j)), response headers only: the
  provider's status for that attempt's model (a 429 that Envoy retried included). The final 2xx answer
  is counted by ``observe``, which knows the model of the final attempt.

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
    ATTEMPT_COUNT_ATTRIBUTE,
    REQUEST_ID_ATTRIBUTE,
    REQUEST_TIME_ATTRIBUTE,
    DecisionMetadata,
    Processor,
    model_for_attempt,
)
from plano_extproc.extproc.tracking import InFlightRequests, RequestRecord
from plano_extproc.forwarding import Forwarder
from plano_extproc.metrics import Metrics
from plano_extproc.usage import UsageReader, usage_reader

log = logging.getLogger(__name__)

#: the processors whose streams are observers (Envoy ignores their replies)
OBSERVERS = frozenset({Processor.OBSERVE, Processor.UPSTREAM_OBSERVE})

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
    """One proxied request's response, as the client receives it."""

    __slots__ = ("attempt", "ctx", "done", "first_byte", "model", "reader", "record", "request_id", "started_wall", "status")

    def __init__(self, ctx: ObserverContext) -> None:
        self.ctx = ctx
        self.request_id = ""
        self.record: RequestRecord | None = None
        self.status = 0
        self.attempt = 1
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
        self.record = self.ctx.inflight.get(self.request_id) if self.request_id else None
        if self.record is None:  # not a request our downstream processor forwarded (or long evicted)
            self.done = True
            return
        headers = request.response_headers
        h = _headers(headers, (":status", "content-type", "content-encoding"))
        self.status = _int(h.get(":status"), 0)
        record = self.record
        self.attempt = max(1, _int(attrs.get(ATTEMPT_COUNT_ATTRIBUTE), record.tried or 1))
        if record.tried == self.attempt and record.model:
            self.model = record.model
        elif record.attempts:
            self.model = model_for_attempt(record.attempts, self.attempt)
        self.ctx.inflight.responding(self.request_id)  # no more attempts: the kept body can go
        self.started_wall = _parse_time(attrs.get(REQUEST_TIME_ATTRIBUTE))
        if 200 <= self.status < 300:
            # the observer sees the provider's answer (before any translation): read it in the API it was in
            api = BY_NAME.get(record.api)
            route = self.ctx.forwarder.route(api, self.model) if api is not None else None
            if route is not None:
                wire = BY_NAME[route.wire]
                self.reader = usage_reader(wire.read_usage, h.get("content-type", ""), h.get("content-encoding", ""))
        if headers.end_of_stream:
            self.finish()

    def _elapsed(self) -> float:
        if self.started_wall is not None:
            elapsed = time.time() - self.started_wall
            if 0 <= elapsed < _MAX_CLOCK_SKEW:
                return elapsed
        assert self.record is not None
        return time.monotonic() - self.record.started

    def _first_byte(self) -> None:
        self.first_byte = True
        if self.record is not None and 200 <= self.status < 300:
            self.ctx.metrics.record_first_token(self.model, self._elapsed())

    def finish(self) -> None:
        """Record everything once: at the end of the response, or when the stream ends early."""
        if self.done:
            return
        self.done = True
        record = self.record
        if record is None:
            return
        m = self.ctx.metrics
        status = self.status or 499  # stream gone before any response headers: the client went away
        m.record_request("proxy", record.api, status)
        first = record.attempts[0] if record.attempts else self.model
        m.record_attempts(self.attempt, self.model, first)
        elapsed = self._elapsed()
        m.operation_duration.labels(m.model_label(self.model)).observe(elapsed)
        if 200 <= self.status < 300:  # the upstream observer skips 2xx attempts (finding (j))
            m.record_upstream_response(self.model, self.status)
            if m.live_latency is not None:
                m.live_latency.add(self.model, "total", elapsed)
        if self.reader is not None:
            usage = self.reader.result()
            if usage is not None:
                m.record_tokens(self.model, usage.input_tokens, usage.output_tokens)
        # last: a closed record tells that everything about the request is recorded
        self.ctx.inflight.close(self.request_id)


class AttemptObserver:
    """One upstream attempt's response headers (composite cluster filter): status by the attempt's model."""

    __slots__ = ("ctx", "done")

    def __init__(self, ctx: ObserverContext) -> None:
        self.ctx = ctx
        self.done = False

    async def handle(self, request: ext.ProcessingRequest) -> None:
        if self.done or request.WhichOneof("request") != "response_headers":
            return
        self.done = True
        try:
            status = _int(_headers(request.response_headers, (":status",)).get(":status"), 0)
            attrs = _attributes(request)
            attempt = max(1, _int(attrs.get(ATTEMPT_COUNT_ATTRIBUTE), 1))
            decision = DecisionMetadata.from_metadata(request.metadata_context)
            models = decision.attempts if decision is not None else ()
            if not models:
                record = self.ctx.inflight.get(str(attrs.get(REQUEST_ID_ATTRIBUTE) or ""))
                models = record.attempts if record is not None else ()
            if status and models:
                self.ctx.metrics.record_upstream_response(model_for_attempt(models, attempt), status)
        except Exception:  # observation never fails a request
            log.debug("attempt observer failed", exc_info=True)
        return

    def finish(self) -> None:
        self.done = True


def _parse_time(value: object) -> float | None:
    """Envoy's ``request.time`` attribute (RFC 3339, e.g. ``2026-01-02T03:04:05.123456+00:00``)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
