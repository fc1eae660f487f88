"""W3C trace context and optional OpenTelemetry span export.

Without a collector in the config (`tracing.otlp_endpoint`, OTLP/HTTP, or plano's
`tracing.opentracing_grpc_endpoint`, OTLP/gRPC) nothing is imported and every call is a no-op. With one,
the ext_proc exports one span per routed request (`plano.route`) with a child per router call
(`plano.router`, unless plano's `trace_arch_internal: false`), joined to the client's `traceparent` (or to
the trace id the decision reports), carrying plano's `span_attributes` (static ones, and request headers
by prefix, named as plano names them).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Any

from plano_extproc.config import TracingConfig


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) of a valid W3C `traceparent`, else None."""
    if not value:
        return None
    parts = value.strip().lower().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        int(parts[1], 16), int(parts[2], 16)
    except ValueError:
        return None
    if parts[1] == "0" * 32 or parts[2] == "0" * 16:
        return None
    return parts[1], parts[2]


def new_traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"


class Tracer:
    """Span export to an OTLP/HTTP collector; inert unless configured."""

    def __init__(self, settings: TracingConfig | None) -> None:
        self._tracer: Any = None
        self._provider: Any = None
        self.enabled = settings is not None and settings.enabled
        self.router_spans = settings.router_spans if settings is not None else True
        self.static_attributes: dict[str, str] = dict(settings.span_attributes.static) if settings is not None else {}
        self.header_prefixes: tuple[str, ...] = settings.span_attributes.header_prefixes if settings is not None else ()
        if settings is None or not self.enabled:
            return
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

            exporter = _exporter(settings)
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "span export needs: pip install 'plano-extproc[tracing]' (if it is installed: xds-protos "
                f"overwrote opentelemetry-proto's files; pip install --force-reinstall --no-deps opentelemetry-proto) ({exc})"
            ) from exc
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name}),
            sampler=ParentBased(TraceIdRatioBased(settings.sampling_ratio)),
        )
        self._provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
        self._tracer = self._provider.get_tracer("plano_extproc")

    def header_attributes(self, headers: dict[str, str]) -> dict[str, str]:
        """plano's span_attributes.header_prefixes: a header ``x-user-id`` under prefix ``x-user-`` becomes
        the attribute ``id`` (the rest of its name, dashes as dots), its value trimmed."""
        if not self.enabled or not self.header_prefixes:
            return {}
        out: dict[str, str] = {}
        for name, value in headers.items():
            prefix = next((p for p in self.header_prefixes if name.startswith(p)), None)
            if prefix is None:
                continue
            key = name[len(prefix) :].lstrip("-").replace("-", ".")
            if key:
                out[key] = value.strip()
        return out

    def _parent(self, trace_id: str, parent_span: str | None) -> Any:
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

        span_id = int(parent_span, 16) if parent_span else int(secrets.token_hex(8), 16)
        ctx = SpanContext(int(trace_id, 16), span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        return trace.set_span_in_context(NonRecordingSpan(ctx))

    def route_span(self, trace_id: str, parent_span: str | None, attributes: dict[str, Any], started_ns: int, router: dict[str, Any] | None) -> None:
        """Record the finished routing step (and its router call) as spans. Called after the fact so
        the request path never waits on span bookkeeping."""
        if not self.enabled:
            return
        end_ns = time.time_ns()
        attributes = {**self.static_attributes, **attributes}
        span = self._tracer.start_span("plano.route", context=self._parent(trace_id, parent_span), start_time=started_ns, attributes=attributes)
        if router is not None and self.router_spans:
            from opentelemetry import trace

            child_ctx = trace.set_span_in_context(span)
            seconds = router.pop("seconds", 0.0)
            child_start = max(started_ns, end_ns - int(seconds * 1e9))
            child = self._tracer.start_span("plano.router", context=child_ctx, start_time=child_start, attributes=router)
            child.end(end_time=child_start + int(seconds * 1e9))
        span.end(end_time=end_ns)

    def shutdown(self) -> None:
        if self._provider is not None:
            with contextlib.suppress(Exception):
                self._provider.shutdown()


def _exporter(settings: TracingConfig) -> Any:
    """OTLP/HTTP to ``otlp_endpoint`` when given, else OTLP/gRPC to plano's ``opentracing_grpc_endpoint``."""
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        return OTLPSpanExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

    return GrpcSpanExporter(endpoint=settings.opentracing_grpc_endpoint, insecure=True)
