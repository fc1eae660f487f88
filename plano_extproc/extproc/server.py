"""The gRPC server: Envoy's ext_proc streams (one processor each, contract.Processor), its access logs
(response observation, access_log.py), our RoutingService, health.

Which processor a stream gets is told by gRPC metadata the rendered Envoy config sets on each filter
(`x-plano-processor: downstream | upstream`); a missing value means downstream.

Config reload: everything built from one config (the engine, the forwarder, the processors' contexts)
is a `Generation`. `ExtProcServer.reload` builds and warms up the next one and installs it for new
streams; a stream keeps the generation it started with. Which one a stream gets: the generation that
opened its request's in-flight record (upstream attempts, translator and observers of a request decided
before a reload finish on that config), else the latest generation whose bootstrap fingerprint the
stream carries (an Envoy still running the bootstrap of an earlier config — draining after a hot
restart, or not yet re-rendered — keeps the config its clusters were rendered from), else, for a
fingerprint no generation has, the stream is refused as before.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

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
    ALIVE_SERVICE,
    FINGERPRINT_METADATA,
    GRACEFUL_CLOSE_METADATA,
    PROCESSOR_METADATA,
    REQUEST_ID_ATTRIBUTE,
    WORKERS_METADATA,
    DecisionMetadata,
    Processor,
    config_fingerprint,
    prebuilt_attempt_lists,
)
from plano_extproc.engine import DecisionEngine, build_router_chain, build_session_store, same_session_store
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
#: how long a processor whose request stream ended waits for grpc to report a reset (see Process). Under
#: load the event loop runs a reset's cancellation late: 10 ms still let ~45 bytes per 4xx answer leak at
#: 200 req/s, 1 s ~3 (docs/envoy.md finding (z)); the wait holds no request and no in-flight count
CANCELLED_STREAM_GRACE_S = 1.0


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


@dataclass(eq=False)
class Generation:
    """One config as the processors serve it. Streams that started under it keep it to their end."""

    number: int
    config: PlanoConfig
    fingerprint: str
    engine: DecisionEngine
    forwarder: Forwarder
    tracer: Tracer
    exchanges: dict[Processor, Callable[[], Exchange]] = field(default_factory=dict)
    #: what Envoy's access-log entries of this config's bootstrap are read with
    access_log: AccessLogContext | None = None
    #: streams and Decide calls running on it now
    active: int = 0
    #: no longer handed to new streams; its own resources are closed once `active` drops to 0
    retired: bool = False
    closed: bool = False

    def resources(self) -> tuple[object, ...]:
        """What closing it closes (each may be shared with the next generation)."""
        return () if self.closed else (self.engine.router, self.engine.sessions, self.tracer)


class Generations:
    """The current generation and, per bootstrap fingerprint, the latest one that matches it."""

    #: fingerprints (and so Envoy bootstraps) served at once: the current one and a few earlier ones
    RETAINED = 4

    def __init__(self, first: Generation, metrics: Metrics, *, envoy_managed: bool = False) -> None:
        self.current = first
        self.metrics = metrics
        #: `up` restarts Envoy itself: streams of the previous bootstrap are then expected (draining)
        self.envoy_managed = envoy_managed
        self._by_fingerprint: OrderedDict[str, Generation] = OrderedDict([(first.fingerprint, first)])
        self._warned: set[tuple[str, str]] = set()
        self._closing: set[asyncio.Task[None]] = set()

    def live(self) -> list[Generation]:
        return list(self._by_fingerprint.values())

    def for_stream(self, fingerprint: str | None, owner: Generation | None = None) -> Generation | None:
        if owner is not None and (fingerprint is None or owner.fingerprint == fingerprint):
            return owner
        current = self.current
        if fingerprint is None or fingerprint == current.fingerprint:
            return current
        found = self._by_fingerprint.get(fingerprint)
        if found is not None:
            self.metrics.previous_bootstrap_streams.inc()
            if not self.envoy_managed and (fingerprint, current.fingerprint) not in self._warned:
                self._warned.add((fingerprint, current.fingerprint))
                log.error(
                    "Envoy runs the bootstrap of an earlier config (fingerprint %s); the config file now needs "
                    "bootstrap %s (new models, endpoints or ranked model lists). Its requests are served with "
                    "that earlier config (generation %d) until Envoy runs the new bootstrap: re-render it with "
                    "`plano-extproc render-envoy --config FILE ...` and restart or hot-restart Envoy",
                    fingerprint,
                    current.fingerprint,
                    found.number,
                )
        return found

    def install(self, generation: Generation) -> None:
        """New streams get `generation`; generations no longer reachable are retired."""
        self.current = generation
        replaced = self._by_fingerprint.pop(generation.fingerprint, None)
        self._by_fingerprint[generation.fingerprint] = generation
        dropped = [replaced] if replaced is not None and replaced is not generation else []
        while len(self._by_fingerprint) > self.RETAINED:
            _, oldest = self._by_fingerprint.popitem(last=False)
            dropped.append(oldest)
        for old in dropped:
            self._retire(old)

    def forget(self, fingerprint: str) -> None:
        """The Envoy running that bootstrap is gone: its generation is retired (unless current)."""
        if fingerprint != self.current.fingerprint:
            found = self._by_fingerprint.pop(fingerprint, None)
            if found is not None:
                self._retire(found)

    def enter(self, generation: Generation) -> None:
        generation.active += 1

    def leave(self, generation: Generation) -> None:
        generation.active -= 1
        if generation.retired and generation.active == 0:
            self._close_unshared(generation)

    def discard(self, generation: Generation) -> None:
        """A generation that was never installed (its reload failed)."""
        self._retire(generation)

    def _retire(self, generation: Generation) -> None:
        generation.retired = True
        if generation.active == 0:
            self._close_unshared(generation)

    def _close_unshared(self, generation: Generation) -> None:
        if generation.closed:
            return
        in_use = {id(r) for g in self._by_fingerprint.values() for r in g.resources()}
        for g in self._by_fingerprint.values():
            in_use.add(id(g))
        if id(generation) in in_use:
            return
        engine = generation.engine
        closers = []
        if id(engine.router) not in in_use:
            closers.append(engine.router.close())
        if id(engine.sessions) not in in_use:
            closers.append(engine.sessions.close())
        tracer = generation.tracer if id(generation.tracer) not in in_use else None
        generation.closed = True  # shares nothing any more

        async def close() -> None:
            for closer in closers:
                try:
                    await closer
                except Exception:
                    log.debug("closing a retired config's resources failed", exc_info=True)
            if tracer is not None:
                await asyncio.to_thread(tracer.shutdown)

        try:
            task = asyncio.get_running_loop().create_task(close())
        except RuntimeError:  # no loop (tests, shutdown): nothing to wait for
            for closer in closers:
                closer.close()
            return
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


def _request_id(message: ext.ProcessingRequest) -> str:
    """The x-request-id a non-downstream stream's first message names (headers or attributes)."""
    if message.WhichOneof("request") == "request_headers":
        for h in message.request_headers.headers.headers:
            if h.key == "x-request-id":
                return h.raw_value.decode("utf-8", "replace") if h.raw_value else str(h.value)
        return ""
    for struct in message.attributes.values():
        value = struct.fields.get(REQUEST_ID_ATTRIBUTE)
        if value is not None:
            return str(value.string_value)
    return ""


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _StreamMetadata(NamedTuple):
    """What an ext_proc stream's initial metadata says: the processor it is for (default downstream), the
    fingerprint of the config its bootstrap was rendered from (None: not rendered by us), the worker
    processes that bootstrap was rendered for, and whether Envoy closes it gracefully."""

    processor: Processor
    fingerprint: str | None
    workers: int
    graceful: bool


