"""The router-level processor: parse the body once, decide, then answer or point Envoy at a cluster.

Decision endpoints (`/routing/v1/...`) end here with an ImmediateResponse. Proxy endpoints (`/v1/...`) get
the internal cluster header (with the route cache cleared in the same reply, DESIGN §2), the decision as
dynamic metadata for the per-attempt processor, attempt 1's credentials and path, and the body with our
routing fields removed and `models[0]`'s id.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext

from plano_extproc.contract import (
    CLUSTER_HEADER,
    INTERNAL_PREFIX,
    MAX_RETRIES_HEADER,
    ROUTE_HEADER,
    DecisionMetadata,
    attempt_list,
    composite_cluster_name,
    retry_budget,
)
from plano_extproc.decision import Decision, RouterOutcome, decision_payload
from plano_extproc.engine import DecisionEngine
from plano_extproc.extproc.errors import error_body
from plano_extproc.extproc.messages import continue_body, continue_headers, header_dict, header_mutation, immediate
from plano_extproc.extproc.tracking import InFlightRequests
from plano_extproc.formats import ApiFormat, RequestFormatError, parse_request
from plano_extproc.config import PlanoConfig
from plano_extproc.conversation import latest_user_text
from plano_extproc.logs import DecisionLog
from plano_extproc.metrics import Metrics
from plano_extproc.tracing import Tracer, new_traceparent, parse_traceparent
from plano_extproc.targets import CREDENTIAL_HEADERS, UpstreamTarget, attempt_headers, stale_header_names

log = logging.getLogger(__name__)

#: path -> (client API format, decision only?)
ENDPOINTS: dict[str, tuple[ApiFormat, bool]] = {
    "/v1/chat/completions": (ApiFormat.OPENAI_CHAT, False),
    "/v1/messages": (ApiFormat.ANTHROPIC_MESSAGES, False),
    "/v1/responses": (ApiFormat.OPENAI_RESPONSES, False),
    "/routing/v1/chat/completions": (ApiFormat.OPENAI_CHAT, True),
    "/routing/v1/messages": (ApiFormat.ANTHROPIC_MESSAGES, True),
    "/routing/v1/responses": (ApiFormat.OPENAI_RESPONSES, True),
}
AFFINITY_HEADERS = ("x-model-affinity", "x-session-id")  # the second is the older demo's name
MAX_SESSION_ID = 256
_FORMAT_LABEL = {
    ApiFormat.OPENAI_CHAT: "the OpenAI Chat Completions API",
    ApiFormat.ANTHROPIC_MESSAGES: "the Anthropic Messages API",
    ApiFormat.OPENAI_RESPONSES: "the OpenAI Responses API",
}


def trace_id_from(traceparent: str | None) -> str:
    """The W3C trace id of the incoming `traceparent`, or a new random one."""
    parsed = parse_traceparent(traceparent)
    return parsed[0] if parsed else secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the processor needs from the request line and headers."""

    path: str
    method: str
    request_id: str
    traceparent: str | None
    session_id: str | None
    credentials: dict[str, str]
    present: frozenset[str]

    @classmethod
    def from_headers(cls, h: dict[str, str]) -> RequestInfo:
        return cls(
            h.get(":path", ""),
            h.get(":method", ""),
            h.get("x-request-id", ""),
            h.get("traceparent"),
            next((h[n] for n in AFFINITY_HEADERS if h.get(n)), None),
            {k: h[k] for k in CREDENTIAL_HEADERS if k in h},
            frozenset(h),
        )


@dataclass(frozen=True, slots=True)
class ProxyPlan:
    """The prebuilt composite cluster and the exact model list it walks, attempt by attempt."""

    cluster: str
    models: tuple[str, ...]
    first: UpstreamTarget


