"""Local mock LLM providers: the outside world in tests and in ``plano-extproc up --mock-providers``.

One ``MockProvider`` serves, on one port, with the standard library only (HTTP/1.1, chunked SSE):

* OpenAI Chat Completions: ``POST /v1/chat/completions`` and any other path ending in
  ``/chat/completions`` (``/openai/v1/...`` groq, ``/v1beta/openai/...`` gemini, azure deployments);
* OpenAI Responses: any path ending in ``/responses``;
* Anthropic Messages: any path ending in ``/messages``.

Each answer says who answered ("mock-openai answered as gpt-4o") so a test can tell which provider and
model served a request. ``stream: true`` answers are server-sent events, flushed one chunk at a time
(``chunk_delay`` seconds apart); ``answer_delay`` holds every answer back that long.

Tool use, in each API's own wire format (OpenAI Chat ``tool_calls`` with streamed argument deltas,
Anthropic ``tool_use`` blocks with ``input_json_delta``, Responses ``function_call`` items with
``response.function_call_arguments.delta``), by a deterministic rule real agents do not loop on:

* the request declares tools and its latest turn is a user turn (not a tool result) that asks for
  declared tools by name — "use", "call", "run" or "invoke", then optionally "the", then the name (case
  as declared, a whole word; ``<system-reminder>`` blocks are harness text and not read) — or says "use
  the tool" (the first declared tool): the answer is one call to each tool asked for, in the order asked
  (only the first when parallel calls are turned off). Agents' prompts and tool lists mention tool names
  all the time; only such a request calls one. A tool's arguments are the JSON object
  written after its name (``Read {"file_path": "/tmp/x"}``); without one, its schema's required
  properties filled in (strings get the text after the name). ``tool_choice`` is honoured: none →
  text, a forced tool → that tool, required/any → the first declared tool when none is named;
* the latest turn holds tool results: the answer is text that quotes them
  ("mock-openai answered as gpt-4o with tool results: <result> | <result>");
* otherwise: the text answer above.

Anthropic answers start with a signed thinking block ("mock-anthropic thinking as <model>", signature
``mock-signature-<n>``) when the request turns ``thinking`` on (enabled or adaptive).

Control, in process or over HTTP:

* ``provider.requests`` / ``GET /__mock/requests``: every request (method, path, lowercased headers,
  parsed JSON body, the raw body bytes (in process only), the status answered);
* ``provider.fail_next(model=None, status=429, times=1, retry_after=None)`` /
  ``POST /__mock/fail {"model": "gpt-4o" | null, "status": 429, "times": 1, "retry_after": null}``:
  the next ``times`` matching requests fail with ``status`` and an OpenAI- or Anthropic-shaped error;
* ``provider.reset()`` / ``POST /__mock/reset``: forget requests and pending failures;
* ``provider.gzip = True``: answers are gzip-compressed when the request accepts gzip (real providers
  compress; every SDK asks for it); ``"always"``: whatever the request accepts.

Run one: ``python -m plano_devtools.mock_providers --port 8001 --name mock-openai``.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import re
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_ids = itertools.count(1)


@dataclass
class _FailRule:
    model: str | None
    status: int
    times: int
    retry_after: float | int | None = None


def _error_kind(status: int, anthropic: bool) -> tuple[str, str]:
    """(error type, OpenAI code) for a status."""
    if status == 429:
        return ("rate_limit_error", "rate_limit_exceeded")
    if status == 401:
        return ("authentication_error", "invalid_api_key")
    if status == 403:
        return ("permission_error", "permission_denied")
    if status == 404:
        return ("not_found_error", "not_found")
    if status == 529 and anthropic:
        return ("overloaded_error", "overloaded")
    if status >= 500:
        return ("api_error" if anthropic else "server_error", "server_error")
    return ("invalid_request_error", "invalid_request")


def error_body(status: int, message: str, *, anthropic: bool) -> dict[str, Any]:
    kind, code = _error_kind(status, anthropic)
    if anthropic:
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _pieces(text: str) -> list[str]:
    """Split the reply into streamed pieces (words with their trailing space)."""
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


# ---------------------------------------------------------------------------------------- tool use

_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)
_USE_THE_TOOL = re.compile(r"\buse the tools?\b", re.IGNORECASE)


@dataclass
class ToolCall:
    id: int  # position in the answer
    name: str
    arguments: str  # JSON text


@dataclass
class Reply:
    """What the mock answers, before it is written in an API's wire format."""

    text: str
    calls: list[ToolCall]
    #: why the text ended: "end", "length" (the request's token limit) or "stop_sequence"
    stop: str = "end"
    stop_sequence: str | None = None


