"""Client API: OpenAI Responses (`POST /v1/responses`).

`input` is a string (one user turn) or a list of items. `instructions` and system/developer messages never
reach the router; `function_call_output` items are tool turns; `function_call` and `reasoning` items carry
no routable text.
"""

from __future__ import annotations

from typing import Any

from plano_extproc.apis.base import (
    ClientApi,
    ConversationBuilder,
    ParsedRequest,
    RequestFormatError,
    load_json_object,
    openai_error_json,
    pop_inline_preferences,
    read_model_and_stream,
    text_of,
    usage_from_counts,
    without_harness,
)
from plano_extproc.conversation import HIDDEN_ROLES
from plano_extproc.usage import Usage

_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
_TOOL_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output", "local_shell_call_output", "computer_call_output"})


def parse(raw: bytes) -> ParsedRequest:
    body = load_json_object(raw)
    model, stream = read_model_and_stream(body)
    items = body.get("input")
    conversation = ConversationBuilder()
    if isinstance(items, str):
        conversation.add("user", without_harness(items))
    elif isinstance(items, list):
        for item in items:
            if not isinstance(item, dict):
                continue
            kind = item.get("type", "message")
            if kind in _TOOL_OUTPUTS:
                conversation.tool()
            elif kind == "message":
                role = item.get("role")
                if isinstance(role, str) and role not in HIDDEN_ROLES:
                    conversation.add(role, text_of(item.get("content"), _TEXT_PARTS))
    elif items is None:
        raise RequestFormatError("'input' is required", param="input")
    else:
        raise RequestFormatError("input must be a string or an array of items", param="input")
    preferences, routing_fields = pop_inline_preferences(body)
    return ParsedRequest(OPENAI_RESPONSES, model, stream, preferences, conversation.build(), body, raw, routing_fields)


def read_usage(payload: dict[str, Any]) -> Usage | None:
    usage = payload.get("usage")  # a whole response object
    if not isinstance(usage, dict):
        response = payload.get("response")  # response.completed / .incomplete / .failed events
        usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None
    return usage_from_counts(usage.get("input_tokens"), usage.get("output_tokens"))


OPENAI_RESPONSES = ClientApi(
    name="openai_responses",
    title="the OpenAI Responses API",
    path="/v1/responses",
    provider_suffix="/responses",
    parse=parse,
    error_json=openai_error_json({404: "not_found_error", 403: "permission_error", 401: "authentication_error", 429: "rate_limit_error"}),
    read_usage=read_usage,
)
