"""Client speaks Anthropic Messages, provider speaks OpenAI Chat Completions (OpenAI or any compatible). Pure.

The provider may be OpenAI itself or an OpenAI-compatible server (Groq, DeepSeek, Ollama, vLLM...), so the
request uses the widest-accepted shapes: string content where it is text only, ``max_tokens`` except for
OpenAI's reasoning models, no field a compatible server is known to reject.

Request (messages -> chat)
==========================
=================================  ===========================================================================
Anthropic                          OpenAI
=================================  ===========================================================================
``system`` (string or blocks)      one leading system message, blocks joined by a blank line; ``messages[]``
                                   entries with role system (Claude Code sends them) are appended to it, after
                                   the top-level prompt so that stable prefix stays cacheable
user text blocks                   one string (an all-text turn, blocks joined by a blank line) or parts
image (base64 / url)               ``image_url`` (``data:`` URL / the URL)
document (PDF base64 / text)       ``file`` part with a ``data:`` URL / text part
``tool_result`` blocks             one ``tool`` message each, before the rest of that user turn; text joined;
                                   images or PDFs inside a tool result follow in a user message (tool messages
                                   only carry text)
assistant text / ``tool_use``      content / ``tool_calls`` (input serialised); ids over OpenAI's 40-character
                                   limit are replaced by a stable hash, in the call and in its result alike
tools (custom)                     ``{type: function, function: {name, description, parameters}}``; names over
                                   OpenAI's 64 characters are shortened (start + stable hash) here, in
                                   tool_choice and in history; `tool_name_map` restores them on the way back
tool_choice auto/any/tool/none     "auto" / "required" / {type: function, function: {name}} / "none"
disable_parallel_tool_use          ``parallel_tool_calls: false``
max_tokens                         ``max_tokens`` (``max_completion_tokens`` for o-series / GPT-5), clamped to the
                                   model's known output limit (Claude Code asks for 32000; gpt-4o accepts 16384)
temperature / top_p                forwarded, except to o-series / GPT-5 (they reject non-default sampling)
stop_sequences                     ``stop``: the first 4 (OpenAI's limit); none for o-series / GPT-5
stream                             stream + ``stream_options.include_usage`` (usage for message_delta)
metadata.user_id                   ``user``
output_config.effort | thinking    ``reasoning_effort`` for models that take it: effort low/medium/high as is,
                                   xhigh/max -> high; thinking budget <= 2048 low, <= 8192 medium, else high;
                                   adaptive without effort -> the provider's default
output_config.format|output_format ``response_format: {type: json_schema, json_schema: {name, schema}}``
                                   (without OpenAI's ``strict``: it demands every property be required, which
                                   an Anthropic schema need not satisfy, and would turn the request into a 400)
=================================  ===========================================================================

Dropped, and why: ``cache_control`` everywhere (OpenAI caches prefixes by itself and rejects the key);
thinking / redacted_thinking blocks of earlier turns (their signatures only mean something to Claude; OpenAI
and compatible servers reject or mis-read reasoning input); ``top_k`` (no OpenAI equivalent); server and
Anthropic-defined tools (web search, code execution, bash, text editor, computer use, MCP: Anthropic runs or
defines them, an OpenAI model cannot) together with their result blocks; ``tool_result.is_error`` (no field;
the result text still says what failed); citations; ``container``, ``context_management``, ``mcp_servers``,
``service_tier``, ``speed``, ``inference_geo``, ``diagnostics`` and every other unknown field (OpenAI rejects
unknown arguments). Raised as `TranslationError`: images or documents by Files API id, documents by URL
(nothing in Chat Completions fetches them), and a role other than user/assistant/system.

Response (chat.completion -> message)
=====================================
content -> a text block; a refusal -> a text block; tool_calls -> tool_use blocks (arguments parsed; invalid
JSON becomes ``{}``); finish_reason -> stop_reason (common table; "stop" with tool calls -> tool_use, since
some compatible servers report it so and Claude Code only runs tools on tool_use); usage: ``input_tokens`` =
prompt - cached - cache writes (Anthropic counts cache reads and writes apart), ``cache_read_input_tokens`` =
cached, ``output_tokens_details.thinking_tokens`` = reasoning tokens. Reasoning *text* some compatible servers
return (``reasoning_content`` / ``reasoning``) is dropped: an Anthropic thinking block must carry a signature
Claude issued, and an unsigned one would make every later turn of that conversation that reaches Claude fail
with 400 "Invalid signature".

Stream (chat.completion.chunk SSE -> Anthropic SSE)
==================================================
The first chunk -> message_start (usage 0: OpenAI reports usage only at the end); content deltas -> a text
block (content_block_start, text_delta...); each new tool call index -> content_block_stop of the open block,
content_block_start tool_use {id, name, input: {}}, then its argument deltas as input_json_delta; a delta for
an earlier tool call (providers do not interleave them, but nothing forbids it) still goes to that call's
block index; finish_reason closes the open block; the usage chunk (or ``[DONE]``, or the finish chunk when it
carries usage) -> message_delta {stop_reason, usage: output, input, cache read/write} and message_stop.
``{"error": ...}`` chunks -> ``event: error``. A stream that ends after its finish_reason is closed normally;
one that ends before gets its open block closed and an error event (the Anthropic SDK raises it), never a
silently truncated message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from plano_extproc.translation.common import (
    OPENAI_CONTEXT_OVERFLOW,
    OPENAI_TO_ANTHROPIC_STOP,
    JsonObject,
    TranslationError,
    anthropic_error_type,
    anthropic_usage_from_openai,
    as_list,
    as_number,
    as_object,
    as_str,
    data_url,
    dumps,
    dumps_str,
    json_object_or_empty,
    openai_facts,
    parse_provider_error,
    positive_int,
    sse_named,
)
from plano_extproc.translation.sse import SseEvent, SseParser

__all__ = [
    "StreamTranslator",
    "TranslationError",
    "openai_tool_id",
    "openai_tool_name",
    "tool_name_map",
    "translate_error",
    "translate_request",
    "translate_response",
]

_MAX_STOP = 4
_MAX_TOOL_ID = 40
_MAX_TOOL_NAME = 64
_EFFORT = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
#: Anthropic tool types that are plain client tools; every other ``type`` is a server or Anthropic-defined tool
_CLIENT_TOOL_TYPES = (None, "custom")


# ============================================================================================== request


def translate_request(body: JsonObject, *, model_id: str) -> JsonObject:
    facts = openai_facts(model_id)
    system = _system_texts(body.get("system"), "system")
    messages: list[JsonObject] = []
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        raise TranslationError("'messages' must be an array", "messages")
    for i, message in enumerate(raw_messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError(f"{where} must be an object", where)
        role = message.get("role")
        content = message.get("content")
        if role == "user":
            messages.extend(_user_messages(content, where))
        elif role == "assistant":
            assistant = _assistant_message(content, i)
            if assistant is not None:
                messages.append(assistant)
        elif role == "system":
            system.extend(_system_texts(content, f"{where}.content"))
        else:
            raise TranslationError(f"{where}.role must be 'user' or 'assistant'", f"{where}.role")
    if system:
        messages.insert(0, {"role": "system", "content": "\n\n".join(system)})

    out: JsonObject = {"model": model_id, "messages": messages}
    max_tokens = positive_int(body.get("max_tokens"))
    if max_tokens is not None:
        if facts.max_output is not None:
            max_tokens = min(max_tokens, facts.max_output)
        out["max_completion_tokens" if facts.reasoning else "max_tokens"] = max_tokens

    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
        choice = as_object(body.get("tool_choice"))
        names = {t["function"]["name"] for t in tools}
        tool_choice = _tool_choice(choice, names)
        if tool_choice is not None:
            out["tool_choice"] = tool_choice
        if choice is not None and choice.get("disable_parallel_tool_use") is True and tool_choice != "none":
            out["parallel_tool_calls"] = False

    if not facts.reasoning:
        for name in ("temperature", "top_p"):
            value = as_number(body.get(name))
            if value is not None:
                out[name] = value
        stop = [s for s in as_list(body.get("stop_sequences")) if isinstance(s, str) and s]
        if stop:
            out["stop"] = stop[:_MAX_STOP]
    if facts.reasoning_effort:
        effort = _reasoning_effort(body)
        if effort is not None:
            out["reasoning_effort"] = effort
    response_format = _response_format(body)
    if response_format is not None:
        out["response_format"] = response_format
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    user = as_str((as_object(body.get("metadata")) or {}).get("user_id"))
    if user:
        out["user"] = user
    return out


def _system_texts(system: Any, where: str) -> list[str]:
    if system is None:
        return []
    if isinstance(system, str):
        return [system] if system else []
    if not isinstance(system, list):
        raise TranslationError(f"{where} must be a string or an array of text blocks", where)
    texts = []
    for block in system:
        text = as_str(block.get("text")) if isinstance(block, dict) else as_str(block)
        if text:
            texts.append(text)
    return texts


def openai_tool_name(name: str) -> str:
    """OpenAI limits function names to 64 characters, Anthropic allows longer ones (Claude Code's MCP tools,
    ``mcp__<server>__<tool>``, often exceed 64): a long name keeps its start and gains a stable hash."""
    if len(name) <= _MAX_TOOL_NAME:
        return name
    return name[: _MAX_TOOL_NAME - 9] + "_" + hashlib.sha256(name.encode()).hexdigest()[:8]


def tool_name_map(client_body: JsonObject) -> dict[str, str]:
    """{name sent to the provider: the client's name} for every tool whose name had to be shortened. Give it
    to `translate_response` / `StreamTranslator` so tool calls come back under the names the client
    declared; empty (and unnecessary) when no name is longer than 64 characters."""
    names: dict[str, str] = {}
    for tool in as_list(client_body.get("tools")):
        name = as_str(tool.get("name")) if isinstance(tool, dict) else None
        if name and len(name) > _MAX_TOOL_NAME:
            names[openai_tool_name(name)] = name
    return names


def openai_tool_id(tool_id: Any, fallback: str) -> str:
    """OpenAI limits tool call ids to 40 characters; longer ones map to a stable hash."""
    if not isinstance(tool_id, str) or not tool_id:
        return fallback
    if len(tool_id) <= _MAX_TOOL_ID:
        return tool_id
    return "call_" + hashlib.sha256(tool_id.encode()).hexdigest()[: _MAX_TOOL_ID - 5]


def _user_messages(content: Any, where: str) -> list[JsonObject]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or an array of blocks", f"{where}.content")
    tool_messages: list[JsonObject] = []
    parts: list[JsonObject] = []
    for j, block in enumerate(content):
        at = f"{where}.content[{j}]"
        if isinstance(block, dict) and block.get("type") == "tool_result":
            text, extra = _tool_result_content(block.get("content"), at)
            tool_messages.append(
                {
                    "role": "tool",
                    "tool_call_id": openai_tool_id(block.get("tool_use_id"), f"call_{j}"),
                    "content": text,
                }
            )
            parts.extend(extra)
        else:
            parts.extend(_content_parts(block, at))
    messages = tool_messages
    if parts:
        messages.append({"role": "user", "content": _collapse(parts)})
    return messages


def _collapse(parts: list[JsonObject]) -> str | list[JsonObject]:
    """Text-only content as one string: every OpenAI-compatible server accepts that, not all take parts."""
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def _content_parts(block: Any, at: str) -> list[JsonObject]:
    if isinstance(block, str):
        return [{"type": "text", "text": block}] if block else []
    if not isinstance(block, dict):
        return []
    kind = block.get("type")
    if kind == "text":
        text = as_str(block.get("text"))
        return [{"type": "text", "text": text}] if text else []
    if kind == "image":
        return [{"type": "image_url", "image_url": {"url": _source_url(block.get("source"), at)}}]
    if kind == "document":
        return _document_parts(block, at)
    if kind == "search_result":
        texts = [as_str(b.get("text")) for b in as_list(block.get("content")) if isinstance(b, dict)]
        title = as_str(block.get("title"))
        body = "\n".join(t for t in texts if t)
        return [{"type": "text", "text": f"{title}\n{body}" if title else body}] if body else []
    return []  # thinking, server-tool results and unknown blocks have no Chat Completions form


def _source_url(source: Any, at: str) -> str:
    source = as_object(source) or {}
    kind = source.get("type")
    if kind == "base64":
        return data_url(as_str(source.get("media_type")) or "image/png", as_str(source.get("data")) or "")
    if kind == "url" and as_str(source.get("url")):
        return str(source["url"])
    raise TranslationError("images by Files API id cannot be sent to an OpenAI Chat model", f"{at}.source")


def _document_parts(block: JsonObject, at: str) -> list[JsonObject]:
    source = as_object(block.get("source")) or {}
    kind = source.get("type")
    title = as_str(block.get("title"))
    if kind == "text":
        text = as_str(source.get("data")) or ""
        return [{"type": "text", "text": f"{title}\n{text}" if title else text}] if text else []
    if kind == "content":
        return [p for j, b in enumerate(as_list(source.get("content"))) for p in _content_parts(b, f"{at}.source[{j}]")]
    if kind == "base64":
        media_type = as_str(source.get("media_type")) or "application/pdf"
        file: JsonObject = {"file_data": data_url(media_type, as_str(source.get("data")) or "")}
        file["filename"] = title or "document.pdf"
        return [{"type": "file", "file": file}]
    raise TranslationError("documents by URL or Files API id cannot be sent to an OpenAI Chat model", f"{at}.source")


def _tool_result_content(content: Any, at: str) -> tuple[str, list[JsonObject]]:
    """(the tool message's text, the non-text parts that must follow in a user message)"""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    extra: list[JsonObject] = []
    for j, block in enumerate(as_list(content)):
        for part in _content_parts(block, f"{at}.content[{j}]"):
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                extra.append(part)
    return "\n\n".join(texts), extra


def _assistant_message(content: Any, position: int) -> JsonObject | None:
    where = f"messages[{position}]"
    if isinstance(content, str):
        return {"role": "assistant", "content": content} if content else None
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or an array of blocks", f"{where}.content")
    text: list[str] = []
    calls: list[JsonObject] = []
    for j, block in enumerate(content):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            text.append(as_str(block.get("text")) or "")
        elif kind == "tool_use":
            calls.append(
                {
                    "id": openai_tool_id(block.get("id"), f"call_{position}_{j}"),
                    "type": "function",
                    "function": {
                        "name": openai_tool_name(as_str(block.get("name")) or ""),
                        "arguments": dumps_str(block.get("input", {})),
                    },
                }
            )
        # thinking / redacted_thinking / server tool blocks: dropped (module docstring)
    joined = "".join(text)
    if not joined and not calls:
        return None
    message: JsonObject = {"role": "assistant", "content": joined or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(tools: Any) -> list[JsonObject]:
    out: list[JsonObject] = []
    for tool in as_list(tools):
        if not isinstance(tool, dict) or tool.get("type") not in _CLIENT_TOOL_TYPES:
            continue
        name = as_str(tool.get("name"))
        if not name:
            continue
        function: JsonObject = {"name": openai_tool_name(name)}
        description = as_str(tool.get("description"))
        if description:
            function["description"] = description
        schema = as_object(tool.get("input_schema"))
        function["parameters"] = schema if schema is not None else {"type": "object", "properties": {}}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: JsonObject | None, names: set[str]) -> str | JsonObject | None:
    if choice is None:
        return None
    kind = choice.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool":
        name = openai_tool_name(as_str(choice.get("name")) or "")
        return {"type": "function", "function": {"name": name}} if name in names else "auto"
    return None


def _reasoning_effort(body: JsonObject) -> str | None:
    effort = as_str((as_object(body.get("output_config")) or {}).get("effort"))
    if effort in _EFFORT:
        return _EFFORT[effort]
    thinking = as_object(body.get("thinking")) or {}
    if thinking.get("type") == "enabled":
        budget = positive_int(thinking.get("budget_tokens")) or 0
        return "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"
    return None


def _response_format(body: JsonObject) -> JsonObject | None:
    spec = as_object((as_object(body.get("output_config")) or {}).get("format")) or as_object(body.get("output_format"))
    if spec is None or spec.get("type") != "json_schema":
        return None
    schema = as_object(spec.get("schema"))
    if schema is None:
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}


# ============================================================================================== response


def _client_name(name: str, tool_names: Mapping[str, str] | None) -> str:
    return tool_names.get(name, name) if tool_names else name


def _stop_reason(finish: str | None, has_tool_use: bool) -> str:
    stop = OPENAI_TO_ANTHROPIC_STOP.get(finish or "stop", "end_turn")
    if has_tool_use and stop == "end_turn":
        return "tool_use"
    return stop


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(
        as_str(p.get("text")) or "" for p in as_list(content) if isinstance(p, dict) and p.get("type") == "text"
    )


def translate_response(
    body: JsonObject, *, client_model: str, tool_names: Mapping[str, str] | None = None
) -> JsonObject:
    """``tool_names``: `tool_name_map` of the client's request, when it had names over 64 characters."""
    if "error" in body and not body.get("choices"):
        error = parse_provider_error(500, dumps(body))
        return _anthropic_error(500, error.message, error.type, error.code)
    choices = as_list(body.get("choices"))
    choice = as_object(choices[0]) if choices else None
    message = as_object(choice.get("message")) if choice else None
    message = message or {}
    content: list[JsonObject] = []
    text = _message_text(message.get("content")) or as_str(message.get("refusal")) or ""
    if text:
        content.append({"type": "text", "text": text})
    calls = as_list(message.get("tool_calls"))
    legacy = as_object(message.get("function_call"))
    if legacy is not None:
        calls = [*calls, {"id": None, "function": legacy}]
    for k, call in enumerate(calls):
        if not isinstance(call, dict):
            continue
        function = as_object(call.get("function")) or {}
        content.append(
            {
                "type": "tool_use",
                "id": as_str(call.get("id")) or f"toolu_{k}",
                "name": _client_name(as_str(function.get("name")) or "", tool_names),
                "input": json_object_or_empty(function.get("arguments")),
            }
        )
    has_tool_use = any(b["type"] == "tool_use" for b in content)
    usage = as_object(body.get("usage"))
    return {
        "id": as_str(body.get("id")) or "msg_unknown",
        "type": "message",
        "role": "assistant",
        "model": client_model,
        "content": content,
        "stop_reason": _stop_reason(as_str(choice.get("finish_reason")) if choice else None, has_tool_use),
        "stop_sequence": None,
        "usage": anthropic_usage_from_openai(usage) if usage is not None else {"input_tokens": 0, "output_tokens": 0},
    }


# ============================================================================================== errors

_ANTHROPIC_TYPE_BY_OPENAI = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "insufficient_quota": "billing_error",
    "rate_limit_exceeded": "rate_limit_error",
    "requests": "rate_limit_error",
    "tokens": "rate_limit_error",
    "server_error": "api_error",
}