class ExternalProcessor(ext_grpc.ExternalProcessorServicer):  # type: ignore[misc]  # xds-protos is untyped
    """Envoy's streams, each handed to the exchange of its processor (contract.Processor) in the
    generation it belongs to."""

    def __init__(
        self, generations: Generations, metrics: Metrics, inflight: InFlightRequests, workers: int = 1, reset_grace_s: float = CANCELLED_STREAM_GRACE_S
    ) -> None:
        self.generations = generations
        #: how long an ended stream waits for Envoy's reset before its status is sent (Process)
        self.reset_grace_s = reset_grace_s
        self.metrics = metrics
        self.inflight = inflight
        #: the worker processes this one is part of (1: it serves alone); a bootstrap rendered for another
        #: number says so in WORKERS_METADATA (absent: one) and its streams are refused
        self.workers = workers
        self._mismatches_seen: set[str] = set()
        #: streams waiting out reset_grace_s (released at once when the server stops)
        self._waiting: set[asyncio.Future[None]] = set()
        self._workers_mismatch_logged = False
        #: streams being processed now (not those waiting out reset_grace_s: they hold nothing); a
        #: draining worker is replaced once this and its in-flight records are at 0
        self.streams = 0

    @property
    def fingerprint(self) -> str:
        return self.generations.current.fingerprint

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

    def _stream_processor(self, context: grpc.aio.ServicerContext) -> _StreamMetadata:
        """What the stream's initial metadata says (see _StreamMetadata)."""
        processor, fingerprint, workers, graceful = Processor.DOWNSTREAM, None, 1, False
        for key, value in context.invocation_metadata() or ():
            if key == PROCESSOR_METADATA:
                processor = Processor(value)
            elif key == FINGERPRINT_METADATA:
                fingerprint = value
            elif key == WORKERS_METADATA:
                workers = int(value) if value.isdigit() else 0
            elif key == GRACEFUL_CLOSE_METADATA:
                graceful = value == "1"
        return _StreamMetadata(processor, fingerprint, workers, graceful)

    def _workers_mismatch(self, theirs: int) -> None:
        self.metrics.config_mismatches.inc()
        if not self._workers_mismatch_logged:
            self._workers_mismatch_logged = True
            log.error(
                "Envoy's bootstrap was rendered for %d ext_proc worker process(es), this ext_proc runs %d: requests are "
                "refused until Envoy runs `plano-extproc render-envoy --workers %d` output (a request's later streams "
                "would reach a worker that does not hold its state)",
                theirs,
                self.workers,
                self.workers,
            )

    def _generation(self, processor: Processor, fingerprint: str | None, first: ext.ProcessingRequest) -> Generation | None:
        owner = None
        if processor is not Processor.DOWNSTREAM:
            request_id = _request_id(first)
            record = self.inflight.get(request_id) if request_id else None
            if record is not None and isinstance(record.owner, Generation):
                owner = record.owner
        return self.generations.for_stream(fingerprint, owner)

    async def Process(self, request_iterator: AsyncIterator[ext.ProcessingRequest], context: grpc.aio.ServicerContext) -> AsyncIterator[ext.ProcessingResponse]:  # noqa: N802 - gRPC name
        try:
            processor, fingerprint, workers, graceful = self._stream_processor(context)
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown {PROCESSOR_METADATA}")
        generation: Generation | None = None
        exchange: Exchange | None = None
        inflight = self.metrics.inflight_streams(processor.value)
        closing = False  # we end the stream ourselves: our last answer needs no reset from Envoy
        ended_request = False  # our last answer was an immediate response: Envoy now closes the stream
        try:
            async for message in request_iterator:
                if exchange is None:
                    if workers != self.workers:
                        self._workers_mismatch(workers)
                        if processor not in OBSERVERS:
                            api = _client_api(message)
                            message_text = "gateway misconfigured: Envoy's bootstrap was rendered for another number of ext_proc workers"
                            yield immediate(503, api.error_body(503, message_text, None))
                        return
                    # the stream's config is fixed by its first message, for its whole life
                    generation = self._generation(processor, fingerprint, message)
                    if generation is None:
                        assert fingerprint is not None
                        self._mismatch(fingerprint)
                        if processor not in OBSERVERS:
                            api = _client_api(message)
                            yield immediate(503, api.error_body(503, "gateway misconfigured: Envoy runs a bootstrap rendered from another config", None))
                        return
                    self.generations.enter(generation)
                    exchange = generation.exchanges[processor]()
                    inflight.inc()
                    self.streams += 1
                started = time.perf_counter()
                try:
                    response = await exchange.handle(message)
                except Exception:
                    # A bug here must cost one request a clean 500, not a hung stream or a traceback to the client.
                    log.exception("ext_proc %s processing failed", processor)
                    response = immediate(500, _client_api(message, exchange).error_body(500, "internal error in the routing step", None))
                phase = message.WhichOneof("request") or "unknown"  # the message kind: request_headers, ...
                self.metrics.phase(processor.value, phase).observe(time.perf_counter() - started)
                if response is not None:
                    yield response
                if exchange.done:
                    ended_request = response is not None and response.HasField("immediate_response")
                    closing = not ended_request
                    break
        finally:
            if exchange is not None:
                inflight.dec()
                self.streams -= 1
                exchange.finish()  # a response cut short still records what was seen
            if generation is not None:
                self.generations.leave(generation)
        if closing or (graceful and ended_request):
            # closing: our last answer was not an immediate response, so Envoy goes on with the request and
            # the stream is alive: the status goes out now and Envoy takes it as processing complete
            # (finding (n)). Waiting instead made Envoy reset the stream at the request's end, one
            # RST_STREAM per request, and under overload the server then closed new streams CANCELLED
            # (finding (aa)). An immediate response ends the request: Envoy closes the stream, and when its
            # bootstrap turns on GRACEFUL_CLOSE_FEATURE it half-closes and waits for our status (ac).
            return
        # Envoy half-closed the stream before we were done, or is resetting it (its client went away), or
        # it resets the stream an immediate response ended (a bootstrap without graceful close: not
        # rendered by us, or by an older version). A reset reaches grpc.aio after the end of the
        # request stream; a handler that returns first makes grpc send a status on a cancelled call, and
        # that failed batch is never freed (grpc/grpc#43360: ~100 bytes per reset stream, the soak's
        # linear RSS climb). Waiting lets grpc cancel this handler instead (docs/envoy.md finding (z));
        # a stream Envoy keeps open gets its status after the wait.
        await self._wait_for_reset()

    async def _wait_for_reset(self) -> None:
        """Sleep reset_grace_s, or less if the server stops (a sleep's cost: a future and a timer)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = waiter.get_loop().call_later(self.reset_grace_s, _release, waiter)
        self._waiting.add(waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiting.discard(waiter)

    def release_waiting(self) -> None:
        """End every stream's wait for a reset now (the server is stopping: nothing is left to leak)."""
        for waiter in list(self._waiting):
            _release(waiter)


