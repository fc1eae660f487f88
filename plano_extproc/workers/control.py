"""The supervisor ↔ worker control channel: HTTP/1.1 over a Unix socket in the supervisor's private work
directory, one request per connection.

Each worker serves it (`ControlServer`) with its metrics (``GET /metrics``, the worker's own registry in
Prometheus' text format, its pid in ``x-plano-worker-pid``), its state (``GET /status``) and the config
commands of a reload (``POST /prepare``, ``/commit``, ``/abort``, ``/revert``, ``/forget``, JSON bodies).
The supervisor calls it with `call` (blocking: run it in a thread from a coroutine). Nothing here is
reachable from outside the work directory (mode 0700).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

log = logging.getLogger(__name__)

#: a request's head and body are small (a path, a few JSON fields)
MAX_REQUEST_BYTES = 1024 * 1024
PID_HEADER = "x-plano-worker-pid"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> object:
        return orjson.loads(self.body) if self.body else None


def json_reply(status: int, payload: object) -> Reply:
    return Reply(status, orjson.dumps(payload))


Handler = Callable[[str, str, bytes], Awaitable[Reply]]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 409: "Conflict", 422: "Unprocessable Entity", 500: "Internal Server Error"}


class ControlServer:
    """A minimal HTTP server on a Unix socket; `handler(method, path, body)` answers every request."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a crashed predecessor's
        self._server = await asyncio.start_unix_server(self._serve, self.path)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length > MAX_REQUEST_BYTES:
                raise ValueError("request too large")
            body = await reader.readexactly(length) if length else b""
            try:
                reply = await self.handler(method, path, body)
            except Exception as exc:  # a command that failed answers 500, the channel stays up
                log.exception("control %s %s failed", method, path)
                reply = json_reply(500, {"error": str(exc) or type(exc).__name__})
            extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
            writer.write(
                f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}\r\ncontent-type: {reply.content_type}\r\n"
                f"content-length: {len(reply.body)}\r\n{extra}connection: close\r\n\r\n".encode("latin-1")
                + reply.body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (the workers' control sockets, Envoy's admin socket)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def call(path: str, method: str, target: str, payload: object | None = None, timeout: float = 5.0) -> Reply:
    """One request to the control socket at `path` (blocking). Raises OSError when nobody answers."""
    conn = UnixHTTPConnection(path, timeout)
    try:
        body = orjson.dumps(payload) if payload is not None else None
        conn.request(method, target, body=body, headers={"content-type": "application/json"} if body else {})
        response = conn.getresponse()
        data = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Reply(response.status, data, headers.get("content-type", ""), headers)
    except http.client.HTTPException as exc:
        raise OSError(f"control socket {path}: {exc}") from exc
    finally:
        conn.close()
