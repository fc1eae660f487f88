"""The response-path processors in-process, on ext_proc protobuf messages as Envoy sends them: the
response translator (per-answer body mode) and response observation — the streaming observer
(observability_mode: it never replies) and the access-log entries of each request and attempt.

Each test first sends the request through the downstream processor (and the per-attempt one where an
attempt needs it), so the in-flight record and the decision metadata are the ones Envoy would carry.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from plano_extproc.contract import REQUEST_TIME_ATTRIBUTE, STRIPPED_BEFORE_PROVIDER, USAGE_FIELDS
from tests.processors_kit import (
    CLAUDE,
    CLAUDE_ID,
    GPT4O,
    Gateway,
    Mode,
    assert_error_shape,
    attempt_log_entry,
    body_of,
    common_of,
    decision_attributes,
    immediate_of,
    passthrough_config,
    removed_headers,
    request_log_entry,
    response_attributes,
    response_body_msg,
    response_headers_msg,
    set_headers,
)

ANTHROPIC_MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": CLAUDE_ID,
    "content": [{"type": "text", "text": "Hi there"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 11, "cache_read_input_tokens": 4, "output_tokens": 7},
}
CHAT_COMPLETION = {
    "id": "chatcmpl-01",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
}


def anthropic_event(payload: dict) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def chat_event(payload: dict | str) -> bytes:
    return b"data: " + (payload.encode() if isinstance(payload, str) else orjson.dumps(payload)) + b"\n\n"


ANTHROPIC_STREAM = b"".join(
    anthropic_event(e)
    for e in (
        {"type": "message_start", "message": {**ANTHROPIC_MESSAGE, "content": [], "stop_reason": None, "usage": {"input_tokens": 12, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " world"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}},
        {"type": "message_stop"},
    )
)


def _chunk(delta: dict, finish: str | None = None) -> dict:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


#: a Chat Completions stream that ends without a usage chunk and without [DONE] (some servers do)
CHAT_STREAM_UNTERMINATED = b"".join(
    chat_event(c) for c in (_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Hello"}), _chunk({"content": " world"}), _chunk({}, "stop"))
)


def split(data: bytes, size: int) -> list[bytes]:
    """Body chunks as the network cuts them: events split anywhere, even inside a line."""
    return [data[i : i + size] for i in range(0, len(data), size)]


async def _flow(gateway: Gateway, api: str, text: str, attempt: int, **body):
    flow = await gateway.proxy(api, text, **body)
    for n in range(1, attempt + 1):
        if n > 1 or flow.headers["x-plano-first"] != "ready":
            await flow.attempt(n)
    return flow


def _response_headers(flow, status: int, content_type: str, attempt: int, **extra: str):
    return response_headers_msg(
        status,
        {"content-type": content_type, "content-length": "123", **extra},
        attributes=response_attributes(flow.request_id, attempt),
        metadata=flow.metadata,
    )


# ============================================================================ translate: which body mode


@pytest.mark.parametrize(
    ("api", "text", "attempt"),
    [
        ("anthropic_messages", "code_generation", 1),  # Claude answers the Anthropic client natively
        ("openai_chat", "code_generation", 2),  # fall-over from translated Claude to native GPT-4o
        ("openai_responses", "complex_reasoning", 1),  # GPT-4o speaks Responses natively
    ],
)
async def test_a_native_answer_passes_untouched_with_body_mode_none(api, text, attempt):
    gateway = Gateway()
    flow = await _flow(gateway, api, text, attempt)
    assert flow.headers["x-plano-translate"] == "1"  # some attempt of this request is translated
    reply = await gateway.translate().handle(_response_headers(flow, 200, "application/json", attempt))
    assert reply.WhichOneof("response") == "response_headers"
    assert reply.mode_override.response_body_mode == Mode.NONE
    assert not common_of(reply).HasField("header_mutation") and not common_of(reply).HasField("body_mutation")


async def test_an_answer_to_a_request_it_knows_nothing_of_passes_untouched():
    reply = await Gateway().translate().handle(response_headers_msg(200, {"content-type": "application/json"}, attributes=response_attributes("nobody", 1)))
    assert reply.mode_override.response_body_mode == Mode.NONE and not common_of(reply).HasField("header_mutation")


def _chat_text(body: dict) -> str:
    assert body["object"] == "chat.completion"
    return body["choices"][0]["message"]["content"]


def _anthropic_text(body: dict) -> str:
    assert body["type"] == "message" and body["role"] == "assistant"
    return body["content"][0]["text"]


def _responses_text(body: dict) -> str:
    assert body["object"] == "response" and body["status"] == "completed"
    return body["output"][0]["content"][0]["text"]


JSON_ANSWERS = [
    # (config, api, text, attempt, provider answer, reader of the client's body, model the client sees)
    ("demo", "openai_chat", "code_generation", 1, ANTHROPIC_MESSAGE, _chat_text, CLAUDE_ID),
    ("demo", "openai_chat", "complex_reasoning", 2, ANTHROPIC_MESSAGE, _chat_text, CLAUDE_ID),
    ("demo", "anthropic_messages", "complex_reasoning", 1, CHAT_COMPLETION, _anthropic_text, "gpt-4o"),
    ("demo", "openai_responses", "code_generation", 1, ANTHROPIC_MESSAGE, _responses_text, CLAUDE_ID),
    ("passthrough", "openai_responses", "local_chat", 1, CHAT_COMPLETION, _responses_text, "llama3"),
]


@pytest.mark.parametrize(("config", "api", "text", "attempt", "answer", "read", "model"), JSON_ANSWERS)
async def test_a_json_answer_is_buffered_and_replaced_by_the_clients_api(config, api, text, attempt, answer, read, model):
    gateway = Gateway(passthrough_config() if config == "passthrough" else None)
    flow = await _flow(gateway, api, text, attempt)
    exchange = gateway.translate()
    reply = await exchange.handle(_response_headers(flow, 200, "application/json", attempt))
    assert reply.mode_override.response_body_mode == Mode.BUFFERED
    assert set_headers(reply) == {"content-type": "application/json"} and removed_headers(reply) == ["content-length"]
    reply = await exchange.handle(response_body_msg(orjson.dumps(answer), end_of_stream=True))
    assert reply.WhichOneof("response") == "response_body"
    out = body_of(reply)
    assert set_headers(reply) == {"content-length": str(len(out))}
    client = orjson.loads(out)
    assert read(client) == "Hi there" and client["model"] == model


async def test_the_translator_needs_no_record_when_the_metadata_is_there():
    """Another worker process forwarded the request: the decision metadata alone is enough."""
    flow = await _flow(Gateway(), "openai_chat", "code_generation", 1)
    exchange = Gateway().translate()
    reply = await exchange.handle(_response_headers(flow, 200, "application/json", 1))
    assert reply.mode_override.response_body_mode == Mode.BUFFERED
    out = body_of(await exchange.handle(response_body_msg(orjson.dumps(ANTHROPIC_MESSAGE), end_of_stream=True)))
    assert _chat_text(orjson.loads(out)) == "Hi there"


# ============================================================================ translate: streams


def sse_payloads(data: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) of every event in a client's stream."""
    out = []
    for block in data.split(b"\n\n"):
        if not block.strip():
            continue
        name, payload = None, ""
        for line in block.decode().split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                payload = line[6:]
        out.append((name, payload))
    return out