class RoutingService(routing_pb2_grpc.RoutingServiceServicer):
    """`Decide` with the current generation's engine. The tenant (routing.session_cache.tenant_header) is
    read from the call's gRPC metadata under the same (lower-case) name."""

    def __init__(self, generations: Generations) -> None:
        self.generations = generations

    async def Decide(self, request: routing_pb2.DecideRequest, context: grpc.aio.ServicerContext) -> routing_pb2.DecideResponse:  # noqa: N802
        api = _api_of(request)
        if api is None:
            names = ", ".join(BY_NAME)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"name the client API: api_format, or api = one of {names}")
            raise AssertionError("unreachable")  # abort raises
        session = request.affinity_id or None
        generation = self.generations.current
        engine = generation.engine
        tenant = None
        if engine.tenant_header is not None:
            tenant = next((str(v) for k, v in context.invocation_metadata() or () if k == engine.tenant_header), None)
        self.generations.enter(generation)
        try:
            routed = await engine.route_raw(api, request.body, session, tenant)
        except RequestFormatError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        finally:
            self.generations.leave(generation)
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


def run_event_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run an ext_proc process's `main` on uvloop where it is installed (a dependency but on Windows):
    measured side by side (bench/README.md), ~14 % less CPU per proxied request than asyncio's own loop.
    What was imported by then is first put out of the garbage collector's reach (`freeze_imports`)."""
    run: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    try:
        import uvloop
    except ImportError:
        pass
    else:
        run = uvloop.run
    freeze_imports()
    return run(main)


