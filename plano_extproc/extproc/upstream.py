"""The per-attempt processor on the composite clusters: one stream per retry attempt.

Envoy's retry moves attempt N to the composite's sub-cluster N (contract.model_for_attempt); this
processor makes the request fit that attempt's provider with the same `Forwarder.prepare` that prepared
attempt 1. When the request's record is at hand (the usual case) the attempt's body is sent with the
headers reply (`CONTINUE_AND_REPLACE`) and Envoy never sends the body again; otherwise it is rewritten
from the body message. Attempt 1 reaches this filter only when it is translated (match_delegate on
x-envoy-attempt-count and x-plano-first).
"""

from __future__ import annotations

import logging

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext

from plano_extproc.apis import BY_NAME, DEFAULT_API, RequestFormatError
from plano_extproc.contract import ATTEMPT_COUNT_HEADER, DecisionMetadata, answered_model_metadata
from plano_extproc.extproc.messages import continue_body, continue_headers, header_dict, header_mutation, immediate
from plano_extproc.extproc.tracking import InFlightRequests
from plano_extproc.forwarding import Forwarder, ForwardRequest
from plano_extproc.jsonbody import BodyTooDeep

log = logging.getLogger(__name__)


class UpstreamContext:
    def __init__(self, forwarder: Forwarder, inflight: InFlightRequests) -> None:
        self.forwarder = forwarder
        self.inflight = inflight


class UpstreamExchange:
    __slots__ = ("ctx", "done", "pending")

    def __init__(self, ctx: UpstreamContext) -> None:
        self.ctx = ctx
        #: (the decision, the attempt's model) until the body message arrives
        self.pending: tuple[DecisionMetadata, str] | None = None
        self.done = False

    async def handle(self, request: ext.ProcessingRequest) -> ext.ProcessingResponse | None:
        kind = request.WhichOneof("request")
        if kind == "request_headers":
            response = self.on_headers(request.request_headers, request.metadata_context)
            # prepared from the kept body (or refused): Envoy sends no body message for this attempt
            self.done = self.pending is None
            return response
        if kind == "request_body":
            self.done = True
            return self.on_body(request.request_body)
        return None

    def finish(self) -> None:
        pass

    def on_headers(self, headers: ext.HttpHeaders, metadata: base_pb2.Metadata) -> ext.ProcessingResponse:
        h = header_dict(headers)
        decision = DecisionMetadata.from_metadata(metadata)
        api = BY_NAME.get(decision.api) if decision is not None else None
        try:
            attempt = int(h.get(ATTEMPT_COUNT_HEADER, "1"))
        except ValueError:
            attempt = 0
        if decision is None or api is None or attempt < 1:
            # Only our downstream processor writes the decision; without it the request skipped routing.
            log.error("upstream attempt without a routing decision (attempt header %r)", h.get(ATTEMPT_COUNT_HEADER))
            return immediate(403, DEFAULT_API.error_body(403, "request did not pass the gateway's routing step", None))
        model = decision.model_for_attempt(attempt)
        if self.ctx.forwarder.upstream(model) is None:
            log.error("attempt %d: model %s has no upstream in this config", attempt, model)
            return immediate(500, api.error_body(500, "no upstream for the chosen model", None))
        request_id = h.get("x-request-id", "")
        record = self.ctx.inflight.note_attempt(request_id, attempt, model) if request_id else None
        present = frozenset(h)
        if record is not None and record.forward is not None:
            try:
                prepared = self.ctx.forwarder.prepare(record.forward, model, present)
            except BodyTooDeep as exc:
                return immediate(400, api.error_body(400, str(exc), None))
            except RequestFormatError as exc:  # this attempt's provider API cannot express the request
                return immediate(exc.status, api.error_body(exc.status, exc.message, exc.param))
            response = continue_headers(header_mutation(prepared.set_headers, prepared.remove_headers), body=prepared.body)
        else:
            self.pending = (decision, model)
            sets, remove = self.ctx.forwarder.attempt_headers(_request(decision, b""), model, present)
            response = continue_headers(header_mutation(sets, remove))
        # the proxy route's x-plano-model response header reads it (docs/envoy.md finding (t))
        response.dynamic_metadata.CopyFrom(answered_model_metadata(model))
        return response

    def on_body(self, body: ext.HttpBody) -> ext.ProcessingResponse:
        if self.pending is None:
            return continue_body()
        decision, model = self.pending
        api = BY_NAME[decision.api]
        try:
            new_body = self.ctx.forwarder.attempt_body(_request(decision, body.body), model)
        except BodyTooDeep as exc:
            return immediate(400, api.error_body(400, str(exc), None))
        except RequestFormatError as exc:
            return immediate(exc.status, api.error_body(exc.status, exc.message, exc.param))
        except ValueError:  # not JSON: nothing we can rewrite
            log.error("attempt for %s: the body Envoy sent is not the JSON we forwarded", model)
            return immediate(500, api.error_body(500, "internal error in the routing step", None))
        return continue_body(header_mutation([("content-length", str(len(new_body)))]), new_body)


def _request(decision: DecisionMetadata, body: bytes) -> ForwardRequest:
    """The request as Envoy re-sends it to a retry: attempt 1's body, routing fields already removed."""
    return ForwardRequest(BY_NAME[decision.api], body, (), decision.attempts, decision.client_credentials)
