"""OpenAI Responses clients on a Chat Completions provider. Pure: dicts and bytes in, dicts and bytes out.

A client speaking the Responses API (`POST /v1/responses`, e.g. Codex CLI or `client.responses.create`) is
routed to a model whose provider only has Chat Completions (Gemini, Groq, Mistral, DeepSeek, xAI, Ollama,
and, composed with the Chat<->Anthropic translator, Anthropic). The request becomes one plain Chat
Completions body; the provider's answer (JSON or SSE) becomes a Responses `response` object or event stream
that the `openai` SDK and Codex accept. Nothing here keeps state between requests.

Request: Responses -> Chat Completions
=====================================

============================================  =====================================================
Responses                                     Chat Completions
============================================  =====================================================
``instructions``, ``system``/``developer``    one ``system`` message, first; parts joined by a blank
items (in order)                              line. Chat has no portable ``developer`` role and many
                                              chat templates (Llama, Qwen) accept a system turn only
                                              at the start, so later developer items move up too.
``input`` string                              one ``user`` message
``user`` message parts                        ``input_text`` -> ``text``; ``input_image``
                                              (URL or data URL) -> ``image_url`` (+ ``detail`` when
                                              low/high/auto); ``input_file`` with ``file_data`` ->
                                              ``file``. A single text part becomes a plain string
                                              (the form every provider takes).
``assistant`` messages                        ``assistant`` with the ``output_text``/``refusal`` text
``function_call`` items                       ``tool_calls`` on an assistant message; consecutive
                                              calls (and the assistant text just before them) share
                                              one message: that is how chat spells parallel calls
``function_call_output``                      ``tool`` message with ``tool_call_id``; images/files in
                                              the output follow the run of tool messages as one
                                              ``user`` message (chat tool messages carry text only)
``custom_tool_call`` / ``_output``            as function calls; arguments ``{"input": <text>}``
``tools``: ``function``                       ``{type: function, function: {name, description,
                                              parameters, strict}}`` (``strict`` only when true:
                                              false is chat's default)
``tools``: ``custom`` (freeform, e.g. Codex's  a function with one string parameter ``input``; the
``apply_patch``)                              grammar goes into the description. The model's call is
                                              turned back into a ``custom_tool_call``.
``tool_choice`` auto/none/required            same; ``{type: function|custom, name}`` ->
                                              ``{type: function, function: {name}}``;
                                              ``allowed_tools`` -> the tool list narrowed to those
                                              tools, choice = its ``mode``
``max_output_tokens``                         ``max_tokens`` by default (see `ChatTarget`)
``temperature``, ``top_p``                    same
``parallel_tool_calls``                       same, only when tools remain (OpenAI rejects it alone)
``text.format`` json_schema / json_object     ``response_format`` json_schema / json_object
``reasoning.effort``                          ``reasoning_effort``
``stream: true``                              ``stream: true`` + ``stream_options.include_usage``
``prompt_cache_key``, ``prompt_cache_         forwarded only with ``ChatTarget(openai_extensions=
retention``, ``safety_identifier``,           True)``: Chat Completions documents them, but Groq and
``user``, ``service_tier``,                   Gemini answer 400 to unknown fields and Mistral 422
``text.verbosity``
============================================  =====================================================

Deliberate drops (request):

- ``reasoning`` input items: encrypted or provider-specific chain of thought; no chat provider can read
  another's, and chat has no input field for it.
- built-in tools a chat provider cannot run (``web_search*``, ``file_search``, ``computer*``,
  ``code_interpreter``, ``image_generation``, ``mcp``, ``local_shell``, ``shell``, ``apply_patch``,
  ``tool_search``...) and their call/output items from earlier turns: they are executed by OpenAI's
  servers or through OpenAI-only item types; what they produced is already in the following assistant
  text. A ``tool_choice`` that forces one of them raises `TranslationError` (the model cannot obey it).
- ``store`` (nothing is stored; the response echoes ``store: false``), ``metadata`` (echoed on the
  response, never sent: Gemini and Groq reject it), ``include`` (asks for encrypted reasoning, logprobs and
  built-in tool outputs we never produce), ``truncation`` (chat fails on overflow, like ``disabled``),
  ``max_tool_calls`` (counts built-in tool calls), ``top_logprobs``, ``stream_options``
  (``include_obfuscation`` is Responses-only), ``reasoning.summary``, ``context_management``,
  ``prompt_cache_options``, ``moderation`` and any field not named here: a strict provider rejects what it
  does not know, and a lenient one would ignore it anyway.

Raised as `TranslationError` (the caller answers 400 in the Responses error shape): anything that needs
server-side state we do not have (``previous_response_id``, ``conversation``, ``prompt`` templates,
``background: true``, ``item_reference`` and ``compaction`` items, images/files by ``file_id``, files by
``file_url``), content we cannot express (unknown content part types, images in system/developer text),
and malformed items we would otherwise have to guess at (a function call without ``call_id``).

Response: Chat Completions -> Responses
=======================================

=======================================  ===========================================================
Chat Completions                         Responses
=======================================  ===========================================================
``message.content``                      ``message`` item with one ``output_text`` part
``message.refusal``                      ``refusal`` part of that message
``message.tool_calls[i]``                ``function_call`` item, ``call_id`` = the chat tool call id
                                         (``custom_tool_call`` with ``input`` for custom tools)
``reasoning_content`` / ``reasoning``    ``reasoning`` item with a ``reasoning_text`` part (the
(DeepSeek, Groq, vLLM, composed          de-facto chat field for visible thinking); it carries no
Anthropic thinking)                      ``encrypted_content``
``finish_reason`` stop / tool_calls      ``status: completed``
``length``                               ``incomplete``, ``incomplete_details.reason =
                                         max_output_tokens``
``content_filter``                       ``incomplete``, reason ``content_filter``
``usage.prompt_tokens``                  ``input_tokens``; ``prompt_tokens_details.cached_tokens`` /
                                         ``cache_write_tokens`` -> ``input_tokens_details``
``usage.completion_tokens``              ``output_tokens``; ``completion_tokens_details.
                                         reasoning_tokens`` -> ``output_tokens_details``
=======================================  ===========================================================

The response echoes the request fields the Responses object carries (instructions, tools, tool_choice,
temperature, top_p, max_output_tokens, text, reasoning, metadata, parallel_tool_calls...). Ids are derived
from the provider's completion id (``resp_<id>``, ``msg_<id>_<n>``, ``fc_<call id>``) so one upstream
answer always translates to the same bytes; ``response_id=`` replaces it where provider ids repeat (Ollama's
are three random digits).

Streams: chat chunks become ``response.created``, ``response.in_progress``, then per item
``output_item.added`` -> ``content_part.added`` -> ``output_text.delta``... -> ``output_text.done`` ->
``content_part.done`` -> ``output_item.done`` (function calls: ``function_call_arguments.delta`` /
``.done``), and finally ``response.completed`` or ``response.incomplete`` carrying the usage of the chat
stream's usage chunk. Items are sequential as in the Responses API (one finishes before the next starts);
parallel tool calls are the exception: their items stay open together until the choice finishes, so a
provider that interleaves their argument deltas still yields whole arguments. A custom tool's input is
JSON inside the chat arguments, so it is sent once, whole, when the call finishes. A provider error
mid-stream becomes an ``error`` event and ``response.failed``; a stream that stops before its
``finish_reason`` (`StreamTranslator.finish`) becomes ``response.failed`` too, never a silent cut.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from plano_extproc.translation.common import TranslationError
from plano_extproc.translation.sse import SseEvent, SseParser, encode_event

Json = dict[str, Any]

__all__ = [
    "ChatTarget",
    "StreamTranslator",
    "TranslationError",
    "translate_error",
    "translate_request",
    "translate_response",
]


@dataclass(frozen=True, slots=True)
class ChatTarget:
    """What the chat provider accepts beyond the portable core. The defaults suit every provider we know.

    - ``max_tokens_field``: ``max_tokens`` is what DeepSeek honours (it ignores ``max_completion_tokens``),
      Mistral accepts (it rejects the other with 422), and Groq, Gemini, xAI, Ollama and the Chat->Anthropic
      translator read. OpenAI's own chat endpoint wants ``max_completion_tokens`` for reasoning models.
    - ``stream_usage``: ``stream_options.include_usage``; Mistral rejects the field (and sends usage anyway).
    - ``reasoning_effort``: off for providers/models that reject it (Groq's non-reasoning models).
    - ``openai_extensions``: forward OpenAI-only chat fields (prompt cache key/retention, safety
      identifier, user, service tier, verbosity) - for OpenAI or Azure chat endpoints.
    """

    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    stream_usage: bool = True
    reasoning_effort: bool = True
    openai_extensions: bool = False


PORTABLE: Final = ChatTarget()

_TEXT_PARTS: Final = frozenset({"input_text", "output_text", "text"})
_IMAGE_DETAILS: Final = frozenset({"low", "high", "auto"})
_STATE_ITEMS: Final = {
    "item_reference": "an item_reference points at an item stored by OpenAI",
    "compaction": "a compaction item is OpenAI-encrypted history",
}
_OPENAI_EXTENSIONS: Final = ("prompt_cache_key", "prompt_cache_retention", "safety_identifier", "user", "service_tier")
_ROUTED = "when this request is answered by a model without the Responses API"


# --------------------------------------------------------------------------------------------- request


def translate_request(body: Json, *, model_id: str, target: ChatTarget = PORTABLE) -> Json:
    """A Responses request body (routing fields removed) -> a Chat Completions body for `model_id`."""
    _refuse_server_state(body)
    tools = _tools(body.get("tools"))
    out: Json = {"model": model_id, "messages": _messages(body)}
    if tools:
        choice, tools = _tool_choice(body.get("tool_choice"), tools)
        out["tools"] = tools
        if choice is not None:
            out["tool_choice"] = choice
        parallel = body.get("parallel_tool_calls")
        if isinstance(parallel, bool):
            out["parallel_tool_calls"] = parallel
    else:
        _check_choice_without_tools(body.get("tool_choice"))
    max_tokens = body.get("max_output_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        out[target.max_tokens_field] = max_tokens
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    text = body.get("text")
    if isinstance(text, dict):
        response_format = _response_format(text.get("format"))
        if response_format is not None:
            out["response_format"] = response_format
        if target.openai_extensions and isinstance(text.get("verbosity"), str):
            out["verbosity"] = text["verbosity"]
    reasoning = body.get("reasoning")
    if target.reasoning_effort and isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        out["reasoning_effort"] = reasoning["effort"]
    if target.openai_extensions:
        for name in _OPENAI_EXTENSIONS:
            if isinstance(body.get(name), str):
                out[name] = body[name]
    if body.get("stream") is True:
        out["stream"] = True
        if target.stream_usage:
            out["stream_options"] = {"include_usage": True}
    return out


def _refuse_server_state(body: Json) -> None:
    for name, what in (
        ("previous_response_id", "continues a response stored by the provider"),
        ("conversation", "continues a conversation stored by the provider"),
        ("prompt", "refers to a prompt template stored by OpenAI"),
    ):
        if body.get(name) not in (None, "", {}):
            raise TranslationError(
                f"'{name}' {what}; this gateway keeps no response state {_ROUTED}. "
                "Send the whole conversation in 'input' instead.",
                name,
            )
    if body.get("background") is True:
        raise TranslationError(f"'background: true' needs stored responses to poll, which is not available {_ROUTED}", "background")


def _tools(raw: object) -> list[Json]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise TranslationError("tools must be an array", "tools")
    out: list[Json] = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict):
            raise TranslationError(f"tools[{i}] must be an object", f"tools[{i}]")
        kind = tool.get("type")
        if kind not in ("function", "custom"):
            continue  # built-in or unknown tool types: dropped (module docstring)
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError(f"tools[{i}].name is required", f"tools[{i}].name")
        function: Json = {"name": name}
        description = tool.get("description")
        if kind == "function":
            if isinstance(description, str) and description:
                function["description"] = description
            parameters = tool.get("parameters")
            if isinstance(parameters, dict):
                function["parameters"] = parameters
            if tool.get("strict") is True:
                function["strict"] = True
        else:
            function["description"] = _custom_description(description, tool.get("format"))
            function["parameters"] = {
                "type": "object",
                "properties": {"input": {"type": "string", "description": "The tool's input, as free-form text."}},
                "required": ["input"],
                "additionalProperties": False,
            }
        out.append({"type": "function", "function": function})
    return out


def _custom_description(description: object, fmt: object) -> str:
    text = description if isinstance(description, str) else ""
    if isinstance(fmt, dict) and fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        syntax = fmt.get("syntax") if isinstance(fmt.get("syntax"), str) else "lark"
        text += f"\n\nThe input must follow this {syntax} grammar:\n{fmt['definition']}"
    return text.strip() or "Free-form text input."


def _tool_choice(choice: object, tools: list[Json]) -> tuple[object, list[Json]]:
    """(chat tool_choice or None to leave it out, the tools to send)."""
    if choice is None:
        return None, tools
    if choice in ("auto", "none", "required"):
        return choice, tools
    if not isinstance(choice, dict):
        raise TranslationError("tool_choice must be 'auto', 'none', 'required' or an object", "tool_choice")
    kind = choice.get("type")
    if kind in ("function", "custom"):
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError("tool_choice.name is required", "tool_choice.name")
        return {"type": "function", "function": {"name": name}}, tools
    if kind == "allowed_tools":
        mode = choice.get("mode", "auto")
        allowed = choice.get("tools")
        if mode not in ("auto", "required") or not isinstance(allowed, list):
            raise TranslationError("tool_choice.allowed_tools needs mode 'auto' or 'required' and a tools array", "tool_choice")
        names = {t.get("name") for t in allowed if isinstance(t, dict) and t.get("type") in ("function", "custom")}
        narrowed = [t for t in tools if t["function"]["name"] in names]
        if not narrowed:
            if mode == "required":
                raise TranslationError(
                    f"tool_choice.allowed_tools requires a tool, but none of the allowed tools can run {_ROUTED}", "tool_choice"
                )
            return "none", tools
        return mode, narrowed
    raise TranslationError(f"tool_choice forces the built-in tool {kind!r}, which cannot run {_ROUTED}", "tool_choice")


def _check_choice_without_tools(choice: object) -> None:
    if choice == "required":
        raise TranslationError(f"tool_choice 'required' but no function tool can run {_ROUTED}", "tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind in ("function", "custom"):
            raise TranslationError(f"tool_choice names {choice.get('name')!r}, which is not among the function tools", "tool_choice")
        if kind == "allowed_tools" and choice.get("mode") == "required":
            raise TranslationError(f"tool_choice.allowed_tools requires a tool, but none can run {_ROUTED}", "tool_choice")
        if kind != "allowed_tools":
            raise TranslationError(f"tool_choice forces the built-in tool {kind!r}, which cannot run {_ROUTED}", "tool_choice")


def _response_format(fmt: object) -> Json | None:
    if not isinstance(fmt, dict):
        return None
    kind = fmt.get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise TranslationError("text.format.schema must be an object", "text.format.schema")
        name = fmt.get("name")
        spec: Json = {"name": name if isinstance(name, str) and name else "response", "schema": schema}
        if isinstance(fmt.get("description"), str):
            spec["description"] = fmt["description"]
        if isinstance(fmt.get("strict"), bool):
            spec["strict"] = fmt["strict"]
        return {"type": "json_schema", "json_schema": spec}
    return None  # "text" (the default) or a format chat does not know


class _Conversation:
    """Chat messages built item by item; system text collected apart and put first."""

    def __init__(self) -> None:
        self.system: list[str] = []
        self.messages: list[Json] = []
        self.deferred: list[Json] = []  # user parts from tool outputs, sent after the run of tool messages

    def flush_deferred(self) -> None:
        if self.deferred:
            self.messages.append({"role": "user", "content": self.deferred})
            self.deferred = []

    def assistant_text(self, text: str) -> None:
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "assistant" and last.get("tool_calls") and last.get("content") is None:
            last["content"] = text
        else:
            self.messages.append({"role": "assistant", "content": text})

    def tool_call(self, call: Json) -> None:
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            self.messages.append({"role": "assistant", "content": None, "tool_calls": [call]})

    def result(self) -> list[Json]:
        self.flush_deferred()
        head: list[Json] = [{"role": "system", "content": "\n\n".join(self.system)}] if self.system else []
        return head + self.messages


def _messages(body: Json) -> list[Json]:
    conv = _Conversation()
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        if instructions:
            conv.system.append(instructions)
    elif instructions is not None:
        raise TranslationError("instructions must be a string", "instructions")
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    elif items is None:
        items = []
    elif not isinstance(items, list):
        raise TranslationError("input must be a string or an array of items", "input")
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise TranslationError(f"{where} must be an object", where)
        kind = item.get("type") or "message"
        if kind not in ("function_call_output", "custom_tool_call_output"):
            conv.flush_deferred()
        if kind == "message":
            _message_item(conv, item, where)
        elif kind == "function_call":
            arguments = item.get("arguments")
            if not isinstance(arguments, str):
                arguments = orjson.dumps(arguments if arguments is not None else {}).decode()
            conv.tool_call(_chat_call(item, where, arguments))
        elif kind == "custom_tool_call":
            value = item.get("input")
            conv.tool_call(_chat_call(item, where, orjson.dumps({"input": value if isinstance(value, str) else ""}).decode()))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            _tool_output(conv, item, where)
        elif kind in _STATE_ITEMS:
            raise TranslationError(f"{where}: {_STATE_ITEMS[kind]}, which cannot be resolved {_ROUTED}", where)
        # else: reasoning items and built-in tool calls/outputs are dropped (module docstring)
    messages = conv.result()
    if not any(m["role"] != "system" for m in messages):
        raise TranslationError("input must contain at least one message", "input")
    return messages


def _message_item(conv: _Conversation, item: Json, where: str) -> None:
    role = item.get("role")
    content = item.get("content")
    if role in ("system", "developer"):
        text = _plain_text(content, f"{where}.content", allow_refusal=False)
        if text:
            conv.system.append(text)
    elif role == "user":
        conv.messages.append({"role": "user", "content": _user_content(content, f"{where}.content")})
    elif role == "assistant":
        text = _plain_text(content, f"{where}.content", allow_refusal=True)
        if text:
            conv.assistant_text(text)
    else:
        raise TranslationError(f"{where}.role must be user, assistant, system or developer", f"{where}.role")


def _plain_text(content: object, where: str, *, allow_refusal: bool) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError(f"{where} must be a string or an array of parts", where)
    texts: list[str] = []
    for j, part in enumerate(content):
        part = part if isinstance(part, dict) else {}
        kind = part.get("type")
        value = part.get("refusal" if kind == "refusal" else "text")
        if (kind in _TEXT_PARTS or (allow_refusal and kind == "refusal")) and isinstance(value, str):
            texts.append(value)
        else:
            raise TranslationError(f"{where}[{j}]: only text can go in this message {_ROUTED}", f"{where}[{j}]")
    return "".join(texts) if allow_refusal else "\n\n".join(t for t in texts if t)


def _user_content(content: object, where: str) -> str | list[Json]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError(f"{where} must be a string or an array of parts", where)
    parts = [_chat_part(part, f"{where}[{j}]") for j, part in enumerate(content)]
    if len(parts) == 1 and parts[0]["type"] == "text":
        text: str = parts[0]["text"]
        return text
    return parts


def _chat_part(part: object, where: str) -> Json:
    if not isinstance(part, dict):
        raise TranslationError(f"{where} must be an object", where)
    kind = part.get("type")
    if kind in _TEXT_PARTS or kind == "refusal":
        text = part.get("text") if kind != "refusal" else part.get("refusal")
        if not isinstance(text, str):
            raise TranslationError(f"{where}.text must be a string", f"{where}.text")
        return {"type": "text", "text": text}
    if kind == "input_image":
        url = part.get("image_url")
        if isinstance(url, str) and url:
            image: Json = {"url": url}
            if part.get("detail") in _IMAGE_DETAILS:
                image["detail"] = part["detail"]
            return {"type": "image_url", "image_url": image}
        if part.get("file_id"):
            raise TranslationError(
                f"{where}: an image by file_id lives in OpenAI's file store, unreachable {_ROUTED}; send image_url (a URL or data URL)",
                f"{where}.file_id",
            )
        raise TranslationError(f"{where}.image_url is required", f"{where}.image_url")
    if kind == "input_file":
        data = part.get("file_data")
        if isinstance(data, str) and data:
            file: Json = {"file_data": data}
            if isinstance(part.get("filename"), str):
                file["filename"] = part["filename"]
            return {"type": "file", "file": file}
        if part.get("file_id"):
            raise TranslationError(f"{where}: a file by file_id lives in OpenAI's file store, unreachable {_ROUTED}; send file_data", f"{where}.file_id")
        if part.get("file_url"):
            raise TranslationError(f"{where}: Chat Completions cannot fetch a file by URL; send file_data", f"{where}.file_url")
        raise TranslationError(f"{where}.file_data is required", f"{where}.file_data")
    raise TranslationError(f"{where}: content of type {kind!r} cannot be sent {_ROUTED}", f"{where}.type")


def _chat_call(item: Json, where: str, arguments: str) -> Json:
    call_id = item.get("call_id")
    name = item.get("name")
    if not isinstance(call_id, str) or not call_id:
        raise TranslationError(f"{where}.call_id is required", f"{where}.call_id")
    if not isinstance(name, str) or not name:
        raise TranslationError(f"{where}.name is required", f"{where}.name")
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tool_output(conv: _Conversation, item: Json, where: str) -> None:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise TranslationError(f"{where}.call_id is required", f"{where}.call_id")
    output = item.get("output")
    if isinstance(output, str):
        text = output
    elif isinstance(output, list):
        texts: list[str] = []
        for j, part in enumerate(output):
            chat = _chat_part(part, f"{where}.output[{j}]")
            if chat["type"] == "text":
                texts.append(chat["text"])
            else:
                conv.deferred.append(chat)
        text = "\n".join(texts)
    elif output is None:
        text = ""
    else:
        text = orjson.dumps(output).decode()
    conv.messages.append({"role": "tool", "tool_call_id": call_id, "content": text})


# -------------------------------------------------------------------------------------------- response

_INCOMPLETE: Final = {"length": "max_output_tokens", "content_filter": "content_filter"}
_FAILED_CODES: Final = {"rate_limit_exceeded", "server_error", "invalid_prompt"}


def translate_response(body: Json, *, client_model: str, request: Json | None = None, response_id: str | None = None) -> Json:
    """A `chat.completion` body -> a Responses `response` object. `response_id` (default: derived from the
    completion id) names the response and its items; pass one when the provider's ids are not unique."""
    base = response_id.removeprefix("resp_") if response_id else _base_id(body.get("id"))
    created = _created(body.get("created"))
    choice = _first_choice(body.get("choices"))
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    assert isinstance(message, dict)
    finish = choice.get("finish_reason")
    status = "incomplete" if finish in _INCOMPLETE else "completed"
    custom = _custom_names(request)
    output: list[Json] = []
    reasoning = _reasoning_of(message)
    if reasoning:
        output.append(_reasoning_item(f"rs_{base}_{len(output)}", reasoning, "completed"))
    text = _text_of(message.get("content"))
    refusal = message.get("refusal") if isinstance(message.get("refusal"), str) else None
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        calls.append({"id": None, "function": legacy})
    parts: list[Json] = []
    if text or (text is not None and not calls and not refusal):
        parts.append(_text_part(text or ""))
    if refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    if parts or not (calls or output):
        output.append(_message_item_out(f"msg_{base}_{len(output)}", parts or [_text_part("")], "completed"))
    for n, call in enumerate(calls):
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        assert isinstance(function, dict)
        call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else f"call_{base}_{n}"
        name = function.get("name") if isinstance(function.get("name"), str) else ""
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments if arguments is not None else {}).decode()
        output.append(_call_item(str(call_id), str(name), arguments, custom, "completed"))
    if status == "incomplete" and "status" in output[-1]:
        output[-1]["status"] = "incomplete"  # the item being written when the answer was cut; earlier ones are whole
    response = _response_shell(request, client_model, _resp_id(base), created)
    response["status"] = status
    if finish in _INCOMPLETE:
        response["incomplete_details"] = {"reason": _INCOMPLETE[finish]}
    response["output"] = output
    response["usage"] = _usage(body.get("usage"))
    return response