def freeze_imports() -> None:
    """Collect, then freeze what is alive: in a process that has imported the server, that is ~47,000
    objects of modules, classes and functions (grpc, protobuf, numpy, pydantic...), which live as long as
    the process and which every full collection would otherwise walk — 30-65 ms with all requests stopped,
    every few thousand requests (docs/envoy.md (af)). Called before the server is built from the config,
    so what a reload retires (a config's engine, router, caches, the cycles among them) stays collectable."""
    gc.collect()
    gc.freeze()


def open_relay(config: PlanoConfig) -> bool:
    """True when the listener is reachable from other hosts and no client key is required."""
    address = config.listener_address
    loopback = address in ("localhost", "::1") or address.startswith("127.")
    return not loopback and not config.client_auth.enabled


class ExtProcServer:
    """Owns the generations and the grpc.aio server; `start` binds, `reload` swaps the config, `stop` drains.

    `envoy_managed`: the caller restarts Envoy itself on bootstrap changes (`up`), so streams of an
    earlier bootstrap are expected; otherwise (`serve`) they are reported as an error naming the fix.

    As worker `worker` of `workers` processes (plano_extproc.workers): the downstream processor names the
    worker on every request it forwards (contract.WORKER_HEADER), streams of a bootstrap rendered for
    another number of workers are refused, `session_file` holds the session pins of a ``memory`` session
    cache (shared by the workers, session_sqlite.py), and `generation` numbers the first config (the
    supervisor keeps every worker on the same numbers)."""

    def __init__(
        self,
        config: PlanoConfig,
        address: str,
        metrics_address: str | None = None,
        log_prompts: bool = False,
        *,
        envoy_managed: bool = False,
        worker: int | None = None,
        workers: int = 1,
        session_file: str | None = None,
        generation: int = 1,
        reset_grace_s: float = CANCELLED_STREAM_GRACE_S,
    ) -> None:
        self.address = address
        #: host:port of the Prometheus /metrics endpoint; None = no HTTP endpoint
        self.metrics_address = metrics_address
        self._metrics_http: WSGIServer | None = None
        self.worker = worker if workers > 1 else None
        self.workers = workers
        self.session_file = session_file
        self.metrics = Metrics(config)
        self.inflight = InFlightRequests()
        self.decision_log = DecisionLog(log_prompts)
        self.generations = Generations(self._build(config, None, generation), self.metrics, envoy_managed=envoy_managed)
        self._watch(self.generations.current)
        self._reload_lock = asyncio.Lock()
        #: what the latest install replaced (`revert` puts it back)
        self._replaced: Generation | None = None
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
        self.processor = ExternalProcessor(self.generations, self.metrics, self.inflight, workers, reset_grace_s)
        ext_grpc.add_ExternalProcessorServicer_to_server(self.processor, self.server)
        routing_pb2_grpc.add_RoutingServiceServicer_to_server(RoutingService(self.generations), self.server)  # type: ignore[no-untyped-call]
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(AccessLogService(self._access_log_context, self.metrics), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port(address)
        if self.port == 0 and not address.startswith("unix:"):
            raise OSError(f"cannot listen on {address}")

    # the current generation's parts (what a new request gets)
    @property
    def config(self) -> PlanoConfig:
        return self.generations.current.config

    @property
    def engine(self) -> DecisionEngine:
        return self.generations.current.engine

    @property
    def tracer(self) -> Tracer:
        return self.generations.current.tracer

    @property
    def fingerprint(self) -> str:
        return self.generations.current.fingerprint

    def _build(self, config: PlanoConfig, previous: Generation | None, number: int) -> Generation:
        """Everything built from `config`; the router, the session store (and its pins) and the tracer of
        `previous` are kept when the config does not change them."""
        if previous is not None and previous.config.routing.router == config.routing.router:
            router = previous.engine.router
        else:
            router = build_router_chain(config)
        sessions = None
        if previous is not None and same_session_store(previous.config, config):
            sessions = previous.engine.sessions
            resize = getattr(sessions, "resize", None)
            if resize is not None:
                resize(config.routing.session_max_entries)
        if sessions is None and self.session_file is not None:
            sessions = build_session_store(config, self.session_file)
        tracer = previous.tracer if previous is not None and previous.config.tracing == config.tracing else Tracer(config.tracing)
        engine = DecisionEngine(config, router, self.metrics, sessions)
        forwarder = Forwarder.from_config(config, prebuilt_attempt_lists(config))
        generation = Generation(number, config, config_fingerprint(config), engine, forwarder, tracer)
        inflight = self.inflight.for_owner(generation)  # records opened by its requests name it
        downstream = DownstreamContext(
            engine, forwarder, self.metrics, inflight, self.decision_log, tracer, ClientKeys.from_config(config.client_auth), self.worker
        )
        upstream = UpstreamContext(forwarder, inflight)
        observer = ObserverContext(self.metrics, inflight, forwarder)
        translate = TranslateContext(forwarder, inflight)
        generation.exchanges.update({
            Processor.DOWNSTREAM: lambda: DownstreamExchange(downstream),
            Processor.UPSTREAM: lambda: UpstreamExchange(upstream),
            Processor.TRANSLATE: lambda: TranslateExchange(translate),
            # response observers (observability_mode): Envoy ignores replies, so they never send one
            # the streaming observer (observability_mode): Envoy ignores replies, so it never sends one
            Processor.OBSERVE: lambda: ResponseObserver(observer),
        })
        generation.access_log = AccessLogContext(config, self.metrics, inflight, forwarder)
        return generation

    def _access_log_context(self, fingerprint: str | None) -> AccessLogContext | None:
        """The access-log bindings of the generation an Envoy with this bootstrap is served by (None: a
        bootstrap of no config served here)."""
        generation = self.generations.for_stream(fingerprint)
        return generation.access_log if generation is not None else None

    def _watch(self, generation: Generation) -> None:
        """Export the current generation's session store and decision cache."""
        self.metrics.watch_sessions(lambda: self.generations.current.engine.sessions)
        self.metrics.watch_decision_cache(generation.engine.router.cache)
        self.metrics.set_config(generation.config)
        self.metrics.config_generation.set(generation.number)

    async def reload(self, config: PlanoConfig) -> str:
        """Serve `config` to new streams; streams running keep theirs. Returns "applied" when Envoy's
        bootstrap fits it as is, "bootstrap_mismatch" when it needs a re-rendered bootstrap (streams of
        the running bootstrap keep the previous config meanwhile). Raises (the old config stays) when it
        cannot be built or warmed up."""
        async with self._reload_lock:
            generation = await self._prepare(config, None)
            return self._commit(generation)

    async def prepare(self, config: PlanoConfig, number: int | None = None) -> Generation:
        """The first half of `reload`: `config` built and warmed up, not yet served (`commit` or `discard`
        it). The supervisor prepares a new config in every worker before any of them serves it."""
        async with self._reload_lock:
            return await self._prepare(config, number)

    def commit(self, generation: Generation) -> str:
        """Serve a prepared generation to new streams (`reload`'s outcome)."""
        return self._commit(generation)

    def discard(self, generation: Generation) -> None:
        """Drop a prepared generation that will not be served."""
        self._watch(self.generations.current)
        self.generations.discard(generation)

    def revert(self) -> None:
        """Serve again what the latest install replaced (an Envoy hot restart onto its bootstrap failed);
        the generation it had installed is forgotten."""
        previous, self._replaced = self._replaced, None
        if previous is None:
            return
        failed = self.generations.current
        self.generations.install(previous)
        self.generations.forget(failed.fingerprint)
        self._watch(previous)

    async def _prepare(self, config: PlanoConfig, number: int | None) -> Generation:
        previous = self.generations.current
        generation = self._build(config, previous, number if number is not None else previous.number + 1)
        try:
            await generation.engine.warm_up()
        except BaseException:
            self._watch(previous)  # the failed one's store and cache are not exported
            self.generations.discard(generation)
            raise
        self._watch(previous)
        return generation

    def _commit(self, generation: Generation) -> str:
        previous = self.generations.current
        self._replaced = previous
        self.generations.install(generation)
        self._watch(generation)
        return "applied" if generation.fingerprint == previous.fingerprint else "bootstrap_mismatch"

    async def start(self) -> None:
        config = self.generations.current.config
        if open_relay(config):
            log.warning(
                "the listener %s:%d accepts requests from any client and sends them with the providers' keys: "
                "declare client_auth keys (README, Security)",
                config.listener_address,
                config.listener_port,
            )
        await self.generations.current.engine.warm_up()
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
        await self.health.set(ALIVE_SERVICE, health_pb2.HealthCheckResponse.SERVING)

    async def drain(self) -> None:
        """Take no new requests: the health check Envoy balances by (service "") says NOT_SERVING, so
        Envoy stops opening routing streams here; everything already here is served to its end. The
        process stays alive (ALIVE_SERVICE), so a container probe does not restart it meanwhile."""
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self, grace: float = 2.0) -> None:
        self.processor.release_waiting()
        await self.server.stop(grace)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
            self._metrics_http = None
        closed: set[int] = set()
        for generation in self.generations.live():
            engine = generation.engine
            for part in (engine.router, engine.sessions):
                if id(part) not in closed:
                    closed.add(id(part))
                    await part.close()
            if id(generation.tracer) not in closed:
                closed.add(id(generation.tracer))
                generation.tracer.shutdown()

    async def wait(self) -> None:
        await self.server.wait_for_termination()
