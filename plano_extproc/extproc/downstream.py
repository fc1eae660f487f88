"""The router-level processor: parse the body once, decide, then answer or point Envoy at a cluster.

A thin adapter between ext_proc messages and the pure core. Decision endpoints (`/routing/v1/...`) end
here with an ImmediateResponse. Proxy endpoints (`/v1/...`) get the composite cluster header (with the
route cache cleared in the same reply, docs/envoy.md), the decision as dynamic metadata for the per-attempt
processor (contract.DecisionMetadata), and attempt 1 prepared by `Forwarder.prepare`.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import NamedTuple

import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from google.protobuf import struct_pb2

from plano_extproc.apis import DEFAULT_API, ENDPOINTS, ClientApi, ParsedRequest, RequestFormatError
from plano_extproc.auth import Client, ClientKeys, narrow, presented_key
from plano_extproc.contract import (
    CLUSTER_HEADER,
    FIRST_ATTEMPT_HEADER,
    FIRST_READY,
    FIRST_TRANSLATE,
    INTERNAL_PREFIX,
    MAX_RETRIES_HEADER,
    OBSERVE_HEADER,
    ROUTE_HEADER,
    TRANSLATE_HEADER,
    TRANSLATE_ON,
    WORKER_HEADER,
    DecisionMetadata,
    retry_budget,
)
from plano_extproc.conversation import latest_user_text
from plano_extproc.decision import Decision, RouterOutcome, decision_payload, models_listing
from plano_extproc.engine import DecisionEngine, RoutedRequest
from plano_extproc.extproc.messages import continue_body, continue_headers, header_mutation, header_option, immediate, read_headers
from plano_extproc.extproc.tracking import InFlightRequests
from plano_extproc.forwarding import CREDENTIAL_HEADERS, AttemptPlan, Forwarder, ForwardRequest
from plano_extproc.jsonbody import BodyTooDeep, without
from plano_extproc.logs import DecisionLog
from plano_extproc.metrics import Metrics
from plano_extproc.tracing import Tracer, new_traceparent, parse_traceparent

log = logging.getLogger(__name__)

MAX_SESSION_ID = 256
#: what Envoy refuses in a header value set by a processor (a 500 for the request): control characters
#: but tab. An inline route's name may hold them; it then gets no informational route header.
_NOT_IN_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: Envoy's limits on a request's headers (its defaults, max_request_headers_kb 60 and max_headers_count 100,
#: which the bootstrap keeps) also bound them after the processors' mutations: a proxied request that leaves
#: no room for what they add would fail with Envoy's 500 (header_mutation_result_exceeds_limit)
MAX_CLIENT_HEADER_BYTES = 60 * 1024 - 4096
MAX_CLIENT_HEADERS = 100 - 16


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
    #: the value of routing.session_cache.tenant_header, when configured and sent
    tenant: str | None = None

    @classmethod
    def from_headers(cls, h: dict[str, str], session_headers: tuple[str, ...], tenant_header: str | None = None) -> RequestInfo:
        return cls(
            h.get(":path", ""),
            h.get(":method", ""),
            h.get("x-request-id", ""),
            h.get("traceparent"),
            next((h[n] for n in session_headers if h.get(n)), None),
            {k: h[k] for k in CREDENTIAL_HEADERS if k in h},
            frozenset(h),
            h.get(tenant_header) if tenant_header else None,
        )


class ForwardShape(NamedTuple):
    """The parts of a forwarded request's reply that other requests of its kind share (`_shape`)."""

    #: every header set and removed but the body's length and the trace context
    mutation: ext.HeaderMutation
    #: the decision metadata (contract.DecisionMetadata)
    metadata: struct_pb2.Struct
    #: attempt 1 goes to a provider of another API: the per-attempt processor translates it
    translate_first: bool
    #: some attempt is translated: the in-flight record keeps the client's body
    any_translated: bool