def _text_parts(content: Any, kinds: tuple[str, ...] = ("text", "input_text", "output_text")) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [p["text"] for p in content if isinstance(p, dict) and p.get("type") in kinds and isinstance(p.get("text"), str)]


def _result_text(content: Any) -> str:
    return "\n".join(_text_parts(content)) if not isinstance(content, str) else content


def _declared_tools(kind: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, JSON schema) of every function tool the request declares, in order."""
    out: list[tuple[str, dict[str, Any]]] = []
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        if kind == "chat":
            fn = tool.get("function") if tool.get("type") == "function" else None
            name, schema = (fn or {}).get("name"), (fn or {}).get("parameters")
        elif kind == "messages":
            name, schema = tool.get("name"), tool.get("input_schema")
        else:
            name, schema = (tool.get("name"), tool.get("parameters")) if tool.get("type") == "function" else (None, None)
        if isinstance(name, str) and name:
            out.append((name, schema if isinstance(schema, dict) else {}))
    return out


def _latest_turn(kind: str, body: dict[str, Any]) -> tuple[str | None, list[str]]:
    """(the latest user turn's text, or None; the tool results the latest turn carries)."""
    if kind == "chat":
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        results: list[str] = []
        for m in reversed(messages):
            if m.get("role") != "tool":
                break
            results.insert(0, _result_text(m.get("content")))
        if results:
            return None, results
        last = messages[-1] if messages else {}
        return ("\n".join(_text_parts(last.get("content"))) if last.get("role") == "user" else None), []
    if kind == "messages":
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        last = messages[-1] if messages else {}
        if last.get("role") != "user":
            return None, []
        content = last.get("content")
        blocks = content if isinstance(content, list) else []
        results = [_result_text(b.get("content")) for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
        if results:
            return None, results
        return "\n".join(_text_parts(content)), []
    items = body.get("input")
    if isinstance(items, str):
        return items, []
    items = [i for i in items or [] if isinstance(i, dict)]
    results = []
    for item in reversed(items):
        if item.get("type") not in ("function_call_output", "custom_tool_call_output"):
            break
        results.insert(0, _result_text(item.get("output")))
    if results:
        return None, results
    last = items[-1] if items else {}
    if last.get("role") == "user" and last.get("type", "message") == "message":
        return "\n".join(_text_parts(last.get("content"))), []
    return None, []


def _tool_choice(kind: str, body: dict[str, Any]) -> tuple[str, str | None]:
    """("auto" | "none" | "required" | "forced", the forced tool's name)."""
    choice = body.get("tool_choice")
    if choice is None:
        return "auto", None
    if isinstance(choice, str):
        return ({"none": "none", "required": "required", "any": "required"}.get(choice, "auto"), None)
    if not isinstance(choice, dict):
        return "auto", None
    kind_of = choice.get("type")
    if kind_of in ("none", "any", "auto"):
        return {"none": "none", "any": "required", "auto": "auto"}[kind_of], None
    if kind_of == "tool":
        return "forced", choice.get("name")
    if kind_of == "function":
        name = (choice.get("function") or {}).get("name") if kind == "chat" else choice.get("name")
        return "forced", name
    return "auto", None


def _parallel_allowed(kind: str, body: dict[str, Any]) -> bool:
    if kind == "messages":
        choice = body.get("tool_choice")
        return not (isinstance(choice, dict) and choice.get("disable_parallel_tool_use"))
    return body.get("parallel_tool_calls") is not False


def _fill(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """The required properties of `schema`, filled in: strings get `text`."""
    properties: dict[str, Any] = schema.get("properties") or {}
    out: dict[str, Any] = {}
    for name in schema.get("required") or []:
        kind = (properties.get(name) or {}).get("type")
        kind = kind[0] if isinstance(kind, list) and kind else kind
        out[name] = {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}.get(kind, text) if isinstance(kind, str) else text
    return out


def _arguments(segment: str, schema: dict[str, Any], fallback: str) -> str:
    start = segment.find("{")
    if start >= 0:
        try:
            value, _ = json.JSONDecoder().raw_decode(segment[start:])
        except ValueError:
            value = None
        if isinstance(value, dict):
            return json.dumps(value)
    return json.dumps(_fill(schema, segment.strip(" :,.\n") or fallback))


def _limited(kind: str, body: dict[str, Any], text: str) -> Reply:
    """A text answer cut by the request's stop sequences or its token limit (one token per streamed piece)."""
    stops = body.get("stop") if kind == "chat" else body.get("stop_sequences") if kind == "messages" else None
    stops = [stops] if isinstance(stops, str) else [s for s in stops or [] if isinstance(s, str) and s]
    found = sorted((text.find(s), s) for s in stops if s in text)
    if found:
        at, seq = found[0]
        text, stop, stop_sequence = text[:at], "stop_sequence", seq
    else:
        stop, stop_sequence = "end", None
    names = {"chat": ("max_completion_tokens", "max_tokens"), "messages": ("max_tokens",), "responses": ("max_output_tokens",)}[kind]
    limit = next((body[n] for n in names if isinstance(body.get(n), int)), None)
    pieces = _pieces(text)
    if limit is not None and 0 < limit < len(pieces):
        return Reply("".join(pieces[:limit]), [], "length")
    return Reply(text, [], stop, stop_sequence)


def plan_reply(kind: str, body: dict[str, Any], text: str) -> Reply:
    """The mock's answer to `body` (an API `kind`: chat | messages | responses); `text` is its plain answer."""
    tools = _declared_tools(kind, body)
    user_text, results = _latest_turn(kind, body)
    if user_text is not None:
        user_text = _REMINDER.sub("", user_text)
    if results:
        return _limited(kind, body, f"{text} with tool results: " + " | ".join(results))
    choice, forced = _tool_choice(kind, body)
    if not tools or user_text is None or choice == "none":
        return _limited(kind, body, text)
    schemas = dict(tools)
    found: list[tuple[int, int, str]] = []  # (start, end of the name, name)
    for name in schemas:
        match = re.search(rf"(?i:\b(?:use|call|run|invoke)\s+(?:the\s+)?)(?<![\w-]){re.escape(name)}(?![\w-])", user_text)
        if match:
            found.append((match.start(), match.end(), name))
    found.sort()
    named = [(name, user_text[end : (found[i + 1][0] if i + 1 < len(found) else len(user_text))]) for i, (_, end, name) in enumerate(found)]
    if choice == "forced":
        named = [n for n in named if n[0] == forced] or ([(forced, "")] if forced in schemas else [])
    if not named and (choice in ("required", "forced") or _USE_THE_TOOL.search(user_text)):
        first = tools[0][0]
        match = _USE_THE_TOOL.search(user_text)
        named = [(first, user_text[match.end() :] if match else user_text)]
    if not named:
        return _limited(kind, body, text)
    if not _parallel_allowed(kind, body):
        named = named[:1]
    calls = [ToolCall(i, name, _arguments(segment, schemas[name], user_text)) for i, (name, segment) in enumerate(named)]
    return Reply(text, calls)


def _argument_pieces(arguments: str) -> list[str]:
    """The arguments streamed in three pieces (fewer when shorter)."""
    size = max(1, -(-len(arguments) // 3))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]


class _Server(ThreadingHTTPServer):
    """A provider's server: one thread per connection; a client that hangs up mid-answer (a cancelled
    stream, Envoy giving up on an attempt) ends that thread quietly, as a real provider's server does,
    instead of printing a traceback into `up`'s output."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class MockProvider:
    """A fake OpenAI/Anthropic-compatible provider on one local port (thread-based, stdlib only)."""

    def __init__(self, name: str = "mock", *, chunk_delay: float = 0.0, host: str = "127.0.0.1") -> None:
        self.name = name
        self.chunk_delay = chunk_delay
        #: answer gzip-compressed (JSON and SSE) when the request accepts gzip, as the real providers do;
        #: "always": even when it does not (a proxy in between that compresses anyway)
        self.gzip: bool | str = False
        #: seconds to wait before answering at all (a slow or hung provider)
        self.answer_delay = 0.0
        self.host = host
        self.port: int | None = None
        self.requests: list[dict[str, Any]] = []
        self._rules: list[_FailRule] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------- lifecycle

    def start(self, port: int = 0) -> int:
        if self._server is not None:
            raise RuntimeError("MockProvider already started")
        self._server = _Server((self.host, port), _make_handler(self))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"mock-{self.name}", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def serve_forever(self, port: int = 0) -> None:
        """Foreground serving (for ``main``)."""
        self._server = _Server((self.host, port), _make_handler(self))
        self.port = self._server.server_address[1]
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()
            self._server = None

    def __enter__(self) -> MockProvider:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------------------------ control

    def fail_next(self, model: str | None = None, status: int = 429, times: int = 1, retry_after: float | int | None = None) -> None:
        with self._lock:
            self._rules.append(_FailRule(model, int(status), int(times), retry_after))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._rules.clear()

    def _take_failure(self, model: str | None) -> _FailRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.times > 0 and (rule.model is None or rule.model == model):
                    rule.times -= 1
                    if rule.times <= 0:
                        self._rules.remove(rule)
                    return rule
        return None

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)

    def requests_snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.requests]

    def reply_text(self, model: str) -> str:
        return f"{self.name} answered as {model}"


# ------------------------------------------------------------------------------------------ handler


def _make_handler(provider: MockProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        mock = provider

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mock: MockProvider
    _gzip: Any = None
    server_version = "plano-mock/1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # ------------------------------------------------------------------------------------- plumbing

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _compressing(self) -> bool:
        return self.mock.gzip == "always" or (self.mock.gzip is True and "gzip" in (self.headers.get("accept-encoding") or "").lower())

    def _send_json(self, status: int, payload: Any, extra_headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        if self._compressing():
            data = gzip.compress(data)
            self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(data)))
        for key, value in (extra_headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self._gzip = zlib.compressobj(wbits=16 + zlib.MAX_WBITS) if self._compressing() else None
        if self._gzip is not None:
            self.send_header("content-encoding", "gzip")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        if self._gzip is not None:  # each event flushed whole, as a compressing server streams
            data = self._gzip.compress(data) + self._gzip.flush(zlib.Z_SYNC_FLUSH)
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, payload: Any, event: str | None = None, delay: bool = True) -> None:
        if delay and self.mock.chunk_delay > 0:
            time.sleep(self.mock.chunk_delay)
        text = f"event: {event}\n" if event else ""
        text += "data: " + (payload if isinstance(payload, str) else json.dumps(payload)) + "\n\n"
        self._chunk(text.encode())

    def _end_sse(self) -> None:
        if self._gzip is not None:
            tail = self._gzip.flush()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(tail), tail))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -------------------------------------------------------------------------------------- verbs

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/__mock/requests":
            self._send_json(200, [{k: v for k, v in r.items() if k != "raw"} for r in self.mock.requests_snapshot()])
        elif path in ("/__mock/health", "/health"):
            self._send_json(200, {"status": "ok", "name": self.mock.name})
        elif path.endswith("/models"):
            self._send_json(200, {"object": "list", "data": []})
        else:
            self._send_json(404, error_body(404, f"no route for GET {path}", anthropic=False))

    def do_POST(self) -> None:
        self._gzip = None
        path = urlsplit(self.path).path
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None

        if path.startswith("/__mock/"):
            self._control(path, body if isinstance(body, dict) else {})
            return

        anthropic = path.endswith("/messages")
        model = body.get("model") if isinstance(body, dict) else None
        if not model and "/deployments/" in path:  # azure: the deployment names the model
            model = path.split("/deployments/", 1)[1].split("/", 1)[0]
        model = model or "unknown"
        entry = {
            "method": "POST",
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
            "raw": raw,
            "time": time.time(),
        }

        if path.endswith("/chat/completions"):
            kind = "chat"
        elif path.endswith("/responses"):
            kind = "responses"
        elif anthropic:
            kind = "messages"
        else:
            entry["status"] = 404
            self.mock._record(entry)
            self._send_json(404, error_body(404, f"no route for POST {path}", anthropic=False))
            return
        if not isinstance(body, dict):
            entry["status"] = 400
            self.mock._record(entry)
            self._send_json(400, error_body(400, "request body must be a JSON object", anthropic=anthropic))
            return

        rule = self.mock._take_failure(model)
        if rule is not None:
            entry["status"] = rule.status
            self.mock._record(entry)
            headers = {"retry-after": str(rule.retry_after)} if rule.retry_after is not None else None
            message = f"{self.mock.name}: injected failure {rule.status} for {model}"
            self._send_json(rule.status, error_body(rule.status, message, anthropic=anthropic), headers)
            return

        try:
            reply = plan_reply(kind, body, self.mock.reply_text(model))
        except (TypeError, AttributeError, ValueError, KeyError) as exc:
            # a body of the wrong shape (`"tools": 5`): a real provider answers 400, it does not hang up
            entry["status"] = 400
            self.mock._record(entry)
            self._send_json(400, error_body(400, f"invalid request body: {type(exc).__name__}", anthropic=anthropic))
            return
        entry["status"] = 200
        self.mock._record(entry)
        if self.mock.answer_delay > 0:
            time.sleep(self.mock.answer_delay)
        prompt_tokens = max(1, len(raw) // 4)
        stream = bool(body.get("stream"))
        if kind == "chat":
            self._chat(body, model, reply, prompt_tokens, stream)
        elif kind == "responses":
            self._responses(model, reply, prompt_tokens, stream)
        else:
            thinking = body.get("thinking")
            self._messages(model, reply, prompt_tokens, stream, isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"))

    def _control(self, path: str, body: dict[str, Any]) -> None:
        if path == "/__mock/fail":
            self.mock.fail_next(body.get("model"), int(body.get("status", 429)), int(body.get("times", 1)), body.get("retry_after"))
            self._send_json(200, {"ok": True})
        elif path == "/__mock/reset":
            self.mock.reset()
            self._send_json(200, {"ok": True})
        else:
            self._send_json(404, error_body(404, f"unknown control path {path}", anthropic=False))

    # ------------------------------------------------------------------------------------ OpenAI chat

    def _chat(self, body: dict[str, Any], model: str, reply: Reply, prompt_tokens: int, stream: bool) -> None:
        n = next(_ids)
        rid = f"chatcmpl-mock{n}"
        created = int(time.time())
        calls = [(f"call_mock{n}_{c.id}", c) for c in reply.calls]
        text = None if calls else reply.text
        pieces = _pieces(text) if text is not None else []
        completion = len(pieces) + sum(len(_argument_pieces(c.arguments)) for _, c in calls)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}
        finish = "tool_calls" if calls else "length" if reply.stop == "length" else "stop"
        if not stream:
            message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
            if calls:
                message["tool_calls"] = [{"id": cid, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for cid, c in calls]
            self._send_json(
                200,
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                    "usage": usage,
                },
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "system_fingerprint": None}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            out = dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])
            if include_usage:
                out["usage"] = None
            return out

        self._start_sse()
        self._event(chunk({"role": "assistant", "content": "" if text is not None else None}), delay=False)
        for piece in pieces:
            self._event(chunk({"content": piece}))
        for index, (cid, c) in enumerate(calls):
            # like OpenAI: the first delta of a call carries its id and name, the arguments follow in pieces
            start = {"index": index, "id": cid, "type": "function", "function": {"name": c.name, "arguments": ""}}
            self._event(chunk({"tool_calls": [start]}))
            for piece in _argument_pieces(c.arguments):
                self._event(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        self._event(chunk({}, finish))
        if include_usage:
            self._event(dict(base, choices=[], usage=usage))
        self._event("[DONE]", delay=False)
        self._end_sse()

    # ------------------------------------------------------------------------------- OpenAI responses

    def _responses(self, model: str, reply: Reply, prompt_tokens: int, stream: bool) -> None:
        n = next(_ids)
        rid, mid = f"resp_mock{n}", f"msg_mock{n}"
        text = reply.text
        pieces = [] if reply.calls else _pieces(text)
        completion = len(pieces) + sum(len(_argument_pieces(c.arguments)) for c in reply.calls)
        usage = {
            "input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + completion,
        }
        incomplete = reply.stop == "length" and not reply.calls
        final_status = "incomplete" if incomplete else "completed"
        part = {"type": "output_text", "text": text, "annotations": []}
        item: dict[str, Any] = {"type": "message", "id": mid, "status": final_status, "role": "assistant", "content": [part]}
        calls: list[dict[str, Any]] = [
            {
                "type": "function_call",
                "id": f"fc_mock{n}_{c.id}",
                "call_id": f"call_mock{n}_{c.id}",
                "name": c.name,
                "arguments": c.arguments,
                "status": "completed",
            }
            for c in reply.calls
        ]
        output = calls or [item]

        def response(status: str, output: list[Any], with_usage: bool) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "response",
                "created_at": int(time.time()),
                "status": status,
                "error": None,
                "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
                "instructions": None,
                "metadata": {},
                "model": model,
                "output": output,
                "parallel_tool_calls": True,
                "temperature": 1.0,
                "tool_choice": "auto",
                "tools": [],
                "top_p": 1.0,
                "usage": usage if with_usage else None,
            }

        if not stream:
            self._send_json(200, response(final_status, output, True))
            return
        seq = itertools.count()

        def ev(kind: str, delay: bool = False, **fields: Any) -> None:
            self._event({"type": kind, "sequence_number": next(seq), **fields}, event=kind, delay=delay)

        self._start_sse()
        ev("response.created", response=response("in_progress", [], False))
        ev("response.in_progress", response=response("in_progress", [], False))
        if not calls:
            ev("response.output_item.added", output_index=0, item=dict(item, status="in_progress", content=[]))
            ev("response.content_part.added", item_id=mid, output_index=0, content_index=0, part={"type": "output_text", "text": "", "annotations": []})
            for piece in pieces:
                ev("response.output_text.delta", delay=True, item_id=mid, output_index=0, content_index=0, delta=piece)
            ev("response.output_text.done", item_id=mid, output_index=0, content_index=0, text=text)
            ev("response.content_part.done", item_id=mid, output_index=0, content_index=0, part=part)
            ev("response.output_item.done", output_index=0, item=item)
        for index, call in enumerate(calls):
            ev("response.output_item.added", output_index=index, item=dict(call, arguments="", status="in_progress"))
            for piece in _argument_pieces(call["arguments"]):
                ev("response.function_call_arguments.delta", delay=True, item_id=call["id"], output_index=index, delta=piece)
            ev("response.function_call_arguments.done", item_id=call["id"], output_index=index, name=call["name"], arguments=call["arguments"])
            ev("response.output_item.done", output_index=index, item=call)
        ev(f"response.{final_status}", response=response(final_status, output, True))
        self._end_sse()

    # ------------------------------------------------------------------------------ Anthropic messages

    def _messages(self, model: str, reply: Reply, prompt_tokens: int, stream: bool, thinking: bool = False) -> None:
        n = next(_ids)
        mid = f"msg_mock{n}"
        # like Claude: a short text block before the tool calls, a signed thinking block first when asked
        text = f"{reply.text}: calling " + ", ".join(c.name for c in reply.calls) if reply.calls else reply.text
        pieces = _pieces(text)
        thought = f"{self.mock.name} thinking as {model}" if thinking else ""
        signature = f"mock-signature-{n}"
        uses = [(f"toolu_mock{n}_{c.id}", c) for c in reply.calls]
        completion = len(pieces) + len(_pieces(thought) if thought else []) + sum(len(_argument_pieces(c.arguments)) for c in reply.calls)
        stop = "tool_use" if uses else {"length": "max_tokens", "stop_sequence": "stop_sequence"}.get(reply.stop, "end_turn")
        if not stream:
            content: list[dict[str, Any]] = [{"type": "thinking", "thinking": thought, "signature": signature}] if thought else []
            content.append({"type": "text", "text": text})
            content += [{"type": "tool_use", "id": uid, "name": c.name, "input": json.loads(c.arguments)} for uid, c in uses]
            self._send_json(
                200,
                {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop,
                    "stop_sequence": reply.stop_sequence,
                    "usage": {"input_tokens": prompt_tokens, "output_tokens": completion},
                },
            )
            return

        def ev(kind: str, delay: bool = False, **fields: Any) -> None:
            self._event({"type": kind, **fields}, event=kind, delay=delay)

        self._start_sse()
        ev(
            "message_start",
            message={
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": prompt_tokens, "output_tokens": 1},
            },
        )
        first = 0
        if thought:
            ev("content_block_start", index=0, content_block={"type": "thinking", "thinking": "", "signature": ""})
            for piece in _pieces(thought):
                ev("content_block_delta", delay=True, index=0, delta={"type": "thinking_delta", "thinking": piece})
            ev("content_block_delta", index=0, delta={"type": "signature_delta", "signature": signature})
            ev("content_block_stop", index=0)
            first = 1
        ev("content_block_start", index=first, content_block={"type": "text", "text": ""})
        for piece in pieces:
            ev("content_block_delta", delay=True, index=first, delta={"type": "text_delta", "text": piece})
        ev("content_block_stop", index=first)
        for index, (uid, c) in enumerate(uses, start=first + 1):
            ev("content_block_start", index=index, content_block={"type": "tool_use", "id": uid, "name": c.name, "input": {}})
            for piece in _argument_pieces(c.arguments):
                ev("content_block_delta", delay=True, index=index, delta={"type": "input_json_delta", "partial_json": piece})
            ev("content_block_stop", index=index)
        ev("message_delta", delta={"stop_reason": stop, "stop_sequence": reply.stop_sequence}, usage={"output_tokens": completion})
        ev("message_stop")
        self._end_sse()


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local mock OpenAI/Anthropic-compatible LLM provider.")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default="mock")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    args = parser.parse_args(argv)
    provider = MockProvider(args.name, chunk_delay=args.chunk_delay, host=args.host)
    print(f"{args.name} listening on http://{args.host}:{args.port}", flush=True)
    try:
        provider.serve_forever(args.port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
