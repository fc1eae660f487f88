"""OpenAI Responses request bodies (`POST /v1/responses`).

`input` is a string (one user turn) or a list of items. `instructions` never reaches the router;
`function_call_output` items are tool turns, `function_call` and `reasoning` items carry no routable text.
"""

from __future__ import annotations

from plano_extproc.conversation import HIDDEN_ROLES, Turn
from plano_extproc.formats.base import (
    ApiFormat,
    ParsedRequest,
    RequestFormatError,
    load_json_object,
    pop_inline_preferences,
    read_model_and_stream,
    require_object,
    text_of_parts,
)

_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


def parse_openai_responses(raw: bytes) -> ParsedRequest:
    body = load_json_object(raw)
    model, stream = read_model_and_stream(body)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise RequestFormatError("instructions must be a string", param="instructions")
    items = body.get("input")
    turns: list[Turn] = []
    if items is None:
        raise RequestFormatError("'input' is required", param="input")
    if isinstance(items, str):
        if items:
            turns.append(Turn("user", items))
    elif isinstance(items, list):
        for i, item in enumerate(items):
            where = f"input[{i}]"
            item = require_object(item, where)
            kind = item.get("type", "message")
            if kind != "message":
                continue  # function calls, their outputs (tool turns), reasoning, ...
            role = item.get("role")
            if not isinstance(role, str) or not role:
                raise RequestFormatError(f"{where}.role must be a string such as 'user'", param=f"{where}.role")
            content = item.get("content")
            if isinstance(content, str):
                text = content
            elif isinstance(content, list):
                text = text_of_parts(content, f"{where}.content", _TEXT_PARTS)
            else:
                raise RequestFormatError(f"{where}.content must be a string or an array of parts", param=f"{where}.content")
            if role not in HIDDEN_ROLES and text:
                turns.append(Turn(role, text))
    else:
        raise RequestFormatError("input must be a string or an array of items", param="input")
    preferences = pop_inline_preferences(body)
    return ParsedRequest(ApiFormat.OPENAI_RESPONSES, model, stream, preferences, tuple(turns), body)