def _anthropic_error(status: int, message: str, kind: str | None, code: str | None) -> JsonObject:
    error_type = anthropic_error_type(status) if status else _ANTHROPIC_TYPE_BY_OPENAI.get(kind or "", "api_error")
    if code == "context_length_exceeded" or OPENAI_CONTEXT_OVERFLOW.search(message):
        # Claude Code compacts the conversation when it reads Anthropic's own wording
        match = OPENAI_CONTEXT_OVERFLOW.search(message)
        detail = f"{match['used']} tokens > {match['limit']} maximum" if match else message
        message, error_type = f"prompt is too long: {detail}", "invalid_request_error"
    return {"type": "error", "error": {"type": error_type, "message": message}}


def translate_error(status: int, body: bytes) -> bytes:
    error = parse_provider_error(status, body)
    return dumps(_anthropic_error(status, error.message, error.type, error.code))


# ============================================================================================== stream

_MESSAGE_STOP = sse_named(b"message_stop", b'{"type":"message_stop"}')


@dataclass(slots=True)
class _Block:
    index: int
    kind: str  # "text" | "tool_use"
    closed: bool = False


class StreamTranslator:
    """OpenAI ``chat.completion.chunk`` SSE in, Anthropic Messages SSE out. ``tool_names``: `tool_name_map`
    of the client's request, when it had tool names over 64 characters."""

    def __init__(self, *, client_model: str, tool_names: Mapping[str, str] | None = None) -> None:
        self._parser = SseParser()
        self._model = client_model
        self._tool_names = tool_names
        self._started = False
        self._blocks: list[_Block] = []
        self._open: _Block | None = None
        self._tools: dict[int, _Block] = {}  # OpenAI tool_calls index -> its block
        self._finish: str | None = None
        self._usage: JsonObject | None = None
        self._done = False

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
            if self._finish is not None:
                self._close(out)
            else:
                self._close_open(out)
                self._error("api_error", "the provider's stream ended before the response was complete", out)
        return b"".join(out)

    # ------------------------------------------------------------------ chunks

    def _handle(self, event: SseEvent, out: list[bytes]) -> None:
        data = event.data
        if not data:
            return
        if data == "[DONE]":
            self._close(out)
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(chunk, dict):
            return
        if "error" in chunk and not chunk.get("choices"):
            error = parse_provider_error(0, dumps(chunk))
            message = _anthropic_error(0, error.message, error.type, error.code)
            self._close_open(out)
            out.append(sse_named(b"error", dumps(message)))
            self._done = True
            return
        self._start(out, as_str(chunk.get("id")))
        usage = as_object(chunk.get("usage"))
        if usage is not None:
            self._usage = usage
        choices = as_list(chunk.get("choices"))
        choice = as_object(choices[0]) if choices else None
        if choice is not None and choice.get("index", 0) == 0:
            self._choice(choice, out)
        if self._finish is not None and usage is not None:
            self._close(out)

    def _choice(self, choice: JsonObject, out: list[bytes]) -> None:
        delta = as_object(choice.get("delta")) or {}
        text = as_str(delta.get("content")) or as_str(delta.get("refusal"))
        if text:
            self._text(text, out)
        calls = as_list(delta.get("tool_calls"))
        legacy = as_object(delta.get("function_call"))
        if legacy is not None:
            calls = [*calls, {"index": 0, "function": legacy}]
        for position, call in enumerate(calls):
            if isinstance(call, dict):
                self._tool_delta(call, position, out)
        finish = as_str(choice.get("finish_reason"))
        if finish is not None and self._finish is None:
            self._finish = finish
            self._close_open(out)

    def _start(self, out: list[bytes], message_id: str | None) -> None:
        if self._started:
            return
        self._started = True
        message: JsonObject = {
            "id": message_id or "msg_unknown",
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        out.append(sse_named(b"message_start", dumps({"type": "message_start", "message": message})))

    def _open_block(self, kind: str, content_block: JsonObject, out: list[bytes]) -> _Block:
        self._close_open(out)
        block = _Block(len(self._blocks), kind)
        self._blocks.append(block)
        self._open = block
        out.append(
            sse_named(
                b"content_block_start",
                dumps({"type": "content_block_start", "index": block.index, "content_block": content_block}),
            )
        )
        return block

    def _close_open(self, out: list[bytes]) -> None:
        block = self._open
        if block is not None:
            block.closed = True
            self._open = None
            out.append(
                sse_named(
                    b"content_block_stop",
                    b'{"type":"content_block_stop","index":' + str(block.index).encode() + b"}",
                )
            )

    def _text(self, text: str, out: list[bytes]) -> None:
        block = self._open
        if block is None or block.kind != "text":
            block = self._open_block("text", {"type": "text", "text": ""}, out)
        out.append(
            sse_named(
                b"content_block_delta",
                b'{"type":"content_block_delta","index":'
                + str(block.index).encode()
                + b',"delta":{"type":"text_delta","text":'
                + dumps(text)
                + b"}}",
            )
        )

    def _tool_delta(self, call: JsonObject, position: int, out: list[bytes]) -> None:
        index = call.get("index")
        key = index if isinstance(index, int) and not isinstance(index, bool) else position
        function = as_object(call.get("function")) or {}
        block = self._tools.get(key)
        if block is None:
            start = {
                "type": "tool_use",
                "id": as_str(call.get("id")) or f"toolu_{len(self._blocks)}",
                "name": _client_name(as_str(function.get("name")) or "", self._tool_names),
                "input": {},
            }
            block = self._open_block("tool_use", start, out)
            self._tools[key] = block
        arguments = as_str(function.get("arguments"))
        if arguments:
            out.append(
                sse_named(
                    b"content_block_delta",
                    b'{"type":"content_block_delta","index":'
                    + str(block.index).encode()
                    + b',"delta":{"type":"input_json_delta","partial_json":'
                    + dumps(arguments)
                    + b"}}",
                )
            )

    def _close(self, out: list[bytes]) -> None:
        if self._done:
            return
        self._start(out, None)
        self._close_open(out)
        stop_reason = _stop_reason(self._finish, bool(self._tools))
        usage = anthropic_usage_from_openai(self._usage) if self._usage is not None else {"output_tokens": 0}
        delta = {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": usage}
        out.append(sse_named(b"message_delta", dumps(delta)))
        out.append(_MESSAGE_STOP)
        self._done = True

    def _error(self, error_type: str, message: str, out: list[bytes]) -> None:
        payload = {"type": "error", "error": {"type": error_type, "message": message}}
        out.append(sse_named(b"error", dumps(payload)))
        self._done = True
