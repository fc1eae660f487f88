"""The mock providers answer like OpenAI and Anthropic (checked with the official SDKs as clients)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import anthropic
import openai
import pytest

from plano_devtools.mock_providers import MockProvider


@pytest.fixture
def mock() -> Iterator[MockProvider]:
    with MockProvider("mock-openai") as provider:
        yield provider


def _openai(mock: MockProvider, prefix: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=mock.base_url + prefix, api_key="sk-test", max_retries=0, timeout=10)


def _anthropic(mock: MockProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=mock.base_url, api_key="sk-ant-test", max_retries=0, timeout=10)


def _post(url: str, payload: dict) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


MESSAGES = [{"role": "user", "content": "hello"}]


def test_chat_completions(mock: MockProvider) -> None:
    reply = _openai(mock).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content == "mock-openai answered as gpt-4o"
    assert reply.model == "gpt-4o"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens > 0


def test_chat_completions_stream_with_usage() -> None:
    with MockProvider("mock-openai", chunk_delay=0.05) as mock:
        stream = _openai(mock).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        arrivals, text, usage = [], "", None
        for chunk in stream:
            arrivals.append(time.monotonic())
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                usage = chunk.usage
    assert text == "mock-openai answered as gpt-4o"
    assert usage is not None and usage.completion_tokens > 0
    # chunks arrive one by one, not in a single burst at the end
    assert len(arrivals) >= 5
    assert arrivals[-1] - arrivals[0] >= 0.15


@pytest.mark.parametrize("prefix", ["/openai/v1", "/v1beta/openai"])
def test_chat_under_other_prefixes(mock: MockProvider, prefix: str) -> None:
    reply = _openai(mock, prefix).chat.completions.create(model="llama-3.3-70b", messages=MESSAGES)
    assert reply.choices[0].message.content == "mock-openai answered as llama-3.3-70b"
    assert mock.requests[-1]["path"] == f"{prefix}/chat/completions"


def test_responses(mock: MockProvider) -> None:
    client = _openai(mock)
    reply = client.responses.create(model="gpt-4o", input="hello")
    assert reply.output_text == "mock-openai answered as gpt-4o"
    assert reply.usage.output_tokens > 0

    events = list(client.responses.create(model="gpt-4o-mini", input="hello", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "mock-openai answered as gpt-4o-mini"
    assert events[-1].response.usage.total_tokens > 0


def test_anthropic_messages(mock: MockProvider) -> None:
    client = _anthropic(mock)
    reply = client.messages.create(model="claude-mock-1", max_tokens=64, messages=MESSAGES)
    assert reply.content[0].text == "mock-openai answered as claude-mock-1"
    assert reply.usage.output_tokens > 0 and reply.stop_reason == "end_turn"

    with client.messages.stream(model="claude-mock-1", max_tokens=64, messages=MESSAGES) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == "mock-openai answered as claude-mock-1"
    assert final.usage.output_tokens == len(pieces)


def test_anthropic_stream_event_order(mock: MockProvider) -> None:
    events = list(_anthropic(mock).messages.create(model="claude-x", max_tokens=16, messages=MESSAGES, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "content_block_delta" in kinds


def test_fail_next_openai_shape(mock: MockProvider) -> None:
    client = _openai(mock)
    mock.fail_next(model="gpt-4o", status=429, times=1)
    # another model is not affected
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.body["type"] == "rate_limit_error"
    assert info.value.body["code"] == "rate_limit_exceeded"
    # times=1: the next request succeeds
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices
    mock.fail_next(status=503, times=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert [r["status"] for r in mock.requests] == [200, 429, 200, 503, 503]


def test_fail_over_http_anthropic_shape(mock: MockProvider) -> None:
    status, _, _ = _post(mock.base_url + "/__mock/fail", {"model": None, "status": 429, "times": 1, "retry_after": 3})
    assert status == 200
    status, headers, body = _post(
        mock.base_url + "/v1/messages", {"model": "claude-x", "max_tokens": 8, "messages": MESSAGES}
    )
    assert status == 429
    assert {k.lower(): v for k, v in headers.items()}["retry-after"] == "3"
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"

    mock.fail_next(status=529)
    with pytest.raises(anthropic.APIStatusError) as info:
        _anthropic(mock).messages.create(model="claude-x", max_tokens=8, messages=MESSAGES)
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"


def test_records_requests(mock: MockProvider) -> None:
    _openai(mock).chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={"X-Custom": "yes"})
    entry = mock.requests[-1]
    assert entry["method"] == "POST" and entry["path"] == "/v1/chat/completions"
    assert entry["headers"]["authorization"] == "Bearer sk-test"
    assert entry["headers"]["x-custom"] == "yes"
    assert entry["body"]["model"] == "gpt-4o" and entry["body"]["messages"] == MESSAGES

    with urllib.request.urlopen(mock.base_url + "/__mock/requests", timeout=5) as resp:
        remote = json.loads(resp.read())
    assert remote[-1]["body"]["model"] == "gpt-4o"
    assert remote[-1]["headers"]["x-custom"] == "yes"

    mock.fail_next(status=500, times=5)
    assert _post(mock.base_url + "/__mock/reset", {})[0] == 200
    assert mock.requests == []
    assert _openai(mock).chat.completions.create(model="gpt-4o", messages=MESSAGES).choices  # failures forgotten


def test_main_runs_a_provider() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "plano_devtools.mock_providers", "--port", str(port), "--name", "mock-cli"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/__mock/health", timeout=1) as resp:
                    assert json.loads(resp.read())["name"] == "mock-cli"
                    break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        status, _, body = _post(f"http://127.0.0.1:{port}/v1/chat/completions", {"model": "m", "messages": MESSAGES})
        assert status == 200 and body["choices"][0]["message"]["content"] == "mock-cli answered as m"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
