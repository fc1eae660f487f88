"""Decision logs: one JSON line per decision, no prompt unless asked, never a key."""

from __future__ import annotations

import io
import json
import logging

from plano_extproc.decision import Decision, DecisionSource, RouterOutcome
from plano_extproc.logs import DECISION_LOGGER, DecisionLog, JsonFormatter


def capture(log: DecisionLog, **kwargs) -> dict:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(DECISION_LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log.emit(**kwargs)
    finally:
        logger.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    return json.loads(line)


DECISION = Decision(("anthropic/claude", "openai/gpt-4o"), "code_generation", DecisionSource.ROUTER, router_backend="embedded")
OUTCOME = RouterOutcome("code_generation", "embedded", seconds=0.0042)


def test_one_json_line_per_decision_without_the_prompt():
    entry = capture(DecisionLog(), decision=DECISION, outcome=OUTCOME, trace_id="t" * 32, endpoint="proxy", api_format="openai_chat", prompt=None)
    assert entry["msg"] == "decision" and entry["route"] == "code_generation" and entry["model"] == "anthropic/claude"
    assert entry["source"] == "router" and entry["router"] == "embedded" and entry["router_ms"] == 4.2
    assert entry["trace_id"] == "t" * 32 and "prompt" not in entry


def test_prompt_only_when_enabled():
    entry = capture(DecisionLog(log_prompts=True), decision=DECISION, outcome=None, trace_id="x", endpoint="routing", api_format="openai_chat", prompt="hello")
    assert entry["prompt"] == "hello" and entry["router"] is None


def test_grpc_lines_that_only_say_envoy_left_are_dropped_and_real_errors_kept():
    import asyncio

    from plano_extproc.logs import GRPC_LOGGER, configure_logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("info", json_format=True)
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    grpc_logger = logging.getLogger(GRPC_LOGGER)
    keep = Keep()
    grpc_logger.addHandler(keep)

    class ExecuteBatchError(Exception):  # grpc.aio's, by name: it is not importable from Python
        pass

    def error_with(exc: BaseException, message: str) -> None:
        try:
            raise exc
        except BaseException:
            grpc_logger.exception(message)

    try:
        # a handler cancelled by grpc itself (a worker stopping with Envoy's access-log streams open)
        error_with(asyncio.CancelledError(), "Exception not handled by _handle_exceptions in servicer method [/x/StreamAccessLogs]")
        # the status of a stream Envoy had just reset
        error_with(ExecuteBatchError('Failed "execute_batch": (<grpc._cython.cygrpc.SendStatusFromServerOperation object at 0x1>,)'),
                   "ExecuteBatchError raised in core by servicer method [/x/Process]")
        assert seen == []
        error_with(ExecuteBatchError('Failed "execute_batch": (<grpc._cython.cygrpc.ReceiveMessageOperation object at 0x1>,)'), "other batch")
        error_with(RuntimeError("a bug"), "Unexpected [RuntimeError] raised by servicer method")
        assert [r.getMessage() for r in seen] == ["other batch", "Unexpected [RuntimeError] raised by servicer method"]
        logging.getLogger().setLevel(logging.DEBUG)  # asked for everything: nothing is dropped
        error_with(asyncio.CancelledError(), "cancelled")
        assert seen[-1].getMessage() == "cancelled"
    finally:
        grpc_logger.removeHandler(keep)
        root.handlers[:] = handlers
        root.setLevel(level)
