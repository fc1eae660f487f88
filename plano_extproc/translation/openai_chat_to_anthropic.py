"""Client speaks OpenAI Chat Completions, provider speaks Anthropic Messages (native ``/v1/messages``). Pure.

Native rather than Anthropic's OpenAI-compatible endpoint, because that endpoint ignores prompt caching,
thinking signatures and parts of tool use.

Request (chat -> messages)
==========================
=================================  ===========================================================================
OpenAI                             Anthropic
=================================  ===========================================================================
system / developer messages        top-level ``system`` text blocks, in order, wherever they stood (Anthropic
                                   has no mid-conversation system turn); part-level ``cache_control`` kept
user content parts                 text / image (``data:`` base64 -> base64 source, http(s) -> url source) /
                                   ``file`` PDF -> document (base64), ``text/*`` -> document (text source)
assistant ``tool_calls``           ``tool_use`` blocks (arguments parsed; ids made Anthropic-valid)
assistant ``thinking_blocks``      thinking / redacted_thinking blocks first in the turn, only while thinking
                                   is on (signed blocks from an earlier Claude answer, see translate_response)
``tool`` messages                  ``tool_result`` blocks in one user turn, before any other user content
                                   (consecutive same-role turns are merged: Anthropic requires alternation)
legacy functions / function_call   tools / tool_choice / tool_use / tool_result (ids synthesised per call)
``tools`` (function)               ``tools`` (name, description, input_schema; strict on models honouring it;
                                   tool-level ``cache_control`` kept)
tool_choice auto/none/required     {type: auto} / {type: none} / {type: any}
tool_choice {function: name}       {type: tool, name}
tool_choice allowed_tools          tools filtered to the allowed names, auto or any by its mode
parallel_tool_calls false          ``disable_parallel_tool_use: true`` on the tool choice
max_completion_tokens|max_tokens   ``max_tokens``, clamped to the model's output limit; absent -> min(model
                                   limit, 32000), 4096 for an unreadable model id (Anthropic requires it;
                                   32000 keeps long answers and thinking from being cut where OpenAI would not)
temperature / top_p                temperature clamped to [0, 1]; when both are given only temperature goes
                                   (Claude 4.1+/4.5 reject the pair); neither on Opus 4.7+ (rejected) nor
                                   while thinking is on (thinking requires the defaults)
stop (str | list)                  ``stop_sequences``, without whitespace-only entries (Anthropic rejects them)
reasoning_effort                   3.7-4.5: thinking {enabled, budget_tokens} minimal 1024, low 2048, medium
                                   8192, high 16384, xhigh/max 32768, at most max_tokens/2 (OpenAI's limit
                                   includes reasoning, so does Anthropic's); 4.6+: thinking {adaptive} +
                                   output_config.effort (minimal->low, xhigh/max->max where accepted, else
                                   high); "none" or an older model -> no thinking
response_format json_schema        ``output_config.format`` (json_schema) on 4.5+/Opus 4.1; older models get
                                   the schema as a closing system instruction
response_format json_object        a closing system instruction (Anthropic has no schema-less JSON mode)
stream                             stream (usage always arrives in message_start / message_delta)
user / safety_identifier           ``metadata.user_id``
prompt_cache_key                   top-level ``cache_control: {type: ephemeral}`` (automatic caching of the
                                   longest prefix) when the request has no breakpoint of its own: the client
                                   asked for caching, and OpenAI caches without markers
=================================  ===========================================================================

Thinking is switched off (the request still succeeds) when the client forces a tool (Anthropic rejects
thinking with a forced tool choice) and when the last assistant turn has a tool_use without a leading
thinking block (Anthropic rejects that with thinking on; it happens after a fall-over from a non-Claude
model or when the client did not keep ``thinking_blocks``). Anthropic-native fields an OpenAI client may add
(``thinking``, ``top_k``, ``output_config``) are forwarded.

Dropped, because Anthropic rejects unknown fields and has no equivalent: ``frequency_penalty``,
``presence_penalty``, ``logit_bias``, ``logprobs``/``top_logprobs`` (the answer simply has none), ``seed``,
``store``, ``metadata`` (OpenAI's is a stored-completion tag map), ``service_tier``, ``prediction``,
``web_search_options``, ``verbosity``, ``prompt_cache_retention``, ``moderation``, ``stream_options``,
message ``name``, ``refusal`` parts, custom (free-form) tool definitions, and every other unknown field.
Raised as `TranslationError` (cannot be expressed, and silently dropping the user's input would answer a
different question): ``n`` > 1, audio input or output, files by ``file_id`` (OpenAI's file store), ``file``
parts other than PDF or text, non-base64 data URLs, non-object tool schemas.

Response (messages -> chat.completion)
=====================================
text blocks joined -> ``message.content``; tool_use -> ``tool_calls`` (input serialised); thinking ->
``message.reasoning_content`` (the convention OpenAI-compatible clients read) plus ``message.thinking_blocks``
``[{type: thinking, thinking, signature} | {type: redacted_thinking, data}]`` which a client returns unchanged
in the next assistant message so the signature survives; stop_reason -> finish_reason (common table);
usage: ``prompt_tokens`` = input + cache read + cache write (OpenAI counts cached tokens inside the prompt),
``prompt_tokens_details.cached_tokens`` = cache reads, ``cache_write_tokens`` = cache writes,
``completion_tokens_details.reasoning_tokens`` = ``output_tokens_details.thinking_tokens``. Server-tool blocks
(web search and the like) and citations are dropped: the OpenAI shape has no place for them.

Stream (Anthropic SSE -> chat.completion.chunk SSE)
==================================================
message_start -> a role chunk; text_delta -> ``delta.content``; tool_use start -> ``delta.tool_calls[{index,
id, type, function: {name, arguments: ""}}]`` where index counts tool calls only (Anthropic's block index
also counts text and thinking blocks); input_json_delta -> arguments deltas; a tool whose input streamed no
delta gets ``"{}"`` (a client's ``json.loads("")`` would fail); thinking_delta -> ``delta.reasoning_content``;
at the thinking block's end one ``delta.thinking_blocks`` entry with the whole text and its signature (one
replayable block, not one per delta; it carries ``index``, its position, because OpenAI's own stream
accumulator merges list entries by index and raises without one); message_delta -> the finish chunk, then (with ``include_usage``) a
chunk with ``choices: []`` and the usage; message_stop -> ``data: [DONE]``; ping -> an SSE comment (keeps
idle proxies from closing the connection); ``event: error`` -> ``data: {"error": {...}}`` (the OpenAI SDK
raises it) and the stream ends. A stream that ends after message_delta is closed with ``[DONE]``; one that
ends earlier gets an error event, never a silently truncated answer.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from plano_extproc.translation.common import (
    ANTHROPIC_CONTEXT_OVERFLOW,
    ANTHROPIC_TO_OPENAI_FINISH,
    OPENAI_ERROR_BY_ANTHROPIC,
    ClaudeFacts,
    JsonObject,
    TranslationError,
    anthropic_error_type,
    anthropic_tool_id,
    as_list,
    as_number,
    as_object,
    as_str,
    claude_facts,
    dumps,
    dumps_str,
    json_object_or_empty,
    openai_usage_from_anthropic,
    parse_data_url,
    parse_provider_error,
    positive_int,
    sse_data,
)
from plano_extproc.translation.sse import SseEvent, SseParser

__all__ = ["StreamTranslator", "TranslationError", "translate_error", "translate_request", "translate_response"]

_THINKING_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768, "max": 32768}
_EFFORT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high"}
_MIN_BUDGET = 1024
_JSON_OBJECT_INSTRUCTION = "Respond only with a valid JSON object, with no other text before or after it."
_JSON_SCHEMA_INSTRUCTION = (
    "Respond only with a JSON value that conforms to this JSON schema, with no other text before or after it:\n"
)
_METADATA_USER_MAX = 256


# ============================================================================================== request


@dataclass(slots=True)
class _RequestState:
    facts: ClaudeFacts
    explicit_cache: bool = False
    legacy_calls: dict[str, list[str]] = field(default_factory=dict)  # function name -> pending call ids


def translate_request(body: JsonObject, *, model_id: str) -> JsonObject:
    facts = claude_facts(model_id)
    state = _RequestState(facts)
    _reject_inexpressible(body)

    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        raise TranslationError("'messages' must be an array", "messages")
    system: list[JsonObject] = []
    turns: list[JsonObject] = []
    for i, message in enumerate(raw_messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError(f"{where} must be an object", where)
        role = message.get("role")
        if role in ("system", "developer"):
            texts = [b for b in _content_blocks(message.get("content"), where, state) if b["type"] == "text"]
            _message_cache_control(message, texts, state)
            system.extend(texts)
        elif role == "user":
            blocks = _content_blocks(message.get("content"), where, state)
            _message_cache_control(message, blocks, state)
            _append_turn(turns, "user", blocks)
        elif role == "assistant":
            blocks = _assistant_blocks(message, i, state)
            _message_cache_control(message, blocks, state)
            _append_turn(turns, "assistant", blocks)
        elif role in ("tool", "function"):
            blocks = [_tool_result(message, where, state)]
            _message_cache_control(message, blocks, state)
            _append_turn(turns, "user", blocks)
        else:
            raise TranslationError(f"{where}.role {role!r} is not a chat role", f"{where}.role")

    out: JsonObject = {"model": model_id}
    max_tokens = _max_tokens(body, facts)
    out["max_tokens"] = max_tokens

    tools = _tools(body, state)
    tool_choice = _tool_choice(body, tools) if tools else None  # may narrow `tools` (allowed_tools)
    if tools:
        out["tools"] = tools
        if tool_choice is not None:
            out["tool_choice"] = tool_choice

    output_config: JsonObject = dict(as_object(body.get("output_config")) or {})
    thinking = _thinking(body, facts, max_tokens, output_config)
    forced_tool = tool_choice is not None and tool_choice.get("type") in ("any", "tool")
    # Anthropic rejects thinking with a forced tool, and a thinking tool loop whose last tool turn lacks it
    if (
        thinking is not None
        and thinking.get("type") != "disabled"
        and (forced_tool or _last_tool_turn_lacks_thinking(turns))
    ):
        thinking = None
    thinking_on = thinking is not None and thinking.get("type") != "disabled"
    if thinking is not None:
        out["thinking"] = thinking
    if not thinking_on:
        turns = _without_thinking(turns)

    instruction = _response_format(body.get("response_format"), facts, output_config)
    if instruction:
        system.append({"type": "text", "text": instruction})
    if system:
        out["system"] = system
    if output_config:
        out["output_config"] = output_config

    _finish_turns(turns)
    if not turns:
        raise TranslationError("the request needs at least one user or assistant message", "messages")
    out["messages"] = turns

    stop = _stop_sequences(body.get("stop"))
    if stop:
        out["stop_sequences"] = stop
    if facts.sampling and not thinking_on:
        temperature = as_number(body.get("temperature"))
        top_p = as_number(body.get("top_p"))
        if temperature is not None:
            out["temperature"] = min(max(temperature, 0.0), 1.0)
        elif top_p is not None:
            out["top_p"] = top_p
        top_k = positive_int(body.get("top_k"))
        if top_k is not None:
            out["top_k"] = top_k
    if body.get("stream") is True:
        out["stream"] = True
    user = as_str(body.get("user")) or as_str(body.get("safety_identifier"))
    if user:
        out["metadata"] = {"user_id": user[:_METADATA_USER_MAX]}
    if not state.explicit_cache and body.get("prompt_cache_key"):
        out["cache_control"] = {"type": "ephemeral"}
    return out


def _reject_inexpressible(body: JsonObject) -> None:
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        raise TranslationError("Anthropic models return one choice per request; 'n' must be 1", "n")
    modalities = body.get("modalities")
    if body.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities):
        raise TranslationError("audio output cannot be produced by Anthropic models", "modalities")


def _append_turn(turns: list[JsonObject], role: str, blocks: list[JsonObject]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _message_cache_control(message: JsonObject, blocks: list[JsonObject], state: _RequestState) -> None:
    """A message-level ``cache_control`` (LiteLLM's convention) marks the message's last block."""
    cache_control = as_object(message.get("cache_control"))
    if cache_control is not None and blocks:
        blocks[-1]["cache_control"] = cache_control
        state.explicit_cache = True


def _copy_cache_control(part: JsonObject, block: JsonObject, state: _RequestState) -> JsonObject:
    cache_control = as_object(part.get("cache_control"))
    if cache_control is not None:
        block["cache_control"] = cache_control
        state.explicit_cache = True
    return block


def _content_blocks(content: Any, where: str, state: _RequestState) -> list[JsonObject]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or an array of parts", f"{where}.content")
    blocks: list[JsonObject] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        if isinstance(part, str):
            if part:
                blocks.append({"type": "text", "text": part})
            continue
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            text = as_str(part.get("text"))
            if text:
                blocks.append(_copy_cache_control(part, {"type": "text", "text": text}, state))
        elif kind == "image_url":
            blocks.append(_copy_cache_control(part, _image_block(part.get("image_url"), at), state))
        elif kind == "file":
            blocks.append(_copy_cache_control(part, _file_block(part.get("file"), at), state))
        elif kind in ("input_audio", "audio"):
            raise TranslationError("audio input cannot be sent to Anthropic models", at)
        # refusal parts and unknown part types carry nothing Anthropic can take
    return blocks


def _image_block(image: Any, at: str) -> JsonObject:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise TranslationError("image_url.url must be a URL or a data: URL", f"{at}.image_url.url")
    parsed = parse_data_url(url)
    if parsed is None:
        return {"type": "image", "source": {"type": "url", "url": url}}
    media_type, data = parsed
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _file_block(file: Any, at: str) -> JsonObject:
    if not isinstance(file, dict):
        raise TranslationError("file must be an object", f"{at}.file")
    file_data = as_str(file.get("file_data"))
    if file_data is None:
        raise TranslationError("files by file_id live in OpenAI's file store; send file_data instead", f"{at}.file")
    parsed = parse_data_url(file_data) if file_data.startswith("data:") else ("application/pdf", file_data)
    assert parsed is not None
    media_type, data = parsed
    block: JsonObject
    if media_type == "application/pdf":
        block = {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}
    elif media_type.startswith("text/"):
        try:
            text = base64.b64decode(data, validate=False).decode("utf-8", "replace")
        except (binascii.Error, ValueError) as exc:
            raise TranslationError("file_data is not valid base64", f"{at}.file.file_data") from exc
        block = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}}
    else:
        raise TranslationError(f"Anthropic models read PDF and text files, not {media_type}", f"{at}.file")
    filename = as_str(file.get("filename"))
    if filename:
        block["title"] = filename
    return block


def _assistant_blocks(message: JsonObject, position: int, state: _RequestState) -> list[JsonObject]:
    where = f"messages[{position}]"
    blocks: list[JsonObject] = []
    for thinking in as_list(message.get("thinking_blocks")):
        if not isinstance(thinking, dict):
            continue
        if thinking.get("type") == "thinking" and as_str(thinking.get("signature")):
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": as_str(thinking.get("thinking")) or "",
                    "signature": thinking["signature"],
                }
            )
        elif thinking.get("type") == "redacted_thinking" and as_str(thinking.get("data")):
            blocks.append({"type": "redacted_thinking", "data": thinking["data"]})
    blocks.extend(b for b in _content_blocks(message.get("content"), where, state) if b["type"] == "text")
    for k, call in enumerate(as_list(message.get("tool_calls"))):
        if not isinstance(call, dict):
            continue
        fallback_id = f"toolu_{position}_{k}"
        if call.get("type") == "custom":
            custom = as_object(call.get("custom")) or {}
            name, tool_input = as_str(custom.get("name")) or "custom", {"input": custom.get("input", "")}
        else:
            function = as_object(call.get("function")) or {}
            name, tool_input = as_str(function.get("name")) or "", json_object_or_empty(function.get("arguments"))
        blocks.append(
            {
                "type": "tool_use",
                "id": anthropic_tool_id(call.get("id"), fallback_id),
                "name": name,
                "input": tool_input,
            }
        )
    legacy = as_object(message.get("function_call"))
    if legacy is not None:
        name = as_str(legacy.get("name")) or ""
        call_id = f"toolu_legacy_{position}"
        state.legacy_calls.setdefault(name, []).append(call_id)
        blocks.append(
            {"type": "tool_use", "id": call_id, "name": name, "input": json_object_or_empty(legacy.get("arguments"))}
        )
    return blocks


def _tool_result(message: JsonObject, where: str, state: _RequestState) -> JsonObject:
    if message.get("role") == "function":
        name = as_str(message.get("name")) or ""
        pending = state.legacy_calls.get(name)
        if not pending:
            raise TranslationError(f"{where} answers no earlier function_call named {name!r}", f"{where}.name")
        tool_use_id = pending.pop(0)
    else:
        raw_id = message.get("tool_call_id")
        if not isinstance(raw_id, str) or not raw_id:
            raise TranslationError(f"{where}.tool_call_id is required", f"{where}.tool_call_id")
        tool_use_id = anthropic_tool_id(raw_id, raw_id)
    block: JsonObject = {"type": "tool_result", "tool_use_id": tool_use_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        parts = [b for b in _content_blocks(content, where, state) if b["type"] in ("text", "image", "document")]
        if parts:
            block["content"] = parts
    return block


def _max_tokens(body: JsonObject, facts: ClaudeFacts) -> int:
    requested = positive_int(body.get("max_completion_tokens")) or positive_int(body.get("max_tokens"))
    if requested is None:
        return facts.default_max_tokens
    return min(requested, facts.max_output) if facts.max_output is not None else requested


def _tools(body: JsonObject, state: _RequestState) -> list[JsonObject]:
    tools: list[JsonObject] = []
    entries: list[tuple[str, Any, JsonObject]] = []
    for j, tool in enumerate(as_list(body.get("tools"))):
        if isinstance(tool, dict) and tool.get("type", "function") == "function":
            entries.append((f"tools[{j}]", tool.get("function"), tool))
        # custom (free-form grammar) tools have no Anthropic counterpart: dropped
    for j, function in enumerate(as_list(body.get("functions"))):
        entries.append((f"functions[{j}]", function, {}))
    for where, function, tool in entries:
        if not isinstance(function, dict) or not as_str(function.get("name")):
            raise TranslationError(f"{where} needs a function with a name", where)
        schema = function.get("parameters")
        if schema is None:
            schema = {"type": "object", "properties": {}}
        elif not isinstance(schema, dict):
            raise TranslationError(f"{where}.function.parameters must be a JSON schema object", where)
        elif schema.get("type") is None:
            schema = {"type": "object", **schema}
        elif schema.get("type") != "object":
            raise TranslationError(f"{where}: Anthropic tools take an object schema", f"{where}.function.parameters")
        out: JsonObject = {"name": function["name"], "input_schema": schema}
        description = as_str(function.get("description"))
        if description:
            out["description"] = description
        if function.get("strict") is True and state.facts.structured_outputs:
            out["strict"] = True
        tools.append(_copy_cache_control(tool, out, state))
    return tools


def _tool_choice(body: JsonObject, tools: list[JsonObject]) -> JsonObject | None:
    choice: Any = body.get("tool_choice")
    if choice is None and "function_call" in body:
        legacy = body["function_call"]
        choice = {"type": "function", "function": legacy} if isinstance(legacy, dict) else legacy
    result: JsonObject | None
    if choice == "auto":
        result = {"type": "auto"}
    elif choice == "none":
        result = {"type": "none"}
    elif choice == "required":
        result = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = as_str((as_object(choice.get("function")) or {}).get("name"))
        result = {"type": "tool", "name": name} if name else {"type": "auto"}
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = as_object(choice.get("allowed_tools")) or {}
        names = {
            as_str((as_object(t.get("function")) or {}).get("name"))
            for t in as_list(allowed.get("tools"))
            if isinstance(t, dict)
        }
        tools[:] = [t for t in tools if t["name"] in names]
        result = {"type": "any" if allowed.get("mode") == "required" else "auto"}
    else:
        result = None
    if body.get("parallel_tool_calls") is False:
        if result is None:
            result = {"type": "auto"}
        if result["type"] != "none":
            result["disable_parallel_tool_use"] = True
    return result


def _thinking(body: JsonObject, facts: ClaudeFacts, max_tokens: int, output_config: JsonObject) -> JsonObject | None:
    explicit = as_object(body.get("thinking"))
    if explicit is not None:  # an Anthropic-native field the client chose to send
        return explicit
    effort = as_str(body.get("reasoning_effort"))
    if effort is None or effort == "none" or effort not in _THINKING_BUDGET or facts.thinking == "none":
        return None
    if facts.thinking == "adaptive":
        level = _EFFORT.get(effort) or ("max" if facts.max_effort else "high")
        output_config.setdefault("effort", level)
        return {"type": "adaptive"}
    budget = max(_MIN_BUDGET, min(_THINKING_BUDGET[effort], max_tokens // 2))
    if budget >= max_tokens:
        return None
    return {"type": "enabled", "budget_tokens": budget}


def _last_tool_turn_lacks_thinking(turns: list[JsonObject]) -> bool:
    for turn in reversed(turns):
        if turn["role"] != "assistant":
            continue
        content = turn["content"]
        has_tool_use = any(b["type"] == "tool_use" for b in content)
        return has_tool_use and content[0]["type"] not in ("thinking", "redacted_thinking")
    return False


def _without_thinking(turns: list[JsonObject]) -> list[JsonObject]:
    kept: list[JsonObject] = []
    for turn in turns:
        blocks = [b for b in turn["content"] if b["type"] not in ("thinking", "redacted_thinking")]
        _append_turn(kept, turn["role"], blocks)
    return kept


def _response_format(response_format: Any, facts: ClaudeFacts, output_config: JsonObject) -> str | None:
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = as_object(response_format.get("json_schema")) or {}
        schema = as_object(spec.get("schema"))
        if schema is None:
            return _JSON_OBJECT_INSTRUCTION
        if facts.structured_outputs:
            output_config.setdefault("format", {"type": "json_schema", "schema": schema})
            return None
        return _JSON_SCHEMA_INSTRUCTION + dumps_str(schema)
    if kind == "json_object":
        return _JSON_OBJECT_INSTRUCTION
    return None


def _finish_turns(turns: list[JsonObject]) -> None:
    """Anthropic wants tool_result blocks first in a user turn, and no trailing whitespace at the end of a
    final assistant turn (a prefill)."""
    for turn in turns:
        if turn["role"] == "user" and len(turn["content"]) > 1:
            content = turn["content"]
            turn["content"] = [b for b in content if b["type"] == "tool_result"] + [
                b for b in content if b["type"] != "tool_result"
            ]
    if turns and turns[-1]["role"] == "assistant":
        content = turns[-1]["content"]
        last = content[-1]
        if last["type"] == "text":
            stripped = last["text"].rstrip()
            if stripped:
                last["text"] = stripped
            else:
                content.pop()
                if not content:
                    turns.pop()


def _stop_sequences(stop: Any) -> list[str]:
    values = [stop] if isinstance(stop, str) else as_list(stop)
    return [s for s in values if isinstance(s, str) and s.strip()]


# ============================================================================================== response


def translate_response(body: JsonObject, *, client_model: str) -> JsonObject:
    if body.get("type") == "error":
        return _openai_error_of(500, dumps(body))
    text: list[str] = []
    tool_calls: list[JsonObject] = []
    reasoning: list[str] = []
    thinking_blocks: list[JsonObject] = []
    for block in as_list(body.get("content")):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            text.append(as_str(block.get("text")) or "")
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": as_str(block.get("id")) or f"call_{len(tool_calls)}",
                    "type": "function",
                    "function": {
                        "name": as_str(block.get("name")) or "",
                        "arguments": dumps_str(block.get("input", {})),
                    },
                }
            )
        elif kind == "thinking":
            thought = as_str(block.get("thinking")) or ""
            reasoning.append(thought)
            thinking_blocks.append({"type": "thinking", "thinking": thought, "signature": block.get("signature", "")})
        elif kind == "redacted_thinking":
            thinking_blocks.append({"type": "redacted_thinking", "data": block.get("data", "")})
    message: JsonObject = {"role": "assistant", "content": "".join(text) if text else (None if tool_calls else "")}
    message["refusal"] = None
    if tool_calls:
        message["tool_calls"] = tool_calls
    if thinking_blocks:
        message["reasoning_content"] = "".join(reasoning)
        message["thinking_blocks"] = thinking_blocks
    stop_reason = as_str(body.get("stop_reason")) or "end_turn"
    finish = ANTHROPIC_TO_OPENAI_FINISH.get(stop_reason, "stop")
    if finish == "tool_calls" and not tool_calls:
        finish = "stop"
    result: JsonObject = {
        "id": as_str(body.get("id")) or "msg_unknown",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": client_model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
    }
    usage = as_object(body.get("usage"))
    if usage is not None:
        result["usage"] = openai_usage_from_anthropic(usage)
    return result


# ============================================================================================== errors


def _openai_error(anthropic_type: str | None, message: str, status: int, param: str | None = None) -> JsonObject:
    kind = anthropic_type if anthropic_type in OPENAI_ERROR_BY_ANTHROPIC else anthropic_error_type(status)
    error_type, code = OPENAI_ERROR_BY_ANTHROPIC.get(kind, ("server_error", None))
    if ANTHROPIC_CONTEXT_OVERFLOW in message:
        error_type, code = "invalid_request_error", "context_length_exceeded"
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _openai_error_of(status: int, body: bytes) -> JsonObject:
    error = parse_provider_error(status, body)
    return _openai_error(error.type, error.message, status, error.param)


def translate_error(status: int, body: bytes) -> bytes:
    return dumps(_openai_error_of(status, body))


# ============================================================================================== stream


@dataclass(slots=True)
class _ToolCall:
    index: int  # the OpenAI tool_calls index
    start_input: Any
    streamed: bool = False


@dataclass(slots=True)
class _Thinking:
    parts: list[str]
    signature: str | None = None


_DONE = b"data: [DONE]\n\n"
_PING = b": ping\n\n"


class StreamTranslator:
    """Anthropic Messages SSE in, OpenAI ``chat.completion.chunk`` SSE out. ``include_usage``: the client
    sent ``stream_options.include_usage`` (only then is the final ``choices: []`` usage chunk sent; clients
    that did not ask for it index ``choices[0]`` on every chunk). ``created`` fixes the chunks' timestamp."""

    def __init__(self, *, client_model: str, include_usage: bool = False, created: int | None = None) -> None:
        self._parser = SseParser()
        self._model = client_model
        self._include_usage = include_usage
        self._created = int(time.time()) if created is None else created
        self._prefix = b""
        self._suffix = b"}]" + (b',"usage":null}\n\n' if include_usage else b"}\n\n")
        self._tools: dict[int, _ToolCall] = {}
        self._thinking: dict[int, _Thinking] = {}
        self._thinking_blocks = 0  # thinking_blocks entries sent (their ``index``)
        self._usage: JsonObject = {}
        self._finished = False  # the finish chunk went out
        self._done = False  # nothing more will be written

    @classmethod
    def for_request(cls, client_body: JsonObject, *, client_model: str) -> StreamTranslator:
        """The translator for the client's (OpenAI Chat) request body: honours its ``stream_options``."""
        options = as_object(client_body.get("stream_options")) or {}
        return cls(client_model=client_model, include_usage=options.get("include_usage") is True)

    # ------------------------------------------------------------------ public

    def feed(self, chunk: bytes) -> bytes:
        if self._done:
            return b""
        out: list[bytes] = []
        for event in self._parser.feed(chunk):
            self._handle(event, out)
            if self._done:
                break
        return b"".join(out)

    def finish(self) -> bytes:
        if self._done:
            return b""
        out: list[bytes] = []
        for event in self._parser.finish():
            self._handle(event, out)
        if not self._done:
            if self._finished:
                out.append(_DONE)
            else:
                out.append(
                    sse_data(
                        dumps(
                            _openai_error(
                                "api_error", "the provider's stream ended before the response was complete", 502
                            )
                        )
                    )
                )
            self._done = True
        return b"".join(out)

    # ------------------------------------------------------------------ events

    def _handle(self, event: SseEvent, out: list[bytes]) -> None:
        if not event.data:
            return
        try:
            payload = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(payload, dict):
            return
        kind = payload.get("type") or event.event
        if kind == "content_block_delta":
            self._block_delta(payload, out)
        elif kind == "content_block_start":
            self._block_start(payload, out)
        elif kind == "content_block_stop":
            self._block_stop(payload, out)
        elif kind == "message_start":
            message = as_object(payload.get("message")) or {}
            self._usage.update(as_object(message.get("usage")) or {})
            self._start(out, as_str(message.get("id")))
        elif kind == "message_delta":
            self._message_delta(payload, out)
        elif kind == "message_stop":
            if not self._finished:
                self._finish_chunk("stop", out)
            out.append(_DONE)
            self._done = True
        elif kind == "ping":
            out.append(_PING)
        elif kind == "error":
            error = as_object(payload.get("error")) or {}
            text = as_str(error.get("message")) or "the provider reported an error"
            out.append(sse_data(dumps(_openai_error(as_str(error.get("type")), text, 500))))
            self._done = True

    def _start(self, out: list[bytes], message_id: str | None) -> None:
        if self._prefix:
            return
        self._prefix = (
            b'data: {"id":'
            + dumps(message_id or "msg_unknown")
            + b',"object":"chat.completion.chunk","created":'
            + str(self._created).encode()
            + b',"model":'
            + dumps(self._model)
            + b',"choices":[{"index":0,"delta":'
        )
        out.append(
            self._prefix + b'{"role":"assistant","content":""},"logprobs":null,"finish_reason":null' + self._suffix
        )

    def _delta(self, delta: bytes, out: list[bytes]) -> None:
        if not self._prefix:
            self._start(out, None)
        out.append(self._prefix + delta + b',"logprobs":null,"finish_reason":null' + self._suffix)

    def _block_start(self, payload: JsonObject, out: list[bytes]) -> None:
        index = payload.get("index")
        block = as_object(payload.get("content_block")) or {}
        kind = block.get("type")
        if not isinstance(index, int):
            return
        if kind == "text":
            text = as_str(block.get("text"))
            if text:
                self._delta(b'{"content":' + dumps(text) + b"}", out)
        elif kind == "tool_use":
            call = _ToolCall(len(self._tools), block.get("input"))
            self._tools[index] = call
            start = {
                "index": call.index,
                "id": as_str(block.get("id")) or f"call_{call.index}",
                "type": "function",
                "function": {"name": as_str(block.get("name")) or "", "arguments": ""},
            }
            self._delta(b'{"tool_calls":[' + dumps(start) + b"]}", out)
        elif kind == "thinking":
            thought = as_str(block.get("thinking")) or ""
            self._thinking[index] = _Thinking([thought], as_str(block.get("signature")) or None)
            if thought:
                self._delta(b'{"reasoning_content":' + dumps(thought) + b"}", out)
        elif kind == "redacted_thinking":
            self._thinking_block({"type": "redacted_thinking", "data": block.get("data", "")}, out)
        # server tool use and its results have no place in the OpenAI shape

    def _block_delta(self, payload: JsonObject, out: list[bytes]) -> None:
        delta = as_object(payload.get("delta")) or {}
        kind = delta.get("type")
        if kind == "text_delta":
            text = as_str(delta.get("text"))
            if text:
                self._delta(b'{"content":' + dumps(text) + b"}", out)
            return
        index = payload.get("index")
        if kind == "input_json_delta":
            call = self._tools.get(index) if isinstance(index, int) else None
            partial = as_str(delta.get("partial_json"))
            if call is not None and partial:
                call.streamed = True
                self._delta(
                    b'{"tool_calls":[{"index":'
                    + str(call.index).encode()
                    + b',"function":{"arguments":'
                    + dumps(partial)
                    + b"}}]}",
                    out,
                )
        elif kind == "thinking_delta":
            thought = as_str(delta.get("thinking"))
            thinking = self._thinking.get(index) if isinstance(index, int) else None
            if thought:
                if thinking is not None:
                    thinking.parts.append(thought)
                self._delta(b'{"reasoning_content":' + dumps(thought) + b"}", out)
        elif kind == "signature_delta":
            thinking = self._thinking.get(index) if isinstance(index, int) else None
            if thinking is not None:
                thinking.signature = as_str(delta.get("signature"))

    def _block_stop(self, payload: JsonObject, out: list[bytes]) -> None:
        index = payload.get("index")
        if not isinstance(index, int):
            return
        call = self._tools.get(index)
        if call is not None and not call.streamed:
            call.streamed = True
            arguments = dumps_str(call.start_input) if call.start_input else "{}"
            self._delta(
                b'{"tool_calls":[{"index":'
                + str(call.index).encode()
                + b',"function":{"arguments":'
                + dumps(arguments)
                + b"}}]}",
                out,
            )
        thinking = self._thinking.pop(index, None)
        if thinking is not None and thinking.signature:
            self._thinking_block(
                {"type": "thinking", "thinking": "".join(thinking.parts), "signature": thinking.signature}, out
            )

    def _thinking_block(self, block: JsonObject, out: list[bytes]) -> None:
        """List entries in a delta need their position as ``index``: OpenAI's stream accumulator merges
        lists by it (and raises without it)."""
        entry = {"index": self._thinking_blocks, **block}
        self._thinking_blocks += 1
        self._delta(b'{"thinking_blocks":[' + dumps(entry) + b"]}", out)

    def _message_delta(self, payload: JsonObject, out: list[bytes]) -> None:
        usage = as_object(payload.get("usage"))
        if usage is not None:
            self._usage.update({k: v for k, v in usage.items() if v is not None})
        delta = as_object(payload.get("delta")) or {}
        stop_reason = as_str(delta.get("stop_reason"))
        if stop_reason is None or self._finished:
            return
        finish = ANTHROPIC_TO_OPENAI_FINISH.get(stop_reason, "stop")
        if finish == "tool_calls" and not self._tools:
            finish = "stop"
        self._finish_chunk(finish, out)

    def _finish_chunk(self, finish: str, out: list[bytes]) -> None:
        if not self._prefix:
            self._start(out, None)
        out.append(self._prefix + b'{},"logprobs":null,"finish_reason":"' + finish.encode() + b'"' + self._suffix)
        self._finished = True
        if self._include_usage:
            head = self._prefix[: self._prefix.index(b'"choices":[')]
            out.append(head + b'"choices":[],"usage":' + dumps(openai_usage_from_anthropic(self._usage)) + b"}\n\n")
