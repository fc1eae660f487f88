"""The per-attempt processor on the composite clusters: one stream per upstream attempt.

Envoy's retry moves attempt N to the composite's sub-cluster N; this processor makes the request fit
that attempt's provider: Host, path, auth, the provider's model id in the body. Attempt 1 is prepared by
the downstream processor and the rendered config skips this filter for it (match_delegate).
"""

from __future__ import annotations

import logging

import orjson
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext

from plano_extproc.contract import ATTEMPT_COUNT_HEADER, DecisionMetadata
from plano_extproc.extproc.errors import error_body
from plano_extproc.extproc.messages import continue_body, continue_headers, header_dict, header_mutation, immediate
from plano_extproc.extproc.tracking import InFlightRequests
from plano_extproc.formats import ApiFormat
from plano_extproc.targets import UpstreamTarget, attempt_headers, stale_header_names

log = logging.getLogger(__name__)

class UpstreamContext:
    """Built once per config: the targets, and every header name some target injects."""

    def __init__(self, targets: dict[tuple[ApiFormat, str], UpstreamTarget], inflight: InFlightRequests) -> None:
        self.targets = targets
        self.inflight = inflight
        self.stale_headers = stale_header_names(targets.values())


class UpstreamExchange:
    __slots__ = ("ctx", "target")

    def __init__(self, ctx: UpstreamContext) -> None:
        self.ctx = ctx
        self.target: UpstreamTarget | None = None

    async def handle(self, request: ext.ProcessingRequest) -> ext.ProcessingResponse | None:
        kind = request.WhichOneof("request")
        if kind == "request_headers":
            return self.on_headers(request.request_headers, request.metadata_context)
        if kind == "request_body":
            return self.on_body(request.request_body)
        return None

    def on_headers(self, headers: ext.HttpHeaders, metadata: base_pb2.Metadata) -> ext.ProcessingResponse:
        h = header_dict(headers)
        decision = DecisionMetadata.from_metadata(metadata)
        try:
            if decision is None:
                raise ValueError("no decision")
            api_format = ApiFormat(decision.api)
            attempt = int(h.get(ATTEMPT_COUNT_HEADER, "1"))
        except ValueError:
            # Only our downstream processor writes the decision; without it the request skipped routing.
            return immediate(403, error_body(None, 403, "request did not pass the gateway's routing step"))
        model = decision.model_for_attempt(attempt)
        target = self.ctx.targets.get((api_format, model))
        if target is None:
            return immediate(500, error_body(api_format, 500, "no upstream for the chosen model"))
        self.target = target
        request_id = h.get("x-request-id")
        if request_id:
            self.ctx.inflight.note_attempt(request_id, attempt, model)
        sets, remove = attempt_headers(target, h, self.ctx.stale_headers, decision.client_credentials)
        mutation = header_mutation([(":authority", target.host), (":path", target.path), *sets], remove)
        return continue_headers(mutation)

    def on_body(self, body: ext.HttpBody) -> ext.ProcessingResponse:
        if self.target is None:
            return continue_body()
        try:
            parsed = orjson.loads(body.body)
        except orjson.JSONDecodeError:
            return continue_body()
        if not isinstance(parsed, dict) or parsed.get("model") == self.target.model_id:
            return continue_body()
        parsed["model"] = self.target.model_id
        new_body = orjson.dumps(parsed)
        return continue_body(header_mutation([("content-length", str(len(new_body)))]), new_body)
