"""Client API: OpenAI Chat Completions (`POST /v1/chat/completions`).

The router reads `user` and `assistant` text; `system`, `developer`, `tool` and `function` messages never
reach it. A `tool`/`function` message last means the request continues its latest user turn.
"""

from __future__ import annotations

from typing import Any

from plano_extproc.apis.base import (
    ClientApi,
    ConversationBuilder,
    ParsedRequest,
    load_json_object,
    openai_error_json,
    pop_inline_preferences,
    read_model_and_stream,
    require_list,
    text_of,
    usage_from_counts,
)
from plano_extproc.conversation import HIDDEN_ROLES
from plano_extproc.usage import Usage

_TEXT_PARTS = frozenset({"text"})
_TOOL_ROLES = frozenset({"tool", "function"})


def parse(raw: bytes) -> ParsedRequest:
    body = load_json_object(raw)
    model, stream = read_model_and_stream(body)
    conversation = ConversationBuilder()
    for message in require_list(body, "messages"):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if not isinstance(role, str):
            continue
        if role in _TOOL_ROLES:
            conversation.tool()
        elif role not in HIDDEN_ROLES:
            conversation.add(role, text_of(message.get("content"), _TEXT_PARTS))
    preferences, routing_fields = pop_inline_preferences(body)
    return ParsedRequest(OPENAI_CHAT, model, stream, preferences, conversation.build(), body, raw, routing_fields)


def read_usage(payload: dict[str, Any]) -> Usage | None:
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None
    return usage_from_counts(usage.get("prompt_tokens"), usage.get("completion_tokens"))


OPENAI_CHAT = ClientApi(
    name="openai_chat",
    title="the OpenAI Chat Completions API",
    path="/v1/chat/completions",
    provider_suffix="/chat/completions",
    parse=parse,
    error_json=openai_error_json({404: "not_found_error", 403: "permission_error", 401: "authentication_error", 429: "rate_limit_error"}),
    read_usage=read_usage,
)
