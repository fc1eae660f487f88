"""A running gateway for integration tests (real Envoy + ext_proc + mock providers) and small clients."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from typing import Any

import anthropic
import openai

from plano_devtools.local import LocalGateway, free_port

CLAUDE = "claude-sonnet-4-20250514"
CODE = "Write a Python function that implements binary search"
REASONING = "Solve this step by step: a train leaves at 3pm at 60 mph and another at 4pm at 80 mph; when does the second catch up, and why?"
FRANCE = "What is the capital of France?"


class SilentServer:
    """Accepts TCP connections and never answers: a router or provider that hangs, deterministically."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(conn)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        for conn in self.held:
            conn.close()
        self.sock.close()


def hung_router_config(config_text: str, router_url: str, fallback: str = "default") -> str:
    """The config with its router replaced by an OpenAI-compatible one at `router_url` (a SilentServer)
    and a 300 ms timeout: every router call times out."""
    router = f"  router: {{backend: openai, url: '{router_url}', model: arch-router, timeout_ms: 300, fallback: {fallback}}}\n"
    return config_text.replace("routing:\n", "routing:\n" + router, 1)


class RunningGateway:
    """Runs a LocalGateway on a background event loop so synchronous SDK clients can call it."""

    def __init__(self, config_text: str, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.gateway = LocalGateway(config_text, env={}, mock_providers=True, listener_port=free_port(), **options)
        asyncio.run_coroutine_threadsafe(self.gateway.start(), self.loop).result(120)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.gateway.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def openai_mock(self):
        return self.gateway.mocks["openai"]

    @property
    def anthropic_mock(self):
        return self.gateway.mocks["anthropic"]


def post(gw, path: str, body: object, headers: dict | None = None, raw: bytes | None = None) -> tuple[int, dict, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(gw.url + path, data=data, method="POST", headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        payload = err.read()
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = {"raw": payload.decode(errors="replace")}
        return err.code, dict(err.headers), parsed


def oai(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="client-own-key", max_retries=0, timeout=30)


def claude(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="client-own-key", max_retries=0, timeout=30)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def stop_process(proc: subprocess.Popen) -> int:
    """SIGTERM (if it still runs), its exit status within 30 s, else SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)
