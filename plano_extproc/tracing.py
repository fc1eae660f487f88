"""W3C trace context and optional OpenTelemetry span export.

Without `tracing.otlp_endpoint` in the config nothing is imported and every call is a no-op. With it,
the ext_proc exports one span per routed request (`plano.route`) with a child per router call
(`plano.router`), joined to the client's `traceparent` (or to the trace id the decision reports).
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
        endpoint = settings.otlp_endpoint if settings is not None else None
        self.enabled = bool(endpoint)
        if settings is None or not endpoint:
            return
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "tracing.otlp_endpoint needs: pip install 'plano-extproc[tracing]' (if it is installed: xds-protos "
                f"overwrote opentelemetry-proto's files; pip install --force-reinstall --no-deps opentelemetry-proto) ({exc})"
            ) from exc
        endpoint = endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name}),
            sampler=ParentBased(TraceIdRatioBased(settings.sampling_ratio)),
        )
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=500))
        self._tracer = self._provider.get_tracer("plano_extproc")

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
        span = self._tracer.start_span("plano.route", context=self._parent(trace_id, parent_span), start_time=started_ns, attributes=attributes)
        if router is not None:
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
