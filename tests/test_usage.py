"""Token usage parsers (plano_extproc.usage): whole bodies, SSE streams split anywhere, bounded memory."""

from __future__ import annotations

import gzip
import json
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from plano_extproc import usage as u
from plano_extproc.apis import ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_RESPONSES
from plano_extproc.usage import JsonUsageReader, SseUsageReader, Usage, usage_from_json, usage_reader

CHAT, ANTHROPIC, RESPONSES = OPENAI_CHAT.read_usage, ANTHROPIC_MESSAGES.read_usage, OPENAI_RESPONSES.read_usage


def sse(events: list[tuple[str | None, object]], crlf: bool = False) -> bytes:
    nl = "\r\n" if crlf else "\n"
    out = ""
    for event, data in events:
        if event:
            out += f"event: {event}{nl}"
        out += "data: " + (data if isinstance(data, str) else json.dumps(data)) + nl + nl
    return out.encode()


def openai_chat_stream(prompt: int, completion: int, text: str = "hello there") -> bytes:
    base = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o"}
    events: list[tuple[str | None, object]] = [(None, dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}}], usage=None))]
    for word in text.split():
        events.append((None, dict(base, choices=[{"index": 0, "delta": {"content": word + " usage "}}], usage=None)))
    events.append((None, dict(base, choices=[], usage={"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})))
    events.append((None, "[DONE]"))
    return sse(events)


def anthropic_stream(prompt: int, completion: int, cache_read: int = 0, text: str = "hi there") -> bytes:
    start_usage = {"input_tokens": prompt, "output_tokens": 1}
    if cache_read:
        start_usage["cache_read_input_tokens"] = cache_read
    events: list[tuple[str | None, object]] = [
        ("message_start", {"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "content": [], "usage": start_usage}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ]
    for word in text.split():
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word + ' "usage": {"output_tokens": 999}'}}))
    events.append(("ping", {"type": "ping"}))
    events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": completion}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return sse(events, crlf=True)


def responses_stream(prompt: int, completion: int, text: str = "hi") -> bytes:
    def response(status: str, with_usage: bool) -> dict:
        usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 3}, "output_tokens": completion, "total_tokens": prompt + completion}
        return {"id": "r", "object": "response", "status": status, "output": [{"type": "message", "content": [{"type": "output_text", "text": text}]}], "usage": usage if with_usage else None}

    return sse([
        ("response.created", {"type": "response.created", "response": response("in_progress", False)}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "delta": text}),
        ("response.completed", {"type": "response.completed", "response": response("completed", True)}),
    ])


def feed_split(reader, data: bytes, cuts: list[int]):
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        reader.feed(data[last:cut])
        last = cut
    reader.feed(data[last:])
    return reader.result()


# ------------------------------------------------------------------------------------------ whole bodies


def test_non_streaming_bodies_of_each_api() -> None:
    chat = {"id": "x", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46}}
    responses = {"id": "r", "output": [], "usage": {"input_tokens": 5, "output_tokens": 6, "input_tokens_details": {"cached_tokens": 2}}}
    anthropic = {"id": "m", "content": [], "usage": {"input_tokens": 7, "output_tokens": 8, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 100}}
    assert usage_from_json(json.dumps(chat).encode(), CHAT) == Usage(12, 34)
    assert usage_from_json(json.dumps(responses).encode(), RESPONSES) == Usage(5, 6)
    assert usage_from_json(json.dumps(anthropic).encode(), ANTHROPIC) == Usage(117, 8)  # cache reads/writes are input too
    assert usage_from_json(b'{"error": {"message": "no"}}', CHAT) is None
    assert usage_from_json(b"not json", CHAT) is None
    assert usage_from_json(b'{"usage": {"prompt_tokens": true, "completion_tokens": -1}}', CHAT) is None


def test_json_reader_keeps_only_the_tail_of_a_huge_body(monkeypatch) -> None:
    monkeypatch.setattr(u, "MAX_JSON_BYTES", 1000)
    monkeypatch.setattr(u, "TAIL_BYTES", 200)
    body = json.dumps({"choices": [{"message": {"content": 'x \\"usage\\": 1 ' * 500}}], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}).encode()
    reader = JsonUsageReader(CHAT)
    for i in range(0, len(body), 97):
        reader.feed(body[i : i + 97])
        assert len(reader._buf) <= 1000 + 97
    assert reader.result() == Usage(3, 4)


