"""The mock providers answer like OpenAI and Anthropic (checked with the official SDKs as clients)."""

from __future__ import annotations

import gzip
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


# ----------------------------------------------------------------------------------------------- tool use

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}
TIME = {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}
ASK_BOTH = 'Use get_weather {"city": "Paris", "days": 2} and then call get_time {"tz": "Europe/Paris"} please'


def _chat_tools() -> list[dict]:
    return [{"type": "function", "function": {"name": n, "parameters": p}} for n, p in (("get_weather", WEATHER), ("get_time", TIME))]


def _anthropic_tools() -> list[dict]:
    return [{"name": n, "description": n, "input_schema": p} for n, p in (("get_weather", WEATHER), ("get_time", TIME))]


def _responses_tools() -> list[dict]:
    return [{"type": "function", "name": n, "parameters": p, "strict": False} for n, p in (("get_weather", WEATHER), ("get_time", TIME))]


def test_chat_parallel_tool_calls_then_the_results(mock: MockProvider) -> None:
    client = _openai(mock)
    messages: list[dict] = [{"role": "user", "content": ASK_BOTH}]
    reply = client.chat.completions.create(model="gpt-4o", messages=messages, tools=_chat_tools())
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris", "days": 2}, {"tz": "Europe/Paris"}]
    assert len({c.id for c in calls}) == 2

    messages += [
        choice.message.model_dump(exclude_none=True),
        *({"role": "tool", "tool_call_id": c.id, "content": f"result of {c.function.name}"} for c in calls),
    ]
    final = client.chat.completions.create(model="gpt-4o", messages=messages, tools=_chat_tools())
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == "mock-openai answered as gpt-4o with tool results: result of get_weather | result of get_time"


def test_chat_tool_call_stream_has_argument_deltas(mock: MockProvider) -> None:
    client = _openai(mock)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": ASK_BOTH}], tools=_chat_tools(), stream=True, stream_options={"include_usage": True}
        )
    )
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert [d.index for d in deltas if d.id] == [0, 1]
    assert sum(1 for d in deltas if d.index == 0 and not d.id) >= 2  # arguments arrive in pieces
    args = {i: "".join(d.function.arguments or "" for d in deltas if d.index == i) for i in (0, 1)}
    assert json.loads(args[0]) == {"city": "Paris", "days": 2} and json.loads(args[1]) == {"tz": "Europe/Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    # the SDK's own accumulator reads it too
    with client.chat.completions.stream(model="gpt-4o", messages=[{"role": "user", "content": ASK_BOTH}], tools=_chat_tools()) as stream:
        final = stream.get_final_completion()
    assert [c.function.name for c in final.choices[0].message.tool_calls] == ["get_weather", "get_time"]


def test_anthropic_tool_use_blocks_json_and_stream(mock: MockProvider) -> None:
    client = _anthropic(mock)
    messages: list[dict] = [{"role": "user", "content": ASK_BOTH}]
    reply = client.messages.create(model="claude-x", max_tokens=64, messages=messages, tools=_anthropic_tools())
    assert reply.stop_reason == "tool_use"
    assert reply.content[0].type == "text" and reply.content[0].text == "mock-openai answered as claude-x: calling get_weather, get_time"
    uses = [b for b in reply.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Paris", "days": 2}), ("get_time", {"tz": "Europe/Paris"})]

    events = list(client.messages.create(model="claude-x", max_tokens=64, messages=messages, tools=_anthropic_tools(), stream=True))
    json_deltas = [e for e in events if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
    assert {e.index for e in json_deltas} == {1, 2} and len(json_deltas) >= 4
    with client.messages.stream(model="claude-x", max_tokens=64, messages=messages, tools=_anthropic_tools()) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and [b.input for b in final.content if b.type == "tool_use"][1] == {"tz": "Europe/Paris"}

    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": u.id, "content": [{"type": "text", "text": f"{u.name} ok"}]} for u in uses]},
    ]
    done = client.messages.create(model="claude-x", max_tokens=64, messages=messages, tools=_anthropic_tools())
    assert done.stop_reason == "end_turn"
    assert done.content[0].text == "mock-openai answered as claude-x with tool results: get_weather ok | get_time ok"


def test_responses_function_calls_json_and_stream(mock: MockProvider) -> None:
    client = _openai(mock)
    reply = client.responses.create(model="gpt-4o", input=ASK_BOTH, tools=_responses_tools())
    calls = [o for o in reply.output if o.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris", "days": 2}), ("get_time", {"tz": "Europe/Paris"})]
    assert all(c.call_id.startswith("call_") for c in calls)

    events = list(client.responses.create(model="gpt-4o", input=ASK_BOTH, tools=_responses_tools(), stream=True))
    deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
    assert {e.output_index for e in deltas} == {0, 1} and len(deltas) >= 4
    assert [e.arguments for e in events if e.type == "response.function_call_arguments.done"] == [c.arguments for c in calls]
    assert events[-1].type == "response.completed" and [o.name for o in events[-1].response.output] == ["get_weather", "get_time"]

    follow = [
        {"role": "user", "content": ASK_BOTH},
        *(c.model_dump(exclude_none=True) for c in calls),
        *({"type": "function_call_output", "call_id": c.call_id, "output": f"{c.name} done"} for c in calls),
    ]
    done = client.responses.create(model="gpt-4o", input=follow, tools=_responses_tools())
    assert done.output_text == "mock-openai answered as gpt-4o with tool results: get_weather done | get_time done"


def test_tool_rule_edges(mock: MockProvider) -> None:
    client = _openai(mock)

    def names(text: str, **kw) -> list[str]:
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}], **kw)
        return [c.function.name for c in reply.choices[0].message.tool_calls or []]

    tools = _chat_tools()
    assert names(ASK_BOTH) == []  # no tools declared
    assert names("what is the weather like?", tools=tools) == []  # no tool named
    assert names("call get_weathers", tools=tools) == []  # whole words only
    assert names("get_weather and get_time are tools", tools=tools) == []  # mentioned, not asked for
    assert names("hi <system-reminder>use get_time</system-reminder>", tools=tools) == []  # harness text
    assert names(ASK_BOTH, tools=tools, tool_choice="none") == []
    assert names(ASK_BOTH, tools=tools, parallel_tool_calls=False) == ["get_weather"]
    assert names("just answer", tools=tools, tool_choice="required") == ["get_weather"]
    assert names(ASK_BOTH, tools=tools, tool_choice={"type": "function", "function": {"name": "get_time"}}) == ["get_time"]
    # "use the tool": the first declared tool; no JSON given: the schema's required properties filled in
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Please use the tool for Rome"}], tools=tools)
    assert json.loads(reply.choices[0].message.tool_calls[0].function.arguments) == {"city": "for Rome"}
    # Claude Code's harness reminders are not read for tool names
    reminder = {"type": "text", "text": "<system-reminder>You can call get_time any time</system-reminder>"}
    answer = _anthropic(mock).messages.create(
        model="c", max_tokens=8, tools=_anthropic_tools(), messages=[{"role": "user", "content": [reminder, {"type": "text", "text": "hello"}]}]
    )
    assert answer.stop_reason == "end_turn" and len(answer.content) == 1


