"""Local mock LLM providers: the outside world in tests and in ``plano-extproc up --mock-providers``.

One ``MockProvider`` serves, on one port, with the standard library only (HTTP/1.1, chunked SSE):

* OpenAI Chat Completions: ``POST /v1/chat/completions`` and any other path ending in
  ``/chat/completions`` (``/openai/v1/...`` groq, ``/v1beta/openai/...`` gemini, azure deployments);
* OpenAI Responses: any path ending in ``/responses``;
* Anthropic Messages: any path ending in ``/messages``.

Each answer says who answered ("mock-openai answered as gpt-4o") so a test can tell which provider and
model served a request. ``stream: true`` answers are server-sent events, flushed one chunk at a time
(``chunk_delay`` seconds apart); ``answer_delay`` holds every answer back that long.

Control, in process or over HTTP:

* ``provider.requests`` / ``GET /__mock/requests``: every request (method, path, lowercased headers,
  parsed JSON body, the raw body bytes (in process only), the status answered);
* ``provider.fail_next(model=None, status=429, times=1, retry_after=None)`` /
  ``POST /__mock/fail {"model": "gpt-4o" | null, "status": 429, "times": 1, "retry_after": null}``:
  the next ``times`` matching requests fail with ``status`` and an OpenAI- or Anthropic-shaped error;
* ``provider.reset()`` / ``POST /__mock/reset``: forget requests and pending failures.

Run one: ``python -m plano_devtools.mock_providers --port 8001 --name mock-openai``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
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


class MockProvider:
    """A fake OpenAI/Anthropic-compatible provider on one local port (thread-based, stdlib only)."""

    def __init__(self, name: str = "mock", *, chunk_delay: float = 0.0, host: str = "127.0.0.1") -> None:
        self.name = name
        self.chunk_delay = chunk_delay
        #: seconds to wait before answering at all (a slow or hung provider)
        self.answer_delay = 0.0
        self.host = host
        self.port: int | None = None
        self.requests: list[dict[str, Any]] = []
        self._rules: list[_FailRule] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------- lifecycle

    def start(self, port: int = 0) -> int:
        if self._server is not None:
            raise RuntimeError("MockProvider already started")
        self._server = ThreadingHTTPServer((self.host, port), _make_handler(self))
        self._server.daemon_threads = True
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
        self._server = ThreadingHTTPServer((self.host, port), _make_handler(self))
        self._server.daemon_threads = True
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

    def fail_next(
        self, model: str | None = None, status: int = 429, times: int = 1, retry_after: float | int | None = None
    ) -> None:
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

    def _send_json(self, status: int, payload: Any, extra_headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
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
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, payload: Any, event: str | None = None, delay: bool = True) -> None:
        if delay and self.mock.chunk_delay > 0:
            time.sleep(self.mock.chunk_delay)
        text = f"event: {event}\n" if event else ""
        text += "data: " + (payload if isinstance(payload, str) else json.dumps(payload)) + "\n\n"
        self._chunk(text.encode())

    def _end_sse(self) -> None:
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

        entry["status"] = 200
        self.mock._record(entry)
        if self.mock.answer_delay > 0:
            time.sleep(self.mock.answer_delay)
        text = self.mock.reply_text(model)
        prompt_tokens = max(1, len(raw) // 4)
        stream = bool(body.get("stream"))
        if kind == "chat":
            self._chat(body, model, text, prompt_tokens, stream)
        elif kind == "responses":
            self._responses(model, text, prompt_tokens, stream)
        else:
            self._messages(model, text, prompt_tokens, stream)

    def _control(self, path: str, body: dict[str, Any]) -> None:
        if path == "/__mock/fail":
            self.mock.fail_next(
                body.get("model"), int(body.get("status", 429)), int(body.get("times", 1)), body.get("retry_after")
            )
            self._send_json(200, {"ok": True})
        elif path == "/__mock/reset":
            self.mock.reset()
            self._send_json(200, {"ok": True})
        else:
            self._send_json(404, error_body(404, f"unknown control path {path}", anthropic=False))

    # ------------------------------------------------------------------------------------ OpenAI chat

    def _chat(self, body: dict[str, Any], model: str, text: str, prompt_tokens: int, stream: bool) -> None:
        rid = f"chatcmpl-mock{next(_ids)}"
        created = int(time.time())
        pieces = _pieces(text)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces), "total_tokens": prompt_tokens + len(pieces)}
        if not stream:
            self._send_json(
                200,
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text, "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
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
        self._event(chunk({"role": "assistant", "content": ""}), delay=False)
        for piece in pieces:
            self._event(chunk({"content": piece}))
        self._event(chunk({}, "stop"))
        if include_usage:
            self._event(dict(base, choices=[], usage=usage))
        self._event("[DONE]", delay=False)
        self._end_sse()

    # ------------------------------------------------------------------------------- OpenAI responses

    def _responses(self, model: str, text: str, prompt_tokens: int, stream: bool) -> None:
        n = next(_ids)
        rid, mid = f"resp_mock{n}", f"msg_mock{n}"
        pieces = _pieces(text)
        usage = {
            "input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": len(pieces),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + len(pieces),
        }
        part = {"type": "output_text", "text": text, "annotations": []}
        item = {"type": "message", "id": mid, "status": "completed", "role": "assistant", "content": [part]}

        def response(status: str, output: list[Any], with_usage: bool) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "response",
                "created_at": int(time.time()),
                "status": status,
                "error": None,
                "incomplete_details": None,
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
            self._send_json(200, response("completed", [item], True))
            return
        seq = itertools.count()

        def ev(kind: str, delay: bool = False, **fields: Any) -> None:
            self._event({"type": kind, "sequence_number": next(seq), **fields}, event=kind, delay=delay)

        self._start_sse()
        ev("response.created", response=response("in_progress", [], False))
        ev("response.in_progress", response=response("in_progress", [], False))
        ev("response.output_item.added", output_index=0, item=dict(item, status="in_progress", content=[]))
        ev("response.content_part.added", item_id=mid, output_index=0, content_index=0,
           part={"type": "output_text", "text": "", "annotations": []})
        for piece in pieces:
            ev("response.output_text.delta", delay=True, item_id=mid, output_index=0, content_index=0, delta=piece)
        ev("response.output_text.done", item_id=mid, output_index=0, content_index=0, text=text)
        ev("response.content_part.done", item_id=mid, output_index=0, content_index=0, part=part)
        ev("response.output_item.done", output_index=0, item=item)
        ev("response.completed", response=response("completed", [item], True))
        self._end_sse()

    # ------------------------------------------------------------------------------ Anthropic messages

    def _messages(self, model: str, text: str, prompt_tokens: int, stream: bool) -> None:
        mid = f"msg_mock{next(_ids)}"
        pieces = _pieces(text)
        if not stream:
            self._send_json(
                200,
                {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": prompt_tokens, "output_tokens": len(pieces)},
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
        ev("content_block_start", index=0, content_block={"type": "text", "text": ""})
        for piece in pieces:
            ev("content_block_delta", delay=True, index=0, delta={"type": "text_delta", "text": piece})
        ev("content_block_stop", index=0)
        ev("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None}, usage={"output_tokens": len(pieces)})
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
