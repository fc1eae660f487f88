"""The gRPC server: Envoy's ext_proc streams (one processor each, contract.Processor), its access logs
(response observation, access_log.py), our RoutingService, health.

Which processor a stream gets is told by gRPC metadata the rendered Envoy config sets on each filter
(`x-plano-processor: downstream | upstream`); a missing value means downstream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import grpc
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from plano_extproc.api import routing_pb2, routing_pb2_grpc

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer
from plano_extproc.apis import BY_NAME, DEFAULT_API, ENDPOINTS, ClientApi, RequestFormatError
from plano_extproc.auth import ClientKeys
from plano_extproc.config import PlanoConfig
from plano_extproc.contract import (
    FINGERPRINT_METADATA,
    PROCESSOR_METADATA,
    DecisionMetadata,
    Processor,
    config_fingerprint,
    prebuilt_attempt_lists,
)
from plano_extproc.engine import DecisionEngine, build_router_chain
from plano_extproc.extproc.access_log import AccessLogContext, AccessLogService
from plano_extproc.extproc.downstream import DownstreamContext, DownstreamExchange, trace_id_from
from plano_extproc.extproc.messages import Exchange, immediate
from plano_extproc.extproc.observer import OBSERVERS, ObserverContext, ResponseObserver
from plano_extproc.extproc.tracking import InFlightRequests
from plano_extproc.extproc.translate import TranslateContext, TranslateExchange
from plano_extproc.extproc.upstream import UpstreamContext, UpstreamExchange
from plano_extproc.forwarding import Forwarder
from plano_extproc.logs import DecisionLog
from plano_extproc.metrics import Metrics
from plano_extproc.tracing import Tracer

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # request bodies arrive whole in BUFFERED mode; grpcio's default is 4 MiB



def _api_of(request: routing_pb2.DecideRequest) -> ClientApi | None:
    """The client API a Decide call names: by `api` (any registered name), else the `api_format` enum,
    whose value names match the registry's."""
    if request.api:
        return BY_NAME.get(request.api)
    if request.api_format == routing_pb2.API_FORMAT_UNSPECIFIED:
        return None
    return BY_NAME.get(routing_pb2.ApiFormat.Name(request.api_format).lower())


def _client_api(message: ext.ProcessingRequest, exchange: Exchange | None = None) -> ClientApi:
    """The client API whose error shape a refused or failed stream answers in: the one its exchange
    learnt, else the decision metadata's, else the one the request path names; OpenAI's when none says."""
    api = getattr(exchange, "api", None)
    if isinstance(api, ClientApi):
        return api
    decision = DecisionMetadata.from_metadata(message.metadata_context)
    if decision is not None and decision.api in BY_NAME:
        return BY_NAME[decision.api]
    if message.WhichOneof("request") == "request_headers":
        for h in message.request_headers.headers.headers:
            if h.key == ":path":
                endpoint = ENDPOINTS.get((h.raw_value.decode("utf-8", "replace") or h.value).split("?", 1)[0])
                return endpoint[0] if endpoint is not None else DEFAULT_API
    return DEFAULT_API


class ExternalProcessor(ext_grpc.ExternalProcessorServicer):  # type: ignore[misc]  # xds-protos is untyped
    """Envoy's streams, each handed to the exchange of its processor (contract.Processor)."""

    def __init__(self, exchanges: Mapping[Processor, Callable[[], Exchange]], metrics: Metrics, fingerprint: str) -> None:
        self.exchanges = exchanges
        self.metrics = metrics
        self._children: dict[str, tuple[Any, dict[str, Any]]] = {}
        self.fingerprint = fingerprint
        self._mismatches_seen: set[str] = set()

    def _mismatch(self, theirs: str) -> None:
        self.metrics.config_mismatches.inc()
        if theirs not in self._mismatches_seen:
            self._mismatches_seen.add(theirs)
            log.error(
                "Envoy's bootstrap was rendered from another config (fingerprint %s; this ext_proc serves %s): "
                "requests are refused until Envoy runs `plano-extproc render-envoy` output of this config",
                theirs,
                self.fingerprint,
            )

    def _instruments(self, processor: Processor) -> tuple[Any, dict[str, Any]]:
        """The in-flight gauge and per-message histograms of a processor, resolved once (labels() is not free)."""
        found = self._children.get(processor)
        if found is None:
            found = self._children[processor] = (self.metrics.inflight.labels(processor.value), {})
        return found

    def _stream_processor(self, context: grpc.aio.ServicerContext) -> tuple[Processor, str | None]:
        """The stream's processor (default downstream) and the fingerprint of the config its bootstrap was
        rendered from (None when the bootstrap was not rendered by us)."""
        processor, fingerprint = Processor.DOWNSTREAM, None
        for key, value in context.invocation_metadata() or ():
            if key == PROCESSOR_METADATA:
                processor = Processor(value)
            elif key == FINGERPRINT_METADATA:
                fingerprint = value
        return processor, fingerprint

    async def Process(self, request_iterator: AsyncIterator[ext.ProcessingRequest], context: grpc.aio.ServicerContext) -> AsyncIterator[ext.ProcessingResponse]:  # noqa: N802 - gRPC name
        try:
            processor, fingerprint = self._stream_processor(context)
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown {PROCESSOR_METADATA}")
        if fingerprint is not None and fingerprint != self.fingerprint:
            self._mismatch(fingerprint)
            if processor in OBSERVERS:
                return
            async for first in request_iterator:
                api = _client_api(first)
                yield immediate(503, api.error_body(503, "gateway misconfigured: Envoy runs a bootstrap rendered from another config", None))
                return
            return
        exchange = self.exchanges[processor]()
        inflight, durations = self._instruments(processor)
        inflight.inc()
        try:
            async for message in request_iterator:
                started = time.perf_counter()
                try:
                    response = await exchange.handle(message)
                except Exception:
                    # A bug here must cost one request a clean 500, not a hung stream or a traceback to the client.
                    log.exception("ext_proc %s processing failed", processor)
                    response = immediate(500, _client_api(message, exchange).error_body(500, "internal error in the routing step", None))
                phase = message.WhichOneof("request") or "unknown"  # the message kind: request_headers, ...
                histogram = durations.get(phase) or durations.setdefault(phase, self.metrics.phase_duration.labels(processor.value, phase))
                histogram.observe(time.perf_counter() - started)
                if response is not None:
                    yield response
                if exchange.done:
                    break
        finally:
            inflight.dec()
            exchange.finish()  # a response cut short still records what was seen


