"""Anthropic Messages request bodies (`POST /v1/messages`).

`system` never reaches the router; `tool_result` blocks are tool turns and are dropped like OpenAI's
`tool` messages; `tool_use` and images carry no routable text.
"""

from __future__ import annotations

from plano_extproc.conversation import Turn
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

_TEXT_BLOCKS = frozenset({"text"})
_ROLES = frozenset({"user", "assistant"})


def parse_anthropic_messages(raw: bytes) -> ParsedRequest:
    body = load_json_object(raw)
    model, stream = read_model_and_stream(body)
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise RequestFormatError("system must be a string or an array of text blocks", param="system")
    messages = require_list(body, "messages")
    if not messages:
        raise RequestFormatError("'messages' must contain at least one message", param="messages")
    turns = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        message = require_object(message, where)
        role = message.get("role")
        if role not in _ROLES:
            raise RequestFormatError(f"{where}.role must be 'user' or 'assistant'", param=f"{where}.role")
        content = message.get("content")
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            text = text_of_parts(content, f"{where}.content", _TEXT_BLOCKS)
        else:
            raise RequestFormatError(f"{where}.content must be a string or an array of blocks", param=f"{where}.content")
        if text:
            turns.append(Turn(role, text))
    preferences = pop_inline_preferences(body)
    return ParsedRequest(ApiFormat.ANTHROPIC_MESSAGES, model, stream, preferences, tuple(turns), body)