class ForwardShapes:
    """Built replies by request kind. Profiled: building a forwarded request's headers and metadata was
    about a third of the routing processor's own time per request, and they repeat from request to request
    with the model, route and API. Never holds a client's credentials (such requests are built each time);
    bounded: emptied when full (a new inline route name is a new kind)."""

    MAX = 1024

    def __init__(self, forwarder: Forwarder) -> None:
        self.removable = forwarder.removable
        self._built: dict[tuple[object, ...], ForwardShape] = {}

    def key(self, api: ClientApi, plan: AttemptPlan, decision: Decision, stream: bool, present: frozenset[str]) -> tuple[object, ...]:
        """A request's kind: everything its shape depends on, given the client sent no credentials."""
        return (api.name, plan, decision.route, decision.source, stream, present & self.removable)

    def get(self, key: tuple[object, ...]) -> ForwardShape | None:
        return self._built.get(key)

    def put(self, key: tuple[object, ...], shape: ForwardShape) -> None:
        if len(self._built) >= self.MAX:
            self._built.clear()
        self._built[key] = shape


class DownstreamContext:
    """Everything that is built once per config and shared by all downstream streams."""

    def __init__(
        self,
        engine: DecisionEngine,
        forwarder: Forwarder,
        metrics: Metrics,
        inflight: InFlightRequests,
        decision_log: DecisionLog | None = None,
        tracer: Tracer | None = None,
        client_keys: ClientKeys | None = None,
        worker: int | None = None,
    ) -> None:
        self.engine = engine
        self.forwarder = forwarder
        self.metrics = metrics
        self.inflight = inflight
        self.decision_log = decision_log or DecisionLog()
        self.tracer = tracer or Tracer(None)
        #: None: anyone may use the gateway
        self.client_keys = client_keys
        self.session_headers = engine.config.routing.session_headers
        self.models_listing = models_listing(engine.config)
        self.shapes = ForwardShapes(forwarder)
        #: with several worker processes, this one's number: the later processors of a forwarded request
        #: run only in the worker named by WORKER_HEADER (the one holding its in-flight record)
        self.worker_value = str(worker) if worker is not None else None
        #: response bodies are observed: json_to_metadata reads non-streaming answers, the streaming
        #: observer streamed ones (bootstrap: observability.responses)
        self.observe_bodies = engine.config.observability.responses == "bodies"


