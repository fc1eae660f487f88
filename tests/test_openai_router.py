"""The OpenAI-compatible router backend against a tiny local fake of an Arch-Router chat endpoint
(the fake stands in for vLLM / Ollama / Triton's OpenAI frontend serving Arch-Router)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from pydantic import SecretStr

from plano_extproc.config import OpenAIRouterTuning, RouterConfig
from plano_extproc.conversation import Turn
from plano_extproc.router.base import RouterError, RouteSpec
from plano_extproc.router.openai_compatible import OpenAICompatibleRouter, api_base
from plano_extproc.router.prompt import build_router_prompt
from tests.conftest import DEMO_CONFIG

ROUTES = [RouteSpec("code_generation", "writing code"), RouteSpec("complex_reasoning", "multi-step reasoning")]
CODE = [Turn("user", "Write a Python function that implements binary search")]


class FakeArchRouter:
    """POST /v1/chat/completions -> Arch-Router-style content. Picks `code_generation` when the latest
    user turn mentions code, `other` otherwise, unless `reply` / `status` / `delay` say otherwise."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.connections: set[int] = set()
        self.reply: str | None = None
        self.status = 200
        self.delay = 0.0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is visible

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "katanemo/Arch-Router-1.5B"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                fake.connections.add(self.client_address[1])
                fake.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                if fake.delay:
                    time.sleep(fake.delay)
                if fake.status != 200:
                    self._send(fake.status, {"error": {"message": "boom"}})
                    return
                content = fake.reply
                if content is None:
                    prompt = body["messages"][-1]["content"]
                    conversation = json.loads(prompt.split("<conversation>\n", 1)[1].split("\n</conversation>", 1)[0])
                    latest = conversation[-1]["content"].lower()
                    content = json.dumps({"route": "code_generation" if "function" in latest or "code" in latest else "other"})
                self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]})

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda *_: None  # a client that timed out and left is expected
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    server = FakeArchRouter()
    yield server
    server.close()


def settings(url: str, **over) -> RouterConfig:
    return RouterConfig(backend="openai", url=url, model="katanemo/Arch-Router-1.5B", timeout_ms=over.pop("timeout_ms", 2000), **over)


def test_api_base_does_not_double_v1():
    assert api_base("http://h:8000") == "http://h:8000/v1"
    assert api_base("http://h:8000/v1/") == "http://h:8000/v1"
    assert api_base("https://h/openai/v1") == "https://h/openai/v1"


@pytest.mark.parametrize("suffix", ["", "/v1"])
async def test_sends_the_router_prompt_as_one_user_message(fake, suffix):
    router = OpenAICompatibleRouter(settings(fake.url + suffix, openai=OpenAIRouterTuning(api_key=SecretStr("sk-router"), max_tokens=12)))
    try:
        assert await router.choose_route(ROUTES, CODE) == "code_generation"
        assert await router.choose_route(ROUTES, [Turn("user", "What is the capital of France?")]) is None
    finally:
        await router.close()
    sent = fake.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer sk-router"
    body = sent["body"]
    assert body["model"] == "katanemo/Arch-Router-1.5B" and body["temperature"] == 0.01 and body["max_tokens"] == 12
    assert body["messages"] == [{"role": "user", "content": build_router_prompt(ROUTES, CODE)}]


async def test_reuses_one_connection_and_sends_no_key_when_none(fake):
    router = OpenAICompatibleRouter(settings(fake.url))
    try:
        for _ in range(5):
            assert await router.choose_route(ROUTES, CODE) == "code_generation"
        assert await router.ready()
    finally:
        await router.close()
    assert len(fake.connections) == 1
    assert "authorization" not in fake.requests[0]["headers"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [('{"route": "complex_reasoning"}', "complex_reasoning"), ("```json\n{'route': 'code_generation'}\n```", "code_generation"),
     ('{"route": "other"}', None), ('{"route": "not_a_route"}', None), ("", None)],
)
async def test_replies_are_parsed_with_the_shared_parser(fake, reply, expected):
    fake.reply = reply
    router = OpenAICompatibleRouter(settings(fake.url))
    try:
        assert await router.choose_route(ROUTES, CODE) == expected
    finally:
        await router.close()


@pytest.mark.parametrize(("status", "reply", "kind"), [(200, "I think code", "bad_reply"), (500, None, "error"), (503, None, "unavailable")])
async def test_failures_map_to_router_error_kinds(fake, status, reply, kind):
    fake.status, fake.reply = status, reply
    router = OpenAICompatibleRouter(settings(fake.url))
    try:
        with pytest.raises(RouterError) as exc:
            await router.choose_route(ROUTES, CODE)
        assert exc.value.kind == kind
    finally:
        await router.close()


async def test_down_and_slow_servers(fake):
    from plano_devtools.local import free_port

    down = OpenAICompatibleRouter(settings(f"http://127.0.0.1:{free_port()}"))
    fake.delay = 1.0
    slow = OpenAICompatibleRouter(settings(fake.url, timeout_ms=200))
    try:
        with pytest.raises(RouterError) as exc:
            await down.choose_route(ROUTES, CODE)
        assert exc.value.kind == "unavailable"
        assert not await down.ready()
        await down.warm_up(ROUTES)  # logs, never raises
        with pytest.raises(RouterError) as exc:
            await slow.choose_route(ROUTES, CODE)
        assert exc.value.kind == "timeout"
    finally:
        await down.close()
        await slow.close()


@pytest.mark.integration
def test_gateway_with_the_openai_backend(fake):
    from tests.harness import RunningGateway, post

    data = yaml.safe_load(DEMO_CONFIG.read_text())
    data["routing"]["router"] = {"backend": "openai", "url": fake.url, "model": "katanemo/Arch-Router-1.5B",
                                 "timeout_ms": 1000, "breaker_failures": 1, "breaker_open_seconds": 30,
                                 "decision_cache_seconds": 0}
    gw = RunningGateway(yaml.safe_dump(data))
    try:
        status, _, d = post(gw, "/routing/v1/chat/completions", {"messages": [{"role": "user", "content": CODE[0].content}]})
        assert status == 200 and (d["route"], d["source"]) == ("code_generation", "router")
        fake.reply = "not json at all"  # garbage is a failure, not a route: the embedded router decides
        status, _, d = post(gw, "/routing/v1/chat/completions", {"messages": [{"role": "user", "content": CODE[0].content}]})
        assert status == 200 and (d["route"], d["source"]) == ("code_generation", "fallback")
        assert len(fake.requests) == 2  # one POST each (the warm-up is a GET)
    finally:
        gw.close()
