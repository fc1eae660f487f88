"""Structured logs: one JSON object per line, and one `decision` line per routed request.

Decision lines carry route, models, source, router backend and latency, and the trace id — never the
prompt text unless `log_prompts` is switched on explicitly, never a key.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

import orjson

from plano_extproc.decision import Decision, RouterOutcome

DECISION_LOGGER = "plano_extproc.decisions"
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """`fields`: added to every line (a worker process's number)."""

    def __init__(self, fields: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self.fields,
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


#: grpc.aio's own logger: it reports at ERROR, with a traceback, what is no error of ours
GRPC_LOGGER = "grpc._cython.cygrpc"


class GrpcPeerGoneFilter(logging.Filter):
    """Keeps grpc.aio's ERROR lines for what went wrong, drops two that say only that the other side left:
    a handler cancelled by grpc itself (Envoy reset the stream, or the server is stopping: every
    long-lived access-log stream at each worker replacement) and a final status that could not be sent
    because Envoy had just reset the stream. At debug level they are kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger(GRPC_LOGGER).isEnabledFor(logging.DEBUG):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, asyncio.CancelledError):
            return False
        return not (type(exc).__name__ == "ExecuteBatchError" and "SendStatusFromServerOperation" in str(exc))


def configure_logging(level: str = "info", json_format: bool = True, fields: dict[str, Any] | None = None) -> None:
    """JSON lines (or text) on stderr; `fields` go into every line (text: a prefix)."""
    grpc_logger = logging.getLogger(GRPC_LOGGER)
    if not any(isinstance(f, GrpcPeerGoneFilter) for f in grpc_logger.filters):
        grpc_logger.addFilter(GrpcPeerGoneFilter())
    handler = logging.StreamHandler(sys.stderr)
    prefix = "".join(f"[{k} {v}] " for k, v in (fields or {}).items())
    text = logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
    handler.setFormatter(JsonFormatter(fields) if json_format else text)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class DecisionLog:
    def __init__(self, log_prompts: bool = False) -> None:
        self.log_prompts = log_prompts
        self.logger = logging.getLogger(DECISION_LOGGER)

    def emit(
        self,
        decision: Decision,
        outcome: RouterOutcome | None,
        *,
        trace_id: str,
        endpoint: str,
        api_format: str,
        prompt: str | None = None,
    ) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        fields: dict[str, Any] = {
            "route": decision.route,
            "model": decision.model,
            "models": list(decision.models),
            "source": decision.source.value,
            "pinned": decision.pinned,
            "router": outcome.backend if outcome else None,
            "router_ms": round(outcome.seconds * 1000, 2) if outcome else None,
            "router_error": outcome.error_kind if outcome else None,
            "trace_id": trace_id,
            "endpoint": endpoint,
            "api_format": api_format,
        }
        if self.log_prompts and prompt is not None:
            fields["prompt"] = prompt
        self.logger.info("decision", extra=fields)