class DownstreamExchange:
    """One HTTP request's downstream ext_proc stream: the headers, then the buffered body."""

    __slots__ = ("api", "client", "ctx", "decision_only", "done", "info", "parent_span", "span_attributes", "started_ns", "trace_id")

    def __init__(self, ctx: DownstreamContext) -> None:
        self.ctx = ctx
        self.info: RequestInfo | None = None
        self.api: ClientApi | None = None
        self.decision_only = False
        self.trace_id = ""
        self.parent_span: str | None = None
        self.started_ns = 0
        self.done = False
        self.client: Client | None = None
        #: plano's span_attributes.header_prefixes, read from this request's headers
        self.span_attributes: dict[str, str] = {}

    async def handle(self, request: ext.ProcessingRequest) -> ext.ProcessingResponse | None:
        kind = request.WhichOneof("request")
        if kind == "request_headers":
            response = self.on_headers(request.request_headers)
        elif kind == "request_body":
            response = await self.on_body(request.request_body)
            # the routing filter sends nothing after the body: the decision is final
            self.done = True
        else:
            return None
        if response.WhichOneof("response") == "immediate_response":
            self.done = True
        return response

    def finish(self) -> None:
        pass

    @property
    def endpoint(self) -> str:
        return "routing" if self.decision_only else "proxy"

    def _error(self, status: int, message: str, param: str | None = None) -> ext.ProcessingResponse:
        api = self.api or DEFAULT_API
        self.ctx.metrics.record_request(self.endpoint, self.api.name if self.api else "unknown", status)
        return immediate(status, api.error_body(status, message, param))

    def _authenticate(self, headers: dict[str, str]) -> ext.ProcessingResponse | None:
        """401 unless client authentication is off or the request presents a known key."""
        keys = self.ctx.client_keys
        if keys is None:
            return None
        key = presented_key(headers)
        if key is None:
            return self._error(401, "this gateway needs an API key: send it as Authorization: Bearer <key>, x-api-key or api-key")
        self.client = keys.identify(key)
        if self.client is None:
            return self._error(401, "the API key is not valid for this gateway")
        return None

    def _admit(self, info: RequestInfo, end_of_stream: bool, header_count: int = 0, header_bytes: int = 0) -> ext.ProcessingResponse | None:
        """An error response for requests we do not serve, else None (and the request's trace context)."""
        path = info.path.split("?", 1)[0]
        endpoint = ENDPOINTS.get(path)
        if endpoint is None:
            return self._error(404, f"unknown endpoint {path}; use /v1/chat/completions, /v1/messages or /v1/responses (or /routing/v1/...)")
        self.api, self.decision_only = endpoint
        if info.method != "POST":
            return self._error(405, f"{path} accepts POST only")
        if not self.decision_only and (header_count > MAX_CLIENT_HEADERS or header_bytes > MAX_CLIENT_HEADER_BYTES):
            return self._error(431, f"the request headers are too large to forward (at most {MAX_CLIENT_HEADERS} headers and {MAX_CLIENT_HEADER_BYTES} bytes)")
        if end_of_stream:
            return self._error(400, "the request body is empty; send a JSON object")
        if info.session_id is not None and len(info.session_id) > MAX_SESSION_ID:
            return self._error(400, f"the session id ({', '.join(self.ctx.session_headers)}) is longer than {MAX_SESSION_ID} characters")
        parsed = parse_traceparent(info.traceparent)
        self.trace_id, self.parent_span = parsed if parsed else (secrets.token_hex(16), None)
        if self.ctx.tracer.enabled:
            self.started_ns = time.time_ns()
        return None

    def on_headers(self, headers: ext.HttpHeaders) -> ext.ProcessingResponse:
        h, size = read_headers(headers)
        self.info = RequestInfo.from_headers(h, self.ctx.session_headers, self.ctx.engine.tenant_header)
        if self.ctx.tracer.header_prefixes:
            self.span_attributes = self.ctx.tracer.header_attributes(h)
        internal = [k for k in h if k.startswith(INTERNAL_PREFIX)]
        path = self.info.path.split("?", 1)[0]
        if self.ctx.client_keys is not None and path == "/v1/models" and self.info.method == "GET":
            # with client keys the listing is ours to answer (the route's direct response is unauthenticated)
            refused = self._authenticate(h)
            return refused or immediate(200, self.ctx.models_listing)
        if path.startswith(("/v1/", "/routing/")) or headers.end_of_stream:
            rejected = self._admit(self.info, headers.end_of_stream, len(headers.headers.headers), size) or self._authenticate(h)
            if rejected is not None:
                return rejected
        # A client must never choose the cluster: drop every internal header it sent.
        return continue_headers(header_mutation(remove=internal), clear_route_cache=True) if internal else continue_headers()

    async def on_body(self, body: ext.HttpBody) -> ext.ProcessingResponse:
        info, api = self.info, self.api
        if api is None or info is None:
            return continue_body()
        try:
            request = api.parse(body.body)
            routed = await self.ctx.engine.route(request, info.session_id, info.tenant, decision_only=self.decision_only)
        except RequestFormatError as exc:
            return self._error(exc.status, exc.message, exc.param)
        if self.client is not None:
            narrowed = narrow(routed.decision, self.client)
            if isinstance(narrowed, str):
                return self._error(403, narrowed, "model")
            routed = RoutedRequest(routed.request, narrowed, routed.outcome)
        self._report(routed)
        if self.decision_only:
            payload = decision_payload(routed.decision, self.trace_id, info.session_id)
            self.ctx.metrics.record_request("routing", api.name, 200)
            return immediate(200, orjson.dumps(payload))
        try:
            return self._forward(info, request, routed.decision)
        except BodyTooDeep as exc:
            return self._error(400, str(exc))
        except RequestFormatError as exc:  # attempt 1 cannot be expressed in its provider's API
            return self._error(exc.status, exc.message, exc.param)

    def _forward(self, info: RequestInfo, request: ParsedRequest, decision: Decision) -> ext.ProcessingResponse:
        api = request.api
        forwarder = self.ctx.forwarder
        plan = forwarder.plan(api, decision.models)
        if plan is None:
            names = ", ".join(decision.models)
            return self._error(400, f"no model chosen for this request ({names}) is served by this gateway for {api.title}", "model")
        credentials = info.credentials if forwarder.any_passthrough and info.credentials else None
        kind = self.ctx.shapes.key(api, plan, decision, request.stream, info.present) if credentials is None else None
        shape = self.ctx.shapes.get(kind) if kind is not None else None
        if shape is None:
            shape = self._shape(api, plan, decision, request.stream, info.present, credentials)
            if kind is not None:
                self.ctx.shapes.put(kind, shape)
        if shape.translate_first:
            # the body stays in the client's API (every later attempt starts from it); the per-attempt
            # processor translates attempt 1 like any other
            body = without(request.raw, request.routing_fields)
        else:
            body = forwarder.attempt_body(ForwardRequest(api, request.raw, request.routing_fields, plan.attempts, credentials), plan.attempts[0])
        if info.request_id:
            # the attempts after the first prepare themselves from the body as it leaves here
            kept = ForwardRequest(api, body, (), plan.attempts, credentials)
            self.ctx.inflight.open(info.request_id, plan.attempts, api.name, decision.route, kept, request.body if shape.any_translated else None)
        # built in place: a message passed to a constructor is copied, once per level of nesting
        response = ext.ProcessingResponse()
        common = response.request_body.response
        common.header_mutation.CopyFrom(shape.mutation)
        common.header_mutation.set_headers.append(header_option("content-length", str(len(body))))
        if self.parent_span is None:
            # The provider (and Envoy's own tracing) sees the same trace id the decision reports.
            common.header_mutation.set_headers.append(header_option("traceparent", new_traceparent(self.trace_id)))
        common.body_mutation.body = body
        common.clear_route_cache = True
        response.dynamic_metadata.CopyFrom(shape.metadata)
        return response

    def _shape(
        self, api: ClientApi, plan: AttemptPlan, decision: Decision, stream: bool, present: frozenset[str], credentials: dict[str, str] | None
    ) -> ForwardShape:
        """What a forwarded request's reply holds besides its body, length and trace context: the same for
        every request of one (API, plan, route, stream, removable headers present) without client credentials."""
        forwarder = self.ctx.forwarder
        translated = [forwarder.translated(api, m) for m in plan.attempts]
        sets = [
            (CLUSTER_HEADER, plan.cluster),
            # Attempts beyond the composite's sub-clusters end in Envoy's own 503; this also overwrites
            # any x-envoy-max-retries the client sent.
            (MAX_RETRIES_HEADER, str(retry_budget(plan.attempts, self.ctx.engine.config.listener.max_retries))),
            (TRANSLATE_HEADER, TRANSLATE_ON if any(translated) else "0"),
        ]
        if self.ctx.worker_value is not None:
            sets.append((WORKER_HEADER, self.ctx.worker_value))
        remove: list[str] = []
        if self.ctx.observe_bodies:
            # the streaming observer reads streamed answers only (docs/envoy.md finding (l)); json_to_metadata
            # reads the others, and cannot read a compressed body (finding (w))
            sets.append((OBSERVE_HEADER, "1" if stream else "0"))
            if not stream:
                sets.append(("accept-encoding", "identity"))
        if translated[0]:
            sets.append((FIRST_ATTEMPT_HEADER, FIRST_TRANSLATE))
        else:
            request = ForwardRequest(api, b"", (), plan.attempts, credentials)
            first_sets, remove = forwarder.attempt_headers(request, plan.attempts[0], present)
            sets += [(FIRST_ATTEMPT_HEADER, FIRST_READY), *first_sets]
        if decision.route and not _NOT_IN_HEADER.search(decision.route):
            sets.append((ROUTE_HEADER, decision.route))
        metadata = DecisionMetadata(plan.attempts, api.name, decision.route, credentials, decision.source.value, stream, self.ctx.worker_value)
        return ForwardShape(header_mutation(sets, remove), metadata.to_struct(), translated[0], any(translated))

    def _report(self, routed: RoutedRequest) -> None:
        decision, request = routed.decision, routed.request
        log_ = self.ctx.decision_log
        log_.emit(
            decision,
            routed.outcome,
            trace_id=self.trace_id,
            endpoint=self.endpoint,
            api_format=request.api.name,
            prompt=latest_user_text(request.conversation) if log_.log_prompts else None,
        )
        if self.ctx.tracer.enabled:
            self._export_span(decision, routed.outcome, request.api)

    def _export_span(self, decision: Decision, outcome: RouterOutcome | None, api: ClientApi) -> None:
        attributes = {
            **self.span_attributes,
            "plano.route": decision.route or "",
            "plano.source": decision.source.value,
            "plano.endpoint": self.endpoint,
            "gen_ai.request.model": decision.model,
            "plano.api_format": api.name,
        }
        router = None
        if outcome is not None:  # routes applied and a router was asked
            router = {"plano.router.backend": outcome.backend or "", "plano.router.error": outcome.error_kind or "", "seconds": outcome.seconds}
        self.ctx.tracer.route_span(self.trace_id, self.parent_span, attributes, self.started_ns, router)