class DownstreamContext:
    """Everything that is built once per config and shared by all downstream streams."""

    def __init__(
        self,
        engine: DecisionEngine,
        targets: dict[tuple[ApiFormat, str], UpstreamTarget],
        prebuilt: set[tuple[str, ...]],
        metrics: Metrics,
        inflight: InFlightRequests,
        decision_log: DecisionLog | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.engine = engine
        self.targets = targets
        self.prebuilt = prebuilt
        self.metrics = metrics
        self.inflight = inflight
        self.decision_log = decision_log or DecisionLog()
        self.tracer = tracer or Tracer(None)
        # Client credentials are only ever kept (in Envoy's in-process metadata) when a provider wants them.
        self.any_passthrough = any(t.passthrough_auth for t in targets.values())
        self.stale_headers = stale_header_names(targets.values())

    def plan(self, api_format: ApiFormat, models: tuple[str, ...]) -> ProxyPlan | None:
        servable = tuple(m for m in models if (api_format, m) in self.targets)
        if not servable:
            return None
        attempts = attempt_list(servable)
        if attempts not in self.prebuilt:
            # No composite for this list (e.g. inline routes): the first model, with a same-provider retry.
            attempts = attempt_list(servable[:1])
        return ProxyPlan(composite_cluster_name(attempts), attempts, self.targets[(api_format, attempts[0])])


class DownstreamExchange:
    """One HTTP request's downstream ext_proc stream: the buffered body (and, if sent, the headers first)."""

    __slots__ = ("ctx", "info", "endpoint", "trace_id", "parent_span", "started_ns")

    def __init__(self, ctx: DownstreamContext) -> None:
        self.ctx = ctx
        self.info: RequestInfo | None = None
        self.endpoint: tuple[ApiFormat, bool] | None = None
        self.trace_id = ""
        self.parent_span: str | None = None
        self.started_ns = 0

    async def handle(self, request: ext.ProcessingRequest) -> ext.ProcessingResponse | None:
        kind = request.WhichOneof("request")
        if kind == "request_headers":
            return self.on_headers(request.request_headers)
        if kind == "request_body":
            return await self.on_body(request.request_body)
        return None

    def _error(self, status: int, message: str, param: str | None = None) -> ext.ProcessingResponse:
        api_format = self.endpoint[0] if self.endpoint else None
        endpoint = "routing" if self.endpoint and self.endpoint[1] else "proxy"
        self.ctx.metrics.record_request(endpoint, api_format.value if api_format else "unknown", status)
        return immediate(status, error_body(api_format, status, message, param), details="plano_extproc")

    def _admit(self, info: RequestInfo, end_of_stream: bool) -> ext.ProcessingResponse | None:
        """An error response for requests we do not serve, else None (and the request's trace context)."""
        path = info.path.split("?", 1)[0]
        self.endpoint = ENDPOINTS.get(path)
        if self.endpoint is None:
            return self._error(404, f"unknown endpoint {path}; use /v1/chat/completions, /v1/messages or /v1/responses (or /routing/v1/...)")
        if info.method != "POST":
            return self._error(405, f"{path} accepts POST only")
        if end_of_stream:
            return self._error(400, "the request body is empty; send a JSON object")
        if info.session_id is not None and len(info.session_id) > MAX_SESSION_ID:
            return self._error(400, f"{AFFINITY_HEADERS[0]} is longer than {MAX_SESSION_ID} characters")
        parsed = parse_traceparent(info.traceparent)
        self.trace_id, self.parent_span = parsed if parsed else (secrets.token_hex(16), None)
        if self.ctx.tracer.enabled:
            self.started_ns = time.time_ns()
        return None

    def on_headers(self, headers: ext.HttpHeaders) -> ext.ProcessingResponse:
        h = header_dict(headers)
        self.info = RequestInfo.from_headers(h)
        internal = [k for k in h if k.startswith(INTERNAL_PREFIX)]
        path = self.info.path.split("?", 1)[0]
        if path.startswith(("/v1/", "/routing/")) or headers.end_of_stream:
            rejected = self._admit(self.info, headers.end_of_stream)
            if rejected is not None:
                return rejected
        # A client must never choose the cluster: drop every internal header it sent.
        return continue_headers(header_mutation(remove=internal), clear_route_cache=True) if internal else continue_headers()

    async def on_body(self, body: ext.HttpBody) -> ext.ProcessingResponse:
        info = self.info
        if self.endpoint is None or info is None:
            return continue_body()
        api_format, decision_only = self.endpoint
        try:
            request = parse_request(api_format, body.body)
            routed = await self.ctx.engine.route(request, info.session_id)
        except RequestFormatError as exc:
            return self._error(exc.status, exc.message, exc.param)
        decision = routed.decision
        self.ctx.decision_log.emit(
            decision,
            routed.outcome,
            trace_id=self.trace_id,
            endpoint="routing" if decision_only else "proxy",
            api_format=api_format.value,
            prompt=latest_user_text(request.conversation) if self.ctx.decision_log.log_prompts else None,
        )
        if self.ctx.tracer.enabled:
            self._export_span(decision, routed.outcome, api_format, decision_only)
        if decision_only:
            payload = decision_payload(decision, self.trace_id, info.session_id)
            self.ctx.metrics.record_request("routing", api_format.value, 200)
            return immediate(200, orjson.dumps(payload))
        plan = self.ctx.plan(api_format, decision.models)
        if plan is None:
            names = ", ".join(decision.models)
            return self._error(
                400,
                f"no model chosen for this request ({names}) is served by this gateway for {_FORMAT_LABEL[api_format]}",
                "model",
            )
        if info.request_id:
            self.ctx.inflight.open(info.request_id, plan.models, api_format.value, decision.route)
        forward = request.body
        forward["model"] = plan.first.model_id
        new_body = orjson.dumps(forward)
        sets = [
            (CLUSTER_HEADER, plan.cluster),
            ("content-length", str(len(new_body))),
            # Attempts beyond the composite's sub-clusters end in Envoy's own 503; this also overwrites
            # any x-envoy-max-retries the client sent.
            (MAX_RETRIES_HEADER, str(retry_budget(plan.models))),
        ]
        if decision.route:
            sets.append((ROUTE_HEADER, decision.route))
        credentials = info.credentials if self.ctx.any_passthrough else None
        if self.parent_span is None:
            # The provider (and Envoy's own tracing) sees the same trace id the decision reports.
            sets.append(("traceparent", new_traceparent(self.trace_id)))
        # Attempt 1 is prepared here, so the per-attempt processor only runs on retries (the rendered
        # config skips it when x-envoy-attempt-count is 1). Host comes from the route's auto_host_rewrite.
        first = plan.first
        auth, remove = attempt_headers(first, info.present, self.ctx.stale_headers, credentials or None)
        sets.extend(auth)
        if first.path != info.path:
            sets.append((":path", first.path))
        response = continue_body(header_mutation(sets, remove), new_body, clear_route_cache=True)
        # The upstream processor reads the decision from here on every attempt (contract.DecisionMetadata).
        metadata = DecisionMetadata(plan.models, api_format.value, decision.route, credentials or None)
        response.dynamic_metadata.CopyFrom(metadata.to_struct())
        return response

    def _export_span(self, decision: Decision, outcome: RouterOutcome | None, api_format: ApiFormat, decision_only: bool) -> None:
        attributes = {
            "plano.route": decision.route or "",
            "plano.source": decision.source.value,
            "plano.endpoint": "routing" if decision_only else "proxy",
            "gen_ai.request.model": decision.model,
            "plano.api_format": api_format.value,
        }
        router = None
        if outcome is not None:  # routes applied and a router was asked
            router = {"plano.router.backend": outcome.backend or "", "plano.router.error": outcome.error_kind or "", "seconds": outcome.seconds}
        self.ctx.tracer.route_span(self.trace_id, self.parent_span, attributes, self.started_ns, router)

