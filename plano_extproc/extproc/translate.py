"""The response translator: turns a provider's answer into the client's API when the attempt that
answered was translated.

Envoy runs this filter only for requests some attempt of which is translated (``x-plano-translate: 1``).
It learns from the response headers which attempt answered (attribute ``upstream.request_attempt_count``
and the decision metadata) and then picks the body mode for the rest of the stream (docs/envoy.md
finding (m)): none when that attempt spoke the client's own API (a fall-over from a translated model to a
native one), buffered for a JSON answer or an error, streamed for server-sent events — each chunk is
translated as it passes and the translator's closing events are added at the end, so a client never sees
half of one API and half of another.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

import orjson
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext

from plano_extproc.apis import BY_NAME, ClientApi
from plano_extproc.contract import ATTEMPT_COUNT_ATTRIBUTE, REQUEST_ID_ATTRIBUTE, DecisionMetadata, model_for_attempt
from plano_extproc.extproc.messages import header_mutation, immediate
from plano_extproc.extproc.tracking import InFlightRequests
from plano_extproc.forwarding import Forwarder
from plano_extproc.translation import StreamTranslator, Translation

log = logging.getLogger(__name__)

_Mode = processing_mode_pb2.ProcessingMode


class TranslateContext:
    def __init__(self, forwarder: Forwarder, inflight: InFlightRequests) -> None:
        self.forwarder = forwarder
        self.inflight = inflight


def attributes(request: ext.ProcessingRequest) -> dict[str, object]:
    """The request's attributes, flattened (they arrive keyed by the filter's name)."""
    out: dict[str, object] = {}
    for struct in request.attributes.values():
        for key, value in struct.fields.items():
            kind = value.WhichOneof("kind")
            out[key] = value.number_value if kind == "number_value" else value.string_value if kind == "string_value" else None
    return out


def _headers_reply(mutation: ext.HeaderMutation | None, body_mode: int) -> ext.ProcessingResponse:
    response = ext.ProcessingResponse(response_headers=ext.HeadersResponse(response=ext.CommonResponse(header_mutation=mutation)))
    response.mode_override.response_body_mode = body_mode
    return response


def _body_reply(body: bytes, sets: list[tuple[str, str]] | None = None) -> ext.ProcessingResponse:
    common = ext.CommonResponse(body_mutation=ext.BodyMutation(body=body), header_mutation=header_mutation(sets) if sets else None)
    return ext.ProcessingResponse(response_body=ext.BodyResponse(response=common))


class TranslateExchange:
    """One response. `translation` is set when the answer must be translated; `stream` for SSE."""

    __slots__ = ("api", "client_body", "ctx", "decoder", "done", "failed", "model_id", "status", "stream", "translation")

    def __init__(self, ctx: TranslateContext) -> None:
        self.ctx = ctx
        self.api: ClientApi | None = None
        self.translation: Translation | None = None
        self.stream: StreamTranslator | None = None
        self.client_body: dict[str, Any] = {}
        self.model_id = ""
        self.status = 0
        self.failed = False
        #: undoes a content-encoding the provider used although the attempt asked for identity
        self.decoder: zlib._Decompress | None = None
        self.done = False

    async def handle(self, request: ext.ProcessingRequest) -> ext.ProcessingResponse | None:
        kind = request.WhichOneof("request")
        if kind == "response_headers":
            response = self.on_headers(request)
            # no translation for this answer (body mode none), or a body-less answer
            self.done = self.translation is None or request.response_headers.end_of_stream
            return response
        if kind == "response_body":
            self.done = request.response_body.end_of_stream
            return self.on_body(request.response_body)
        return None

    def finish(self) -> None:
        pass

    def on_headers(self, request: ext.ProcessingRequest) -> ext.ProcessingResponse:
        attrs = attributes(request)
        request_id = str(attrs.get(REQUEST_ID_ATTRIBUTE) or "")
        record = self.ctx.inflight.claim(request_id) if request_id else None
        decision = DecisionMetadata.from_metadata(request.metadata_context)
        api = BY_NAME.get(decision.api if decision is not None else record.api if record is not None else "")
        attempts = decision.attempts if decision is not None else record.attempts if record is not None else ()
        if api is None or not attempts:
            return _headers_reply(None, _Mode.NONE)
        try:
            attempt = int(float(str(attrs.get(ATTEMPT_COUNT_ATTRIBUTE) or 1)))
        except (TypeError, ValueError):
            attempt = 1
        model = model_for_attempt(attempts, attempt)
        route = self.ctx.forwarder.route(api, model)
        if route is None or route.translation is None:
            return _headers_reply(None, _Mode.NONE)  # this attempt spoke the client's API
        self.api, self.translation = api, route.translation
        upstream = self.ctx.forwarder.upstream(model)
        self.model_id = upstream.model_id if upstream is not None else model.partition("/")[2]
        self.client_body = (record.client_body if record is not None else None) or {}
        h = {x.key: (x.raw_value.decode("latin-1") if x.raw_value else x.value) for x in request.response_headers.headers.headers}
        try:
            self.status = int(h.get(":status", "0"))
        except ValueError:
            self.status = 0
        content_type = h.get("content-type", "").lower()
        encoding = h.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):  # asked for identity, got it compressed anyway
            self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS)
        elif encoding not in ("", "identity"):
            return immediate(502, api.error_body(502, f"the answer of {self.model_id} came {encoding}-encoded and could not be translated", None))
        remove = ["content-length", "content-encoding"] if self.decoder is not None else ["content-length"]
        if 200 <= self.status < 300 and "text/event-stream" in content_type:
            self.stream = route.translation.stream(self.model_id, self.client_body)
            return _headers_reply(header_mutation(remove=remove), _Mode.STREAMED)
        # a JSON answer or an error of any shape: translated whole
        mutation = header_mutation([("content-type", "application/json")], remove=remove)
        return _headers_reply(mutation, _Mode.BUFFERED)

    def _decoded(self, body: ext.HttpBody) -> bytes:
        if self.decoder is None:
            return bytes(body.body)
        out: bytes = self.decoder.decompress(body.body)
        return out + self.decoder.flush() if body.end_of_stream else out

    def on_body(self, body: ext.HttpBody) -> ext.ProcessingResponse:
        translation = self.translation
        if translation is None or self.failed:
            return _body_reply(b"")
        if self.stream is not None:
            return self._stream_chunk(body)
        try:
            raw = self._decoded(body)
            if 200 <= self.status < 300:
                out = orjson.dumps(translation.response(orjson.loads(raw), self.model_id, self.client_body))
            else:
                out = translation.error(self.status, raw)
        except Exception:  # a provider's answer we cannot read must not reach the client in another API
            log.exception("translating a %s answer for %s failed", self.model_id, translation.client)
            assert self.api is not None
            return immediate(502, self.api.error_body(502, f"the answer of {self.model_id} could not be translated", None))
        return _body_reply(out, [("content-length", str(len(out)))])

    def _stream_chunk(self, body: ext.HttpBody) -> ext.ProcessingResponse:
        assert self.stream is not None
        try:
            out = self.stream.feed(self._decoded(body))
            if body.end_of_stream:
                out += self.stream.finish()
        except Exception:
            log.exception("translating the stream of %s failed", self.model_id)
            self.failed = True
            try:
                out = self.stream.finish()  # close the client's stream cleanly
            except Exception:
                out = b""
        return _body_reply(out)