def _first_choice(choices: object) -> Json:
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                return choice
    return {}


def _base_id(raw: object) -> str:
    return raw if isinstance(raw, str) and raw else uuid.uuid4().hex


def _resp_id(base: str) -> str:
    return f"resp_{base}"


def _created(raw: object) -> int:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw > 0:
        return int(raw)
    return int(time.time())


def _text_of(content: object) -> str | None:
    """Chat message content: a string, or (Mistral, some proxies) a list of parts whose text we keep."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str))
    return None


def _reasoning_of(message: Json) -> str:
    for name in ("reasoning_content", "reasoning"):
        value = message.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _custom_names(request: Json | None) -> frozenset[str]:
    tools = request.get("tools") if isinstance(request, dict) else None
    if not isinstance(tools, list):
        return frozenset()
    return frozenset(t["name"] for t in tools if isinstance(t, dict) and t.get("type") == "custom" and isinstance(t.get("name"), str))


def _text_part(text: str) -> Json:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message_item_out(item_id: str, parts: list[Json], status: str) -> Json:
    return {"id": item_id, "type": "message", "status": _item_status(status), "content": parts, "role": "assistant"}


def _reasoning_item(item_id: str, text: str, status: str) -> Json:
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": _item_status(status),
    }


def _call_item(call_id: str, name: str, arguments: str, custom: frozenset[str], status: str) -> Json:
    if name in custom:
        return {"id": f"ctc_{call_id}", "type": "custom_tool_call", "call_id": call_id, "name": name, "input": _custom_input(arguments)}
    return {
        "id": f"fc_{call_id}",
        "type": "function_call",
        "status": _item_status(status),
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def _custom_input(arguments: str) -> str:
    """The text a custom tool gets: the `input` we asked the model to put in its JSON arguments."""
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments
    if isinstance(parsed, dict) and isinstance(parsed.get("input"), str):
        value: str = parsed["input"]
        return value
    return arguments


def _item_status(status: str) -> str:
    return "completed" if status == "completed" else "incomplete"


def _usage(raw: object) -> Json | None:
    if not isinstance(raw, dict):
        return None

    def count(obj: object, name: str) -> int:
        value = obj.get(name) if isinstance(obj, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    prompt, completion = count(raw, "prompt_tokens"), count(raw, "completion_tokens")
    total = count(raw, "total_tokens") or prompt + completion
    prompt_details, completion_details = raw.get("prompt_tokens_details"), raw.get("completion_tokens_details")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": count(prompt_details, "cached_tokens"),
            "cache_write_tokens": count(prompt_details, "cache_write_tokens"),
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": count(completion_details, "reasoning_tokens")},
        "total_tokens": total,
    }


def _response_shell(request: Json | None, client_model: str, response_id: str, created: int) -> Json:
    """A `response` object without output: the request fields it echoes, status in_progress."""
    req: Json = request if isinstance(request, dict) else {}

    def pick(name: str, kinds: type | tuple[type, ...], default: object = None) -> object:
        value = req.get(name)
        if isinstance(value, bool) and kinds is not bool:
            return default  # JSON true is not a number
        return value if isinstance(value, kinds) else default

    reasoning = req.get("reasoning") if isinstance(req.get("reasoning"), dict) else {}
    assert isinstance(reasoning, dict)
    text = req.get("text") if isinstance(req.get("text"), dict) else None
    metadata = req.get("metadata") if isinstance(req.get("metadata"), dict) else {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": pick("instructions", str),
        "max_output_tokens": pick("max_output_tokens", int),
        "max_tool_calls": pick("max_tool_calls", int),
        "model": client_model,
        "output": [],
        "parallel_tool_calls": pick("parallel_tool_calls", bool, True),
        "previous_response_id": None,
        "prompt_cache_key": pick("prompt_cache_key", str),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": pick("safety_identifier", str),
        "service_tier": None,
        "store": False,
        "temperature": pick("temperature", (int, float)),
        "text": text if text is not None else {"format": {"type": "text"}},
        "tool_choice": req.get("tool_choice") if req.get("tool_choice") is not None else "auto",
        "tools": req.get("tools") if isinstance(req.get("tools"), list) else [],
        "top_logprobs": pick("top_logprobs", int),
        "top_p": pick("top_p", (int, float)),
        "truncation": req.get("truncation") if req.get("truncation") in ("auto", "disabled") else "disabled",
        "usage": None,
        "user": pick("user", str),
        "metadata": metadata,
    }


# ------------------------------------------------------------------------------------------------ stream


@dataclass(slots=True)
class _Tool:
    chat_index: int
    call_id: str = ""
    name: str = ""
    args: list[str] = field(default_factory=list)
    output_index: int = -1  # -1 until announced (needs the name)
    item_id: str = ""
    custom: bool = False
    closed: bool = False


@dataclass(slots=True)
class _Message:
    output_index: int
    item_id: str
    parts: list[Json] = field(default_factory=list)  # closed parts
    kind: str = ""  # "output_text" | "refusal" | "" (no open part)
    text: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Reasoning:
    output_index: int
    item_id: str
    text: list[str] = field(default_factory=list)


class StreamTranslator:
    """Chat Completions SSE bytes in (any chunking) -> Responses SSE bytes out, incrementally."""

    def __init__(self, *, client_model: str, request: Json | None = None, response_id: str | None = None) -> None:
        self._client_model = client_model
        self._response_id = response_id
        self._request = request
        self._custom = _custom_names(request)
        self._parser = SseParser()
        self._out: list[bytes] = []
        self._seq = 0
        self._started = False
        self._done = False  # a terminal event went out
        self._base = ""
        self._created = 0
        self._output: list[Json | None] = []  # finished items by output index
        self._message: _Message | None = None
        self._reasoning: _Reasoning | None = None
        self._tools: dict[int, _Tool] = {}
        self._finish: str | None = None
        self._finished_choice = False
        self._failed = False
        self._usage: Json | None = None

    # public -----------------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> bytes:
        if self._done:
            return b""
        try:
            events = self._parser.feed(chunk)
        except ValueError as e:  # one event larger than the parser's bound: the stream cannot go on
            self._fail({"message": f"the provider's stream could not be read: {e}", "type": "server_error"})
            return self._drain()
        for event in events:
            self._on_event(event)
            if self._done:
                break
        return self._drain()

    def finish(self) -> bytes:
        """Close the stream: the provider is done sending, with or without `[DONE]`."""
        if not self._done:
            for event in self._parser.finish():
                self._on_event(event)
                if self._done:
                    break
        if not self._done:
            if self._finished_choice:
                self._complete()
            else:
                self._fail({"message": "the provider's stream ended before the response was complete", "type": "server_error"})
        return self._drain()

    # chat events ------------------------------------------------------------------------------------

    def _drain(self) -> bytes:
        out, self._out = b"".join(self._out), []
        return out

    def _on_event(self, event: SseEvent) -> None:
        data = event.data.strip()
        if not data:
            return
        if data == "[DONE]":
            self._complete()
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return  # not a chunk (a keep-alive or a provider's note); nothing a client could use
        if not isinstance(chunk, dict):
            return
        error = chunk.get("error")
        if event.event == "error" or (error is not None and "choices" not in chunk):
            self._fail(error if isinstance(error, dict) else {"message": str(error or data)})
            return
        self._start(chunk)
        usage = chunk.get("usage")
        if not isinstance(usage, dict):
            groq = chunk.get("x_groq")
            usage = groq.get("usage") if isinstance(groq, dict) else None
        if isinstance(usage, dict):
            self._usage = usage
        choice = _first_choice(chunk.get("choices"))
        if not choice or self._finished_choice:
            return
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self._on_delta(delta)
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            self._finish = finish
            self._finished_choice = True
            self._close_all()

    def _on_delta(self, delta: Json) -> None:
        reasoning = _reasoning_of(delta)
        if reasoning:
            self._reasoning_delta(reasoning)
        content = delta.get("content")
        text = content if isinstance(content, str) else _text_of(content) if isinstance(content, list) else None
        if text:
            self._text_delta("output_text", text)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._text_delta("refusal", refusal)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    self._tool_delta(call)
        legacy = delta.get("function_call")
        if isinstance(legacy, dict):
            self._tool_delta({"index": 0, "function": legacy})

    # responses events -------------------------------------------------------------------------------

    def _emit(self, kind: str, payload: Json) -> None:
        payload["sequence_number"] = self._seq
        self._seq += 1
        self._out.append(encode_event(orjson.dumps(payload).decode(), kind))

    def _start(self, chunk: Json) -> None:
        if self._started:
            return
        self._started = True
        self._base = self._response_id.removeprefix("resp_") if self._response_id else _base_id(chunk.get("id"))
        self._created = _created(chunk.get("created"))
        shell = self._shell()
        self._emit("response.created", {"type": "response.created", "response": shell})
        self._emit("response.in_progress", {"type": "response.in_progress", "response": shell})

    def _shell(self) -> Json:
        return _response_shell(self._request, self._client_model, _resp_id(self._base), self._created)

    def _status(self) -> str:
        """The status items get when they close: incomplete when cut short or when the stream failed."""
        return "incomplete" if self._failed or self._finish in _INCOMPLETE else "completed"

    def _new_index(self) -> int:
        self._output.append(None)
        return len(self._output) - 1

    def _reasoning_delta(self, text: str) -> None:
        if self._reasoning is None:
            self._close_message()
            self._close_tools()
            index = self._new_index()
            self._reasoning = item = _Reasoning(index, f"rs_{self._base}_{index}")
            self._emit(
                "response.output_item.added",
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {"id": item.item_id, "type": "reasoning", "summary": [], "content": [], "status": "in_progress"},
                },
            )
            self._emit(
                "response.content_part.added",
                {
                    "type": "response.content_part.added",
                    "item_id": item.item_id,
                    "output_index": index,
                    "content_index": 0,
                    "part": {"type": "reasoning_text", "text": ""},
                },
            )
        item = self._reasoning
        item.text.append(text)
        self._emit(
            "response.reasoning_text.delta",
            {"type": "response.reasoning_text.delta", "item_id": item.item_id, "output_index": item.output_index, "content_index": 0, "delta": text},
        )

    def _close_reasoning(self) -> None:
        item = self._reasoning
        if item is None:
            return
        self._reasoning = None
        text = "".join(item.text)
        ids = {"item_id": item.item_id, "output_index": item.output_index, "content_index": 0}
        self._emit("response.reasoning_text.done", {"type": "response.reasoning_text.done", **ids, "text": text})
        self._emit("response.content_part.done", {"type": "response.content_part.done", **ids, "part": {"type": "reasoning_text", "text": text}})
        self._finish_item(item.output_index, _reasoning_item(item.item_id, text, self._status()))

    def _open_message(self) -> _Message:
        if self._message is None:
            self._close_reasoning()
            self._close_tools()
            index = self._new_index()
            self._message = _Message(index, f"msg_{self._base}_{index}")
            self._emit(
                "response.output_item.added",
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {"id": self._message.item_id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"},
                },
            )
        return self._message

    def _open_part(self, msg: _Message, kind: str) -> None:
        self._close_part(msg)
        msg.kind = kind
        part: Json = _text_part("") if kind == "output_text" else {"type": "refusal", "refusal": ""}
        self._emit(
            "response.content_part.added",
            {"type": "response.content_part.added", "item_id": msg.item_id, "output_index": msg.output_index, "content_index": len(msg.parts), "part": part},
        )

    def _text_delta(self, kind: str, text: str) -> None:
        msg = self._open_message()
        if msg.kind != kind:
            self._open_part(msg, kind)
        msg.text.append(text)
        ids = {"item_id": msg.item_id, "output_index": msg.output_index, "content_index": len(msg.parts)}
        if kind == "output_text":
            self._emit("response.output_text.delta", {"type": "response.output_text.delta", **ids, "delta": text, "logprobs": []})
        else:
            self._emit("response.refusal.delta", {"type": "response.refusal.delta", **ids, "delta": text})

    def _close_part(self, msg: _Message) -> None:
        if not msg.kind:
            return
        text = "".join(msg.text)
        ids = {"item_id": msg.item_id, "output_index": msg.output_index, "content_index": len(msg.parts)}
        if msg.kind == "output_text":
            part = _text_part(text)
            self._emit("response.output_text.done", {"type": "response.output_text.done", **ids, "text": text, "logprobs": []})
        else:
            part = {"type": "refusal", "refusal": text}
            self._emit("response.refusal.done", {"type": "response.refusal.done", **ids, "refusal": text})
        self._emit("response.content_part.done", {"type": "response.content_part.done", **ids, "part": part})
        msg.parts.append(part)
        msg.kind, msg.text = "", []

    def _close_message(self) -> None:
        msg = self._message
        if msg is None:
            return
        self._message = None
        self._close_part(msg)
        self._finish_item(msg.output_index, _message_item_out(msg.item_id, msg.parts, self._status()))

    def _tool_delta(self, call: Json) -> None:
        tool = self._tool_for(call)
        if tool is None or tool.closed:
            return  # a late delta for a call already finished (see the module docstring)
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        assert isinstance(function, dict)
        if isinstance(call.get("id"), str) and call["id"] and not tool.call_id:
            tool.call_id = call["id"]
        if isinstance(function.get("name"), str) and function["name"] and not tool.name:
            tool.name = function["name"]
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, str):
            arguments = orjson.dumps(arguments).decode()
        if arguments:
            tool.args.append(arguments)
        if tool.output_index < 0:
            if not tool.name:
                return  # announced once its name is known; arguments wait in tool.args
            self._announce(tool, "".join(tool.args))
        elif arguments and not tool.custom:
            self._emit(
                "response.function_call_arguments.delta",
                {"type": "response.function_call_arguments.delta", "item_id": tool.item_id, "output_index": tool.output_index, "delta": arguments},
            )

    def _tool_for(self, call: Json) -> _Tool | None:
        index = call.get("index")
        call_id = call.get("id") if isinstance(call.get("id"), str) else None
        if not isinstance(index, int) or isinstance(index, bool):
            # no index (some OpenAI-compatible servers): match by id, else a new call when an id comes, else the last
            known = next((t for t in self._tools.values() if call_id and t.call_id == call_id), None)
            if known is not None:
                return known
            if call_id or not self._tools:
                index = max(self._tools, default=-1) + 1
            else:
                return self._tools[max(self._tools)]
        tool = self._tools.get(index)
        if tool is None:
            tool = self._tools[index] = _Tool(index)
        return tool

    def _announce(self, tool: _Tool, pending: str) -> None:
        self._close_reasoning()
        self._close_message()
        tool.output_index = self._new_index()
        if not tool.call_id:
            tool.call_id = f"call_{self._base}_{tool.chat_index}"
        tool.custom = tool.name in self._custom
        if tool.custom:
            tool.item_id = f"ctc_{tool.call_id}"
            item: Json = {"id": tool.item_id, "type": "custom_tool_call", "call_id": tool.call_id, "name": tool.name, "input": ""}
        else:
            tool.item_id = f"fc_{tool.call_id}"
            item = {"id": tool.item_id, "type": "function_call", "status": "in_progress", "arguments": "", "call_id": tool.call_id, "name": tool.name}
        self._emit("response.output_item.added", {"type": "response.output_item.added", "output_index": tool.output_index, "item": item})
        if pending and not tool.custom:
            self._emit(
                "response.function_call_arguments.delta",
                {"type": "response.function_call_arguments.delta", "item_id": tool.item_id, "output_index": tool.output_index, "delta": pending},
            )

    def _close_tools(self) -> None:
        for tool in sorted((t for t in self._tools.values() if t.output_index >= 0 and not t.closed), key=lambda t: t.output_index):
            tool.closed = True
            arguments = "".join(tool.args)
            ids = {"item_id": tool.item_id, "output_index": tool.output_index}
            if tool.custom:
                value = _custom_input(arguments)
                self._emit("response.custom_tool_call_input.delta", {"type": "response.custom_tool_call_input.delta", **ids, "delta": value})
                self._emit("response.custom_tool_call_input.done", {"type": "response.custom_tool_call_input.done", **ids, "input": value})
            else:
                self._emit(
                    "response.function_call_arguments.done",
                    {"type": "response.function_call_arguments.done", **ids, "name": tool.name, "arguments": arguments},
                )
            self._finish_item(tool.output_index, _call_item(tool.call_id, tool.name, arguments, self._custom, self._status()))
        for tool in self._tools.values():
            tool.closed = True  # calls never named are dropped: a call without a name cannot be made

    def _finish_item(self, index: int, item: Json) -> None:
        self._output[index] = item
        self._emit("response.output_item.done", {"type": "response.output_item.done", "output_index": index, "item": item})

    def _close_all(self) -> None:
        self._close_reasoning()
        self._close_message()
        self._close_tools()
        if not self._output and self._finish not in ("tool_calls", "function_call"):
            # an answer without any content still has its (empty) message, as in the JSON translation
            self._open_part(self._open_message(), "output_text")
            self._close_message()

    def _complete(self) -> None:
        if self._done:
            return
        if not self._started:
            self._start({})
        self._close_all()
        response = self._shell()
        status = self._status()
        response["status"] = status
        if self._finish in _INCOMPLETE:
            response["incomplete_details"] = {"reason": _INCOMPLETE[self._finish]}
        response["output"] = [item for item in self._output if item is not None]
        response["usage"] = _usage(self._usage)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        self._emit(kind, {"type": kind, "response": response})
        self._done = True

    def _fail(self, error: Json) -> None:
        if self._done:
            return
        if not self._started:
            self._start({})
        message = error.get("message") if isinstance(error.get("message"), str) and error.get("message") else "the provider failed"
        raw_code = error.get("code") if isinstance(error.get("code"), str) else error.get("type")
        code = raw_code if isinstance(raw_code, str) and raw_code else "server_error"
        self._emit(
            "error",
            {"type": "error", "code": code, "message": message, "param": error.get("param") if isinstance(error.get("param"), str) else None},
        )
        self._failed = True
        self._close_reasoning()
        self._close_message()
        self._close_tools()
        response = self._shell()
        response["status"] = "failed"
        response["error"] = {"code": _failed_code(code), "message": message}
        response["output"] = [item for item in self._output if item is not None]
        response["usage"] = _usage(self._usage)
        self._emit("response.failed", {"type": "response.failed", "response": response})
        self._done = True


def _failed_code(code: str) -> str:
    """`response.error.code` is an enumeration in the Responses API; provider codes outside it become server_error."""
    if code in _FAILED_CODES:
        return code
    return "rate_limit_exceeded" if "rate_limit" in code else "server_error"


# ------------------------------------------------------------------------------------------------- error

_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_MAX_MESSAGE = 4096


def translate_error(status: int, body: bytes) -> bytes:
    """A provider's error body (OpenAI shape, or the variants OpenAI-compatible providers send) -> the
    Responses API's error body `{"error": {"message", "type", "param", "code"}}`. The caller keeps `status`."""
    message, kind, param, code = "", None, None, None
    try:
        parsed: object = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        parsed = None
        message = body.decode("utf-8", "replace").strip()
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
        parsed = parsed[0]  # Gemini wraps its error in a list
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, str):
            message = error
        elif isinstance(error, dict):
            raw = error.get("message", error.get("detail"))
            message = raw if isinstance(raw, str) else orjson.dumps(raw).decode() if raw is not None else ""
            kind = error.get("type") if isinstance(error.get("type"), str) else None
            param = error.get("param") if isinstance(error.get("param"), str) else None
            raw_code = error.get("code")
            if isinstance(raw_code, str):
                code = raw_code
            elif isinstance(error.get("status"), str):
                code = error["status"]  # Gemini: {"code": 400, "status": "INVALID_ARGUMENT"}
    if kind in (None, "error"):
        kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    if code is None and status == 429:
        code = "rate_limit_exceeded"
    if not message:
        message = f"the provider answered HTTP {status}"
    return orjson.dumps({"error": {"message": message[:_MAX_MESSAGE], "type": kind, "param": param, "code": code}})