def chat_stream_text(events: list[tuple[str | None, str]]) -> str:
    assert events[-1] == (None, "[DONE]")
    chunks = [orjson.loads(p) for _, p in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def anthropic_stream_text(events: list[tuple[str | None, str]]) -> str:
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    return "".join(orjson.loads(p)["delta"]["text"] for n, p in events if n == "content_block_delta")


def responses_stream_text(events: list[tuple[str | None, str]]) -> str:
    assert events[0][0] == "response.created" and events[-1][0] == "response.completed"
    return "".join(orjson.loads(p)["delta"] for n, p in events if n == "response.output_text.delta")


STREAMS = [
    # (api, text, attempt, provider stream, chunk size, reader of the client's stream)
    ("openai_chat", "code_generation", 1, ANTHROPIC_STREAM, 37, chat_stream_text),
    ("openai_responses", "code_generation", 1, ANTHROPIC_STREAM, 50, responses_stream_text),
    ("anthropic_messages", "complex_reasoning", 1, CHAT_STREAM_UNTERMINATED, 29, anthropic_stream_text),
]


@pytest.mark.parametrize(("api", "text", "attempt", "stream", "size", "read"), STREAMS)
async def test_an_event_stream_is_translated_chunk_by_chunk(api, text, attempt, stream, size, read):
    gateway = Gateway()
    flow = await _flow(gateway, api, text, attempt)
    exchange = gateway.translate()
    reply = await exchange.handle(_response_headers(flow, 200, "text/event-stream; charset=utf-8", attempt))
    assert reply.mode_override.response_body_mode == Mode.STREAMED
    assert removed_headers(reply) == ["content-length"] and set_headers(reply) == {}
    out = []
    for chunk in split(stream, size):
        reply = await exchange.handle(response_body_msg(chunk))
        assert reply.WhichOneof("response") == "response_body" and not set_headers(reply)
        out.append(body_of(reply))
    # the client reads "Hello" while the provider is still streaming
    assert next(i for i, o in enumerate(out) if b"Hello" in o) < len(out) - 2
    # Envoy's last body message: often empty, end_of_stream set; the translator's closing events go here
    last = body_of(await exchange.handle(response_body_msg(b"", end_of_stream=True)))
    assert read(sse_payloads(b"".join(out) + last)) == "Hello world"
    if stream is CHAT_STREAM_UNTERMINATED:
        assert [n for n, _ in sse_payloads(last)] == ["message_delta", "message_stop"]


# ============================================================================ translate: errors

ERRORS = [
    # (api, text, provider status, content type, provider body, message the client reads)
    ("openai_chat", "code_generation", 429, "application/json", {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}, "slow down"),
    ("openai_responses", "code_generation", 529, "application/json", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "Overloaded"),
    ("anthropic_messages", "complex_reasoning", 400, "application/json", {"error": {"message": "bad tool", "type": "invalid_request_error", "param": "tools", "code": None}}, "bad tool"),
    ("anthropic_messages", "complex_reasoning", 503, "text/html", "<html>upstream connect error</html>", "upstream connect error"),
]


@pytest.mark.parametrize(("api", "text", "status", "content_type", "answer", "message"), ERRORS)
async def test_a_provider_error_reaches_the_client_in_its_own_error_shape(api, text, status, content_type, answer, message):
    gateway = Gateway()
    flow = await _flow(gateway, api, text, 1)
    exchange = gateway.translate()
    reply = await exchange.handle(_response_headers(flow, status, content_type, 1))
    assert reply.mode_override.response_body_mode == Mode.BUFFERED
    assert set_headers(reply) == {"content-type": "application/json"}  # the status is the provider's, unchanged
    raw = answer.encode() if isinstance(answer, str) else orjson.dumps(answer)
    reply = await exchange.handle(response_body_msg(raw, end_of_stream=True))
    out = body_of(reply)
    assert set_headers(reply) == {"content-length": str(len(out))}
    assert_error_shape(api, orjson.loads(out), message)


@pytest.mark.parametrize(
    ("api", "text", "content_type", "answer"),
    [
        ("openai_chat", "code_generation", "application/json", b"<html>not json</html>"),
        ("anthropic_messages", "complex_reasoning", "application/json", b'{"id": "chatcmpl-1", "choices": '),
        ("openai_responses", "code_generation", "text/plain", b"hello"),
    ],
)
async def test_an_answer_that_cannot_be_translated_is_a_502_in_the_clients_shape(api, text, content_type, answer):
    gateway = Gateway()
    flow = await _flow(gateway, api, text, 1)
    exchange = gateway.translate()
    await exchange.handle(_response_headers(flow, 200, content_type, 1))
    result = immediate_of(await exchange.handle(response_body_msg(answer, end_of_stream=True)))
    assert result.status == 502
    assert_error_shape(api, result.body, "could not be translated")


# ============================================================================ observation


def _observed_headers(flow, status: int, content_type: str, attempt: int, end_of_stream: bool = False, decision: bool = True):
    """The streaming observer's headers message: no forwarded metadata (it would come with every chunk,
    finding (g)), the decision as CEL attributes instead (finding (u))."""
    more = {REQUEST_TIME_ATTRIBUTE: datetime.now(UTC).isoformat(), **(decision_attributes(flow.metadata) if decision else {})}
    attributes = response_attributes(flow.request_id, attempt, **more)
    return response_headers_msg(status, {"content-type": content_type}, attributes=attributes, end_of_stream=end_of_stream)


async def _observe(gateway: Gateway, messages) -> None:
    observer = gateway.observe()
    for message in messages:
        assert await observer.handle(message) is None  # observability_mode: never a reply


def _usage_counts(body: bytes) -> dict | None:
    """What json_to_metadata writes for a JSON answer: its usage counts under their own names."""
    usage = orjson.loads(body).get("usage")
    return {k: v for k, v in usage.items() if k in USAGE_FIELDS} if isinstance(usage, dict) else None


OBSERVED = [
    # (api, text, stream, failed attempts before the answer, answering attempt, status, content type, body,
    #  model that answered, (input, output) tokens, fall-over)
    ("anthropic_messages", "code_generation", False, [], 1, 200, "application/json", orjson.dumps(ANTHROPIC_MESSAGE), CLAUDE, (15, 7), False),
    ("openai_chat", "complex_reasoning", True, [429], 2, 200, "text/event-stream", ANTHROPIC_STREAM, CLAUDE, (12, 5), True),
    ("anthropic_messages", "complex_reasoning", False, [], 1, 200, "application/json", orjson.dumps(CHAT_COMPLETION), GPT4O, (11, 7), False),
    ("openai_chat", "complex_reasoning", False, [503], 2, 529, "application/json", b'{"type":"error"}', CLAUDE, None, True),
    ("openai_chat", "complex_reasoning", True, [503], 2, 529, "application/json", b'{"type":"error"}', CLAUDE, None, True),
]


@pytest.mark.parametrize(("api", "text", "stream", "failed", "attempt", "status", "content_type", "body", "model", "tokens", "fallover"), OBSERVED)
async def test_an_answer_is_recorded_by_the_model_that_gave_it(api, text, stream, failed, attempt, status, content_type, body, model, tokens, fallover):
    """Each attempt's entry, the streaming observer for a streamed request, then the request's entry: the
    request outcome, every attempt, the fall-over, timing and tokens, by the model that answered."""
    gateway = Gateway()
    flow = await _flow(gateway, api, text, attempt, stream=stream or None)
    attempts = gateway.inflight.get(flow.request_id).attempts
    for n, failed_status in enumerate([*failed, status], start=1):  # the router's upstream_log, one per attempt
        gateway.access_log.attempt_entry(attempt_log_entry(attempts[n - 1], failed_status, flow.request_id))
    if stream:
        chunks = split(body, 40)
        messages = [_observed_headers(flow, status, content_type, attempt)]
        messages += [response_body_msg(c, end_of_stream=i == len(chunks) - 1) for i, c in enumerate(chunks)]
        await _observe(gateway, messages)
    usage = None if stream else _usage_counts(body)
    gateway.access_log.request_entry(request_log_entry(flow.metadata, status, attempt, request_id=flow.request_id, usage=usage))

    provider = model.split("/")[0]
    outcome = "ok" if status < 400 else "client_error" if status < 500 else "server_error"
    assert gateway.sample("plano_requests_total", endpoint="proxy", api_format=api, outcome=outcome) == 1
    status_class = f"{status // 100}xx"
    assert gateway.sample("plano_upstream_responses_total", model=model, provider=provider, status_class=status_class) == 1
    for n, failed_status in enumerate(failed, start=1):
        earlier = attempts[n - 1]
        assert gateway.sample("plano_upstream_responses_total", model=earlier, provider=earlier.split("/")[0], status_class=f"{failed_status // 100}xx") == 1
    assert gateway.sample("plano_upstream_attempts_count") == 1 and gateway.sample("plano_upstream_attempts_sum") == attempt
    assert gateway.sample("plano_upstream_fallovers_total", model=model) == (1 if fallover else 0)
    assert model != attempts[0] or not fallover
    assert gateway.sample("plano_gen_ai_client_operation_duration_seconds_count", model=model) == 1
    assert gateway.sample("plano_gen_ai_client_operation_duration_seconds_sum", model=model) == 0.75
    assert gateway.sample("plano_gen_ai_time_to_first_token_seconds_count", model=model) == (1 if status < 300 else 0)
    if tokens is None:
        assert gateway.sample("plano_tokens_total", model=model, type="input") == 0
    else:
        assert (gateway.sample("plano_tokens_total", model=model, type="input"), gateway.sample("plano_tokens_total", model=model, type="output")) == tokens
        assert gateway.sample("plano_gen_ai_client_token_usage_tokens_count", model=model, type="output") == 1
    assert gateway.inflight.get(flow.request_id) is None  # the request is over: its record went


async def test_a_non_streaming_answer_opens_no_observer_and_its_first_byte_time_is_envoys():
    """The routing processor skips the observer for it (x-plano-observe: 0) and asks for an answer
    json_to_metadata can read; the request's entry brings the time to the first upstream byte."""
    gateway = Gateway()
    flow = await gateway.proxy("openai_chat", "complex_reasoning", headers={"accept-encoding": "gzip, br"})
    sets = set_headers(flow.body_reply)
    assert sets["x-plano-observe"] == "0" and sets["accept-encoding"] == "identity"
    assert "x-plano-observe" in STRIPPED_BEFORE_PROVIDER
    gateway.access_log.request_entry(request_log_entry(flow.metadata, 200, first_byte=0.25, last_byte=0.5, usage={"prompt_tokens": 3, "completion_tokens": 2}))
    assert gateway.sample("plano_gen_ai_time_to_first_token_seconds_sum", model=GPT4O) == 0.25
    assert gateway.sample("plano_gen_ai_client_operation_duration_seconds_sum", model=GPT4O) == 0.5
    assert gateway.sample("plano_tokens_total", model=GPT4O, type="output") == 2


async def test_a_streamed_request_passes_the_observer_and_keeps_its_accept_encoding():
    gateway = Gateway()
    flow = await gateway.proxy("openai_chat", "complex_reasoning", headers={"accept-encoding": "gzip"}, stream=True)
    sets = set_headers(flow.body_reply)
    assert sets["x-plano-observe"] == "1" and "accept-encoding" not in sets
    assert flow.headers["accept-encoding"] == "gzip"  # the observer decodes a compressed stream itself
    # the request's entry leaves the first token and the usage to the observer (none came here)
    gateway.access_log.request_entry(request_log_entry(flow.metadata, 200, usage={"prompt_tokens": 3, "completion_tokens": 2}))
    assert gateway.sample("plano_requests_total", endpoint="proxy", api_format="openai_chat", outcome="ok") == 1
    assert gateway.sample("plano_gen_ai_time_to_first_token_seconds_count", model=GPT4O) == 0
    assert gateway.sample("plano_tokens_total", model=GPT4O, type="output") == 0


async def test_the_observer_needs_no_record():
    """Its request's entry (and the record's close) may come first, or the observer's stream may reach
    another process: the decision comes with the response headers."""
    gateway = Gateway()
    flow = await gateway.proxy("openai_chat", "code_generation", stream=True)  # Claude, translated
    gateway.access_log.request_entry(request_log_entry(flow.metadata, 200, request_id=flow.request_id))
    assert gateway.inflight.get(flow.request_id) is None
    other = Gateway()  # another process: no record at all
    for observing in (gateway, other):
        chunks = split(ANTHROPIC_STREAM, 64)
        messages = [_observed_headers(flow, 200, "text/event-stream", 1)]
        messages += [response_body_msg(c, end_of_stream=i == len(chunks) - 1) for i, c in enumerate(chunks)]
        await _observe(observing, messages)
        assert observing.sample("plano_tokens_total", model=CLAUDE, type="input") == 12
        assert observing.sample("plano_tokens_total", model=CLAUDE, type="output") == 5
        assert observing.sample("plano_gen_ai_time_to_first_token_seconds_count", model=CLAUDE) == 1


async def test_the_response_headers_release_the_kept_body():
    gateway = Gateway()
    flow = await gateway.proxy("openai_chat", "complex_reasoning", stream=True)
    assert gateway.inflight.get(flow.request_id).forward is not None
    await _observe(gateway, [_observed_headers(flow, 200, "text/event-stream", 1)])
    record = gateway.inflight.get(flow.request_id)
    assert record is not None and record.forward is None  # no more attempts; the record stays until the end


async def test_a_stream_cut_short_records_its_usage_once():
    gateway = Gateway()
    flow = await gateway.proxy("openai_chat", "code_generation", stream=True)
    observer = gateway.observe()
    await observer.handle(_observed_headers(flow, 200, "text/event-stream", 1))
    first_event = ANTHROPIC_STREAM[: ANTHROPIC_STREAM.index(b"\n\n") + 2]  # message_start: the input count
    await observer.handle(response_body_msg(first_event))
    observer.finish()  # the server calls finish when the stream ends without end_of_stream
    observer.finish()
    await observer.handle(response_body_msg(b"late", end_of_stream=True))
    assert gateway.sample("plano_tokens_total", model=CLAUDE, type="input") == 12
    assert gateway.sample("plano_gen_ai_client_token_usage_tokens_count", model=CLAUDE, type="input") == 1
    assert gateway.inflight.get(flow.request_id) is None


async def test_a_headers_only_answer_has_no_first_token():
    gateway = Gateway()
    flow = await gateway.proxy("anthropic_messages", "code_generation", stream=True)
    await _observe(gateway, [_observed_headers(flow, 204, "text/event-stream", 1, end_of_stream=True)])
    flat = await gateway.proxy("anthropic_messages", "code_generation")
    gateway.access_log.request_entry(request_log_entry(flat.metadata, 204, body_bytes=0))
    assert gateway.sample("plano_requests_total", endpoint="proxy", api_format="anthropic_messages", outcome="ok") == 1
    assert gateway.sample("plano_gen_ai_time_to_first_token_seconds_count", model=CLAUDE) == 0
    assert gateway.inflight.get(flow.request_id) is None


async def test_an_observer_records_nothing_for_a_request_without_a_decision():
    gateway = Gateway()
    flow = await gateway.proxy("openai_chat", "complex_reasoning", stream=True)
    await _observe(gateway, [_observed_headers(flow, 200, "application/json", 1, decision=False), response_body_msg(orjson.dumps(CHAT_COMPLETION), end_of_stream=True)])
    assert gateway.sample("plano_tokens_total", model=GPT4O, type="input") == 0
    assert gateway.sample("plano_gen_ai_time_to_first_token_seconds_count", model=GPT4O) == 0


@pytest.mark.parametrize("last_empty", [True, False], ids=["empty-last-message", "data-in-last-message"])
async def test_the_closing_events_come_with_the_end_of_stream_message(last_empty):
    gateway = Gateway()
    flow = await _flow(gateway, "anthropic_messages", "complex_reasoning", 1)
    exchange = gateway.translate()
    await exchange.handle(_response_headers(flow, 200, "text/event-stream", 1))
    chunks = split(CHAT_STREAM_UNTERMINATED, 64)
    if last_empty:
        chunks.append(b"")
    out = [body_of(await exchange.handle(response_body_msg(c, end_of_stream=i == len(chunks) - 1))) for i, c in enumerate(chunks)]
    names = [n for n, _ in sse_payloads(out[-1])]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert anthropic_stream_text(sse_payloads(b"".join(out))) == "Hello world"


async def test_a_stream_that_cannot_be_translated_is_closed_cleanly_in_the_clients_api():
    """An event longer than the parser's bound: the client's stream gets an error event and ends, and no
    provider byte of another API reaches it afterwards."""
    gateway = Gateway()
    flow = await _flow(gateway, "openai_chat", "code_generation", 1)
    exchange = gateway.translate()
    await exchange.handle(_response_headers(flow, 200, "text/event-stream", 1))
    first = body_of(await exchange.handle(response_body_msg(ANTHROPIC_STREAM[:400])))
    assert b"chat.completion.chunk" in first
    failed = body_of(await exchange.handle(response_body_msg(b"data: " + b"x" * (16 * 1024 * 1024 + 1))))
    ((_, payload),) = sse_payloads(failed)
    assert_error_shape("openai_chat", orjson.loads(payload))
    assert body_of(await exchange.handle(response_body_msg(ANTHROPIC_STREAM[400:]))) == b""
    assert body_of(await exchange.handle(response_body_msg(b"", end_of_stream=True))) == b""