class RoutingService(routing_pb2_grpc.RoutingServiceServicer):
    def __init__(self, engine: DecisionEngine) -> None:
        self.engine = engine

    async def Decide(self, request: routing_pb2.DecideRequest, context: grpc.aio.ServicerContext) -> routing_pb2.DecideResponse:  # noqa: N802
        api = _api_of(request)
        if api is None:
            names = ", ".join(BY_NAME)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"name the client API: api_format, or api = one of {names}")
            raise AssertionError("unreachable")  # abort raises
        session = request.affinity_id or None
        try:
            routed = await self.engine.route_raw(api, request.body, session)
        except RequestFormatError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        decision = routed.decision
        return routing_pb2.DecideResponse(
            models=list(decision.models),
            model=decision.model,
            route=decision.route,
            source=decision.source.value,
            trace_id=trace_id_from(request.traceparent),
            session_id=session or "",
            pinned=decision.pinned if session else False,
        )


def open_relay(config: PlanoConfig) -> bool:
    """True when the listener is reachable from other hosts and no client key is required."""
    address = config.listener_address
    loopback = address in ("localhost", "::1") or address.startswith("127.")
    return not loopback and not config.client_auth.enabled


class ExtProcServer:
    """Owns the engine and the grpc.aio server; `start` binds, `stop` drains."""

    def __init__(self, config: PlanoConfig, address: str, metrics_address: str | None = None, log_prompts: bool = False) -> None:
        self.config = config
        self.address = address
        #: host:port of the Prometheus /metrics endpoint; None = no HTTP endpoint
        self.metrics_address = metrics_address
        self._metrics_http: WSGIServer | None = None
        self.metrics = Metrics(config)
        self.tracer = Tracer(config.tracing)
        self.inflight = InFlightRequests()
        self.engine = DecisionEngine(config, build_router_chain(config), self.metrics)
        forwarder = Forwarder.from_config(config, prebuilt_attempt_lists(config))
        downstream = DownstreamContext(
            self.engine, forwarder, self.metrics, self.inflight, DecisionLog(log_prompts), self.tracer, ClientKeys.from_config(config.client_auth)
        )
        upstream = UpstreamContext(forwarder, self.inflight)
        observer = ObserverContext(self.metrics, self.inflight, forwarder)
        translate = TranslateContext(forwarder, self.inflight)
        exchanges: dict[Processor, Callable[[], Exchange]] = {
            Processor.DOWNSTREAM: lambda: DownstreamExchange(downstream),
            Processor.UPSTREAM: lambda: UpstreamExchange(upstream),
            Processor.TRANSLATE: lambda: TranslateExchange(translate),
            # the streaming observer (observability_mode): Envoy ignores replies, so it never sends one
            Processor.OBSERVE: lambda: ResponseObserver(observer),
        }
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_concurrent_streams", 10_000),
                # Envoy keeps its connection to us alive with HTTP/2 pings (every 30 s, bootstrap); grpc-core's
                # default server policy answers pings on a connection without data flow with GOAWAY
                # too_many_pings after two, which killed long requests (docs/envoy.md finding (n))
                ("grpc.http2.min_ping_interval_without_data_ms", 1000),
                ("grpc.http2.max_ping_strikes", 0),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
        )
        ext_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(exchanges, self.metrics, config_fingerprint(config)), self.server)
        access_logs = AccessLogContext(config, self.metrics, self.inflight, forwarder)
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(AccessLogService(access_logs, config_fingerprint(config)), self.server)
        routing_pb2_grpc.add_RoutingServiceServicer_to_server(RoutingService(self.engine), self.server)  # type: ignore[no-untyped-call]
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port(address)
        if self.port == 0 and not address.startswith("unix:"):
            raise OSError(f"cannot listen on {address}")

    async def start(self) -> None:
        if open_relay(self.config):
            log.warning(
                "the listener %s:%d accepts requests from any client and sends them with the providers' keys: "
                "declare client_auth keys (README, Security)",
                self.config.listener_address,
                self.config.listener_port,
            )
        await self.engine.warm_up()
        if self.metrics_address:
            host, _, port = self.metrics_address.rpartition(":")
            try:
                self._metrics_http, _ = start_http_server(int(port), addr=host or "0.0.0.0", registry=self.metrics.registry)
            except OSError as exc:
                raise OSError(
                    f"cannot serve /metrics on {self.metrics_address} ({exc.strerror}): pick a free port with --metrics (serve) or --metrics-port (up)"
                ) from None
        await self.server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 2.0) -> None:
        await self.server.stop(grace)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
            self._metrics_http = None
        await self.engine.close()
        self.tracer.shutdown()

    async def wait(self) -> None:
        await self.server.wait_for_termination()