# ------------------------------------------------------------------------------------------ SSE streams


def test_streams_of_each_api() -> None:
    for data, read, expected in (
        (openai_chat_stream(11, 7), CHAT, Usage(11, 7)),
        (anthropic_stream(20, 9, cache_read=5), ANTHROPIC, Usage(25, 9)),
        (responses_stream(4, 2), RESPONSES, Usage(4, 2)),
    ):
        reader = SseUsageReader(read)
        reader.feed(data)
        assert reader.result() == expected


def test_stream_without_usage_reports_none() -> None:
    reader = SseUsageReader(CHAT)
    reader.feed(sse([(None, {"choices": [{"delta": {"content": "hi"}}], "usage": None}), (None, "[DONE]")]))
    assert reader.result() is None


def test_a_last_line_without_newline_is_read() -> None:
    reader = SseUsageReader(CHAT)
    reader.feed(b'data: {"usage": {"prompt_tokens": 1, "completion_tokens": 2}}')
    assert reader.result() == Usage(1, 2)


def test_an_over_long_line_keeps_only_its_tail(monkeypatch) -> None:
    monkeypatch.setattr(u, "MAX_LINE_BYTES", 500)
    monkeypatch.setattr(u, "TAIL_BYTES", 300)
    data = responses_stream(40, 50, text="long " * 1000)
    reader = SseUsageReader(RESPONSES)
    for i in range(0, len(data), 64):
        reader.feed(data[i : i + 64])
        assert len(reader._partial) <= 500 + 64
    assert reader.result() == Usage(40, 50)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(["openai", "anthropic", "responses"]),
    prompt=st.integers(0, 10**7),
    completion=st.integers(0, 10**6),
    text=st.text(min_size=1, max_size=40),
    cuts=st.lists(st.integers(0, 10**6), max_size=30),
)
def test_splitting_a_stream_anywhere_gives_the_same_totals(kind, prompt, completion, text, cuts) -> None:
    build, read = {"openai": (openai_chat_stream, CHAT), "anthropic": (anthropic_stream, ANTHROPIC), "responses": (responses_stream, RESPONSES)}[kind]
    data = build(prompt, completion, text=text)
    whole = SseUsageReader(read)
    whole.feed(data)
    expected = Usage(prompt, completion)
    assert whole.result() == expected
    assert feed_split(SseUsageReader(read), data, cuts) == expected
    # byte by byte, the worst case
    if len(cuts) < 3:
        one = SseUsageReader(read)
        for i in range(len(data)):
            one.feed(data[i : i + 1])
        assert one.result() == expected


@settings(max_examples=100, deadline=None)
@given(prompt=st.integers(0, 10**7), completion=st.integers(0, 10**6), cuts=st.lists(st.integers(0, 10**5), max_size=20))
def test_splitting_a_json_body_anywhere_gives_the_same_totals(prompt, completion, cuts) -> None:
    body = json.dumps({"id": "x", "choices": [{"message": {"content": "é" * 50}}], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}).encode()
    assert feed_split(JsonUsageReader(CHAT), body, cuts) == Usage(prompt, completion)


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(0, 10**5), max_size=20), encoding=st.sampled_from(["gzip", "deflate"]))
def test_compressed_bodies_and_streams(cuts, encoding) -> None:
    def compress(data: bytes) -> bytes:
        return gzip.compress(data) if encoding == "gzip" else zlib.compress(data)

    body = json.dumps({"usage": {"input_tokens": 9, "output_tokens": 10}}).encode()
    assert feed_split(usage_reader(ANTHROPIC, "application/json", encoding), compress(body), cuts) == Usage(9, 10)
    stream = anthropic_stream(3, 4)
    assert feed_split(usage_reader(ANTHROPIC, "text/event-stream; charset=utf-8", encoding), compress(stream), cuts) == Usage(3, 4)


def test_reader_choice() -> None:
    assert isinstance(usage_reader(CHAT, "text/event-stream"), SseUsageReader)
    assert isinstance(usage_reader(CHAT, "application/json; charset=utf-8"), JsonUsageReader)
    assert usage_reader(CHAT, "text/html") is None
    assert usage_reader(CHAT, "application/json", "br") is None
    broken = usage_reader(CHAT, "application/json", "gzip")
    broken.feed(b"not gzip at all")
    assert broken.result() is None