def test_token_limits_and_stop_sequences_end_the_text_like_each_provider(mock: MockProvider) -> None:
    client = _openai(mock)
    cut = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=2)
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("mock-openai answered ", "length")
    cut = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_completion_tokens=1)
    assert cut.choices[0].finish_reason == "length"
    stopped = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stop=["as"])
    assert (stopped.choices[0].message.content, stopped.choices[0].finish_reason) == ("mock-openai answered ", "stop")

    claude = _anthropic(mock)
    cut_a = claude.messages.create(model="claude-x", max_tokens=3, messages=MESSAGES)
    assert (cut_a.content[0].text, cut_a.stop_reason) == ("mock-openai answered as ", "max_tokens")
    stopped_a = claude.messages.create(model="claude-x", max_tokens=64, messages=MESSAGES, stop_sequences=["answered"])
    assert (stopped_a.content[0].text, stopped_a.stop_reason, stopped_a.stop_sequence) == ("mock-openai ", "stop_sequence", "answered")
    with claude.messages.stream(model="claude-x", max_tokens=64, messages=MESSAGES, stop_sequences=["answered"]) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "answered")

    incomplete = client.responses.create(model="gpt-4o", input="hello", max_output_tokens=2)
    assert incomplete.status == "incomplete" and incomplete.incomplete_details.reason == "max_output_tokens"
    events = list(client.responses.create(model="gpt-4o", input="hello", max_output_tokens=2, stream=True))
    assert events[-1].type == "response.incomplete" and events[-1].response.output_text == "mock-openai answered "


def test_gzip_answers_when_asked(mock: MockProvider) -> None:
    mock.gzip = True
    reply = _openai(mock).chat.completions.create(model="gpt-4o", messages=MESSAGES)  # httpx decodes it
    assert reply.choices[0].message.content == "mock-openai answered as gpt-4o"
    with _anthropic(mock).messages.stream(model="claude-x", max_tokens=64, messages=MESSAGES) as stream:
        assert "".join(stream.text_stream) == "mock-openai answered as claude-x"
    req = urllib.request.Request(mock.base_url + "/v1/chat/completions", data=json.dumps({"model": "m", "messages": MESSAGES}).encode(), headers={"accept-encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["content-encoding"] == "gzip" and json.loads(gzip.decompress(resp.read()))["model"] == "m"


def test_anthropic_thinking_blocks_when_thinking_is_on(mock: MockProvider) -> None:
    client = _anthropic(mock)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    reply = client.messages.create(model="claude-x", max_tokens=2048, thinking=thinking, messages=MESSAGES)
    assert [b.type for b in reply.content] == ["thinking", "text"]
    assert reply.content[0].thinking == "mock-openai thinking as claude-x" and reply.content[0].signature.startswith("mock-signature-")
    with client.messages.stream(model="claude-x", max_tokens=2048, thinking=thinking, messages=[{"role": "user", "content": ASK_BOTH}], tools=_anthropic_tools()) as stream:
        kinds = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert {"thinking_delta", "signature_delta", "text_delta", "input_json_delta"} <= set(kinds)
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use", "tool_use"] and final.content[0].signature
    assert [b.type for b in client.messages.create(model="claude-x", max_tokens=64, messages=MESSAGES).content] == ["text"]


def test_a_client_hanging_up_mid_stream_prints_no_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    # `up --mock-providers` output must stay clean when a client (or Envoy) abandons a streamed answer
    with MockProvider("mock-openai", chunk_delay=0.05) as mock:
        assert mock._server is not None
        handled: list[BaseException | None] = []
        original = mock._server.handle_error

        def recording(request, client_address) -> None:  # type: ignore[no-untyped-def]
            handled.append(sys.exc_info()[1])
            original(request, client_address)

        mock._server.handle_error = recording  # type: ignore[method-assign]
        body = json.dumps({"model": "gpt-4o", "messages": MESSAGES, "stream": True}).encode()
        with socket.create_connection(("127.0.0.1", mock.port)) as conn:
            conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))
            assert conn.recv(64).startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + 10
        while not handled and time.monotonic() < deadline:
            time.sleep(0.02)
    assert handled and isinstance(handled[0], (BrokenPipeError, ConnectionResetError))
    assert "Traceback" not in capsys.readouterr().err
