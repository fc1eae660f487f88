"""Client API: Anthropic Messages (`POST /v1/messages`).

`system` (top level, or a `system` message inside `messages`, which Claude Code sends) never reaches the
router. `tool_result` blocks are tool turns; `tool_use`, images and documents carry no routable text.
"""

from __future__ import annotations

from typing import Any

from plano_extproc.apis.base import (
    ClientApi,
    ConversationBuilder,
    ParsedRequest,
    load_json_object,
    pop_inline_preferences,
    read_model_and_stream,
    require_list,
    text_of,
    usage_from_counts,
)
from plano_extproc.conversation import HIDDEN_ROLES
from plano_extproc.usage import Usage

_TEXT_BLOCKS = frozenset({"text"})

#: Anthropic's documented error types by status
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _has_tool_result(content: Any) -> bool:
    return isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)


def parse(raw: bytes) -> ParsedRequest:
    body = load_json_object(raw)
    model, stream = read_model_and_stream(body)
    conversation = ConversationBuilder()
    for message in require_list(body, "messages"):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if not isinstance(role, str) or role in HIDDEN_ROLES:
            continue
        content = message.get("content")
        text = text_of(content, _TEXT_BLOCKS)
        if not text and _has_tool_result(content):
            conversation.tool()
        else:
            conversation.add(role, text)
    preferences, routing_fields = pop_inline_preferences(body)
    return ParsedRequest(ANTHROPIC_MESSAGES, model, stream, preferences, conversation.build(), body, raw, routing_fields)


def read_usage(payload: dict[str, Any]) -> Usage | None:
    usage = payload.get("usage")  # a whole message, or message_delta
    if not isinstance(usage, dict):
        message = payload.get("message")  # message_start
        usage = message.get("usage") if isinstance(message, dict) else None
    if not isinstance(usage, dict):
        return None
    # input_tokens excludes prompt-cache reads and writes: add them, so "input" means what it means for
    # the OpenAI APIs (whose counts include cached tokens), as OTel's gen_ai.usage.input_tokens asks
    return usage_from_counts(
        usage.get("input_tokens"),
        usage.get("output_tokens"),
        usage.get("cache_creation_input_tokens"),
        usage.get("cache_read_input_tokens"),
    )


def error_json(status: int, message: str, param: str | None = None) -> dict[str, Any]:  # noqa: ARG001 - Anthropic errors name no param
    kind = _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


ANTHROPIC_MESSAGES = ClientApi(
    name="anthropic_messages",
    title="the Anthropic Messages API",
    path="/v1/messages",
    provider_suffix="/messages",
    parse=parse,
    error_json=error_json,
    read_usage=read_usage,
)
