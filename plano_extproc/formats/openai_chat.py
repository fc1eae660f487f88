"""OpenAI Chat Completions request bodies (`POST /v1/chat/completions`)."""

from __future__ import annotations

from plano_extproc.conversation import HIDDEN_ROLES, Turn
from plano_extproc.formats.base import (
    ApiFormat,
    ParsedRequest,
    RequestFormatError,
    load_json_object,
    pop_inline_preferences,
    read_model_and_stream,
    require_list,
    require_object,
    text_of_parts,
)

_TEXT_PARTS = frozenset({"text"})


def parse_openai_chat(raw: bytes) -> ParsedRequest:
    body = load_json_object(raw)
    model, stream = read_model_and_stream(body)
    messages = require_list(body, "messages")
    if not messages:
        raise RequestFormatError("'messages' must contain at least one message", param="messages")
    turns = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        message = require_object(message, where)
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise RequestFormatError(f"{where}.role must be a string such as 'user'", param=f"{where}.role")
        content = message.get("content")
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):
            text = text_of_parts(content, f"{where}.content", _TEXT_PARTS)
        else:
            raise RequestFormatError(f"{where}.content must be a string or an array of parts", param=f"{where}.content")
        if role not in HIDDEN_ROLES and text:
            turns.append(Turn(role, text))
    preferences = pop_inline_preferences(body)
    return ParsedRequest(ApiFormat.OPENAI_CHAT, model, stream, preferences, tuple(turns), body)
