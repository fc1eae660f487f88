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
