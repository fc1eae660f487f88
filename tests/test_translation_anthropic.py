"""Golden tests: OpenAI Chat Completions <-> Anthropic Messages translation, both directions.

Provider transcripts under tests/golden/translation/ follow the shapes the providers document (Anthropic's
streaming guide: text, tool use with input_json_delta, thinking with signature_delta, errors; OpenAI's
chunk format with tool-call deltas and the include_usage chunk). Expected values come from those
transcripts (accumulated by the providers' own SDKs where possible), never from the translator's output.
The translated output is consumed by the official `openai` / `anthropic` SDKs over an in-process
transport: if the SDK parses it and accumulates the same text and tool arguments, a real client will too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import cycle, pairwise
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from plano_extproc.translation import anthropic_to_openai_chat as a2o
from plano_extproc.translation import openai_chat_to_anthropic as o2a
from plano_extproc.translation.common import TranslationError, claude_facts, openai_facts
from plano_extproc.translation.sse import SseParser

GOLDEN = Path(__file__).parent / "golden" / "translation"
ANTHROPIC_EVENT = TypeAdapter(RawMessageStreamEvent)
CLAUDE = "claude-sonnet-4-5-20250929"
SIG = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"


def golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()


def golden_json(name: str) -> dict[str, Any]:
    return json.loads(golden(name))


# ------------------------------------------------------------------------------------------ SDK harness


def _transport(status: int, body: bytes, content_type: str) -> httpx.MockTransport:
    return httpx.MockTransport(
        lambda request: httpx.Response(status, headers={"content-type": content_type}, content=body)
    )


def openai_client(body: bytes, *, status: int = 200, content_type: str = "text/event-stream") -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://gateway.test/v1",
        max_retries=0,
        http_client=httpx.Client(transport=_transport(status, body, content_type)),
    )


def anthropic_client(body: bytes, *, status: int = 200, content_type: str = "text/event-stream") -> anthropic.Anthropic:
    # the anthropic SDK runs on httpx2, the openai SDK on httpx
    transport = httpx2.MockTransport(
        lambda request: httpx2.Response(status, headers={"content-type": content_type}, content=body)
    )
    return anthropic.Anthropic(
        api_key="sk-ant-test",
        base_url="http://gateway.test",
        max_retries=0,
        http_client=httpx2.Client(transport=transport),
    )


def openai_final(stream_bytes: bytes) -> Any:
    """What the OpenAI SDK's stream accumulator makes of an SSE body (the snapshot: the final-completion
    helper refuses to parse a "length" finish)."""
    client = openai_client(stream_bytes)
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for chunk in client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True):
        state.handle_chunk(chunk)
    return state.current_completion_snapshot


def anthropic_final(stream_bytes: bytes) -> Message:
    """What the Anthropic SDK's stream accumulator makes of an SSE body."""
    client = anthropic_client(stream_bytes)
    with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as stream:
        for _ in stream:
            pass
        return stream.get_final_message()


def sse_events(data: bytes) -> list[tuple[str | None, str]]:
    parser = SseParser()
    return [(e.event, e.data) for e in parser.feed(data) + parser.finish()]


def openai_chunks(data: bytes) -> list[dict[str, Any]]:
    """Every chunk validated by the SDK's own model; [DONE] excluded."""
    chunks = []
    for _, payload in sse_events(data):
        if payload == "[DONE]":
            continue
        chunk = json.loads(payload)
        if "error" not in chunk:
            ChatCompletionChunk.model_validate(chunk)
        chunks.append(chunk)
    return chunks


def anthropic_events(data: bytes) -> list[dict[str, Any]]:
    events = []
    for name, payload in sse_events(data):
        event = json.loads(payload)
        assert name == event["type"], "the Anthropic SDK skips events whose event: line is missing or differs"
        if name != "error":
            ANTHROPIC_EVENT.validate_python(event)
        events.append(event)
    return events


def feed(translator: Any, data: bytes, sizes: Iterable[int] = (1,)) -> bytes:
    out = []
    pos = 0
    for size in cycle(sizes):
        if pos >= len(data):
            break
        out.append(translator.feed(data[pos : pos + size]))
        pos += size
    out.append(translator.finish())
    return b"".join(out)


def chat_stream(data: bytes, *, include_usage: bool = True, sizes: Iterable[int] = (1,)) -> bytes:
    return feed(
        o2a.StreamTranslator(client_model="gpt-4o", include_usage=include_usage, created=1700000000), data, sizes
    )


def messages_stream(data: bytes, sizes: Iterable[int] = (1,)) -> bytes:
    return feed(a2o.StreamTranslator(client_model="claude-sonnet-4-5"), data, sizes)


ANTHROPIC_PARAMS = set(anthropic.types.message_create_params.MessageCreateParamsBase.__annotations__) | {"stream"}
OPENAI_PARAMS = set(openai.types.chat.completion_create_params.CompletionCreateParamsBase.__annotations__) | {"stream"}


def assert_valid_anthropic_request(request: dict[str, Any]) -> None:
    """The rules the Messages API enforces and that translation can break."""
    assert set(request) <= ANTHROPIC_PARAMS, set(request) - ANTHROPIC_PARAMS
    assert isinstance(request["max_tokens"], int) and request["max_tokens"] > 0
    messages = request["messages"]
    assert messages
    for previous, current in pairwise(messages):
        assert previous["role"] != current["role"], "roles must alternate"
    for i, message in enumerate(messages):
        assert message["role"] in ("user", "assistant")
        assert message["content"], "no empty turns"
        for block in message["content"]:
            if block["type"] == "text":
                assert block["text"], "no empty text blocks"
        if message["role"] == "user":
            kinds = [b["type"] for b in message["content"]]
            assert kinds == sorted(kinds, key=lambda k: k != "tool_result"), "tool_result blocks come first"
        uses = [b["id"] for b in message["content"] if b["type"] == "tool_use"]
        if uses:
            answered = [b["tool_use_id"] for b in messages[i + 1]["content"] if b["type"] == "tool_result"]
            assert sorted(uses) == sorted(answered), "every tool_use is answered in the next turn"
    cache_points = sum(
        1
        for block in [*request.get("system", []), *request.get("tools", [])]
        + [b for m in messages for b in m["content"]]
        if "cache_control" in block
    )
    assert cache_points <= 4


def assert_valid_openai_request(request: dict[str, Any]) -> None:
    assert set(request) <= OPENAI_PARAMS, set(request) - OPENAI_PARAMS
    pending: set[str] = set()
    for message in request["messages"]:
        assert "cache_control" not in json.dumps(message)
        if message["role"] == "tool":
            assert message["tool_call_id"] in pending, "a tool message answers a call just made"
            pending.discard(message["tool_call_id"])
            assert isinstance(message["content"], str)
        else:
            assert not pending, f"unanswered tool calls {pending}"
        if message["role"] == "assistant":
            pending = {c["id"] for c in message.get("tool_calls", [])}
            assert all(len(i) <= 40 for i in pending)
    for tool in request.get("tools", []):
        assert tool["type"] == "function" and tool["function"]["parameters"]["type"] == "object"


# ====================================================================================== model facts


@pytest.mark.parametrize(
    ("model", "max_output", "default", "sampling", "thinking"),
    [
        ("claude-3-haiku-20240307", 4096, 4096, True, "none"),
        ("claude-3-5-sonnet-20241022", 8192, 8192, True, "none"),
        ("claude-3-7-sonnet-latest", 64000, 32000, True, "budget"),
        ("claude-opus-4-20250514", 32000, 32000, True, "budget"),
        ("claude-opus-4-1-20250805", 32000, 32000, True, "budget"),
        ("claude-sonnet-4-5-20250929", 64000, 32000, True, "budget"),
        ("claude-haiku-4-5", 64000, 32000, True, "budget"),
        ("claude-sonnet-4-6", 64000, 32000, True, "adaptive"),
        ("claude-opus-4-7", 128000, 32000, False, "adaptive"),
        ("us.anthropic.claude-opus-4-8-v1:0", 128000, 32000, False, "adaptive"),
        ("claude-sonnet-5", 64000, 32000, False, "adaptive"),
        ("my-company-alias", None, 4096, True, "none"),
    ],
)
def test_claude_facts(model: str, max_output: int | None, default: int, sampling: bool, thinking: str) -> None:
    facts = claude_facts(model)
    assert (facts.max_output, facts.default_max_tokens, facts.sampling, facts.thinking) == (
        max_output,
        default,
        sampling,
        thinking,
    )


@pytest.mark.parametrize(
    ("model", "reasoning", "effort", "max_output"),
    [
        ("gpt-4o", False, False, 16384),
        ("gpt-4o-mini-2024-07-18", False, False, 16384),
        ("gpt-4.1", False, False, 32768),
        ("o3-mini", True, True, 100000),
        ("o4-mini", True, True, 100000),
        ("gpt-5", True, True, 128000),
        ("gpt-5-chat-latest", False, False, 16384),
        ("gpt-oss-120b", False, True, None),
        ("llama-3.3-70b-versatile", False, False, None),
        ("openai/gpt-4o", False, False, 16384),
    ],
)
def test_openai_facts(model: str, reasoning: bool, effort: bool, max_output: int | None) -> None:
    facts = openai_facts(model)
    assert (facts.reasoning, facts.reasoning_effort, facts.max_output) == (reasoning, effort, max_output)


# ====================================================================================== SSE parser


def test_sse_parser_handles_crlf_split_across_chunks_comments_and_a_missing_final_blank_line() -> None:
    raw = b": hello\r\nevent: a\r\ndata: 1\r\ndata: 2\r\n\r\nid: 7\rdata: x\r\rdata: last"
    parser = SseParser()
    events = []
    for byte in raw:
        events += parser.feed(bytes([byte]))
    events += parser.finish()
    assert [(e.event, e.data) for e in events] == [("a", "1\n2"), (None, "x"), (None, "last")]


def test_sse_parser_is_linear_in_the_event_size() -> None:
    parser = SseParser()
    big = b"data: " + b"x" * 1_000_000 + b"\n\n"
    events = []
    for i in range(0, len(big), 7):  # ~140k feeds of one long event; quadratic rescanning would take minutes
        events += parser.feed(big[i : i + 7])
    assert len(events) == 1 and len(events[0].data) == 1_000_000


# ====================================================================================== OpenAI client -> Anthropic provider: request


def test_request_system_and_developer_messages_anywhere_fold_into_system_in_order() -> None:
    request = o2a.translate_request(
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {
                    "role": "developer",
                    "content": [{"type": "text", "text": "Answer in French.", "cache_control": {"type": "ephemeral"}}],
                },
                {"role": "user", "content": "How are you?"},
            ],
        },
        model_id=CLAUDE,
    )
    assert request["model"] == CLAUDE
    assert request["system"] == [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "Answer in French.", "cache_control": {"type": "ephemeral"}},
    ]
    assert [m["role"] for m in request["messages"]] == ["user", "assistant", "user"]
    assert "cache_control" not in request  # the client placed its own breakpoint
    assert_valid_anthropic_request(request)


def test_request_multipart_images_by_url_and_base64_and_a_pdf() -> None:
    request = o2a.translate_request(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare these."},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "high"}},
                        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                        {
                            "type": "file",
                            "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"},
                        },
                    ],
                }
            ]
        },
        model_id=CLAUDE,
    )
    assert request["messages"][0]["content"] == [
        {"type": "text", "text": "Compare these."},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
            "title": "spec.pdf",
        },
    ]
    assert_valid_anthropic_request(request)


def test_request_tool_calls_and_consecutive_tool_results_become_one_user_turn() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Weather in Paris and Tokyo?"},
            {
                "role": "assistant",
                "content": "Checking both.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "functions.get_weather:1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "functions.get_weather:1", "content": [{"type": "text", "text": "25C"}]},
            {"role": "user", "content": "Thanks, which is warmer?"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather by city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                },
            }
        ],
    }
    request = o2a.translate_request(body, model_id=CLAUDE)
    assistant, results = request["messages"][1], request["messages"][2]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking both."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "functions_get_weather_1", "name": "get_weather", "input": {}},
        ],
    }
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {
                "type": "tool_result",
                "tool_use_id": "functions_get_weather_1",
                "content": [{"type": "text", "text": "25C"}],
            },
            {"type": "text", "text": "Thanks, which is warmer?"},
        ],
    }
    assert request["tools"] == [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "description": "Weather by city",
        }
    ]
    assert_valid_anthropic_request(request)


def test_request_consecutive_same_role_messages_are_merged() -> None:
    request = o2a.translate_request(
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "user", "content": "b"},
                {"role": "assistant", "content": ""},
            ]
        },
        model_id=CLAUDE,
    )
    assert request["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "lookup"}}, None, {"type": "tool", "name": "lookup"}),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, None, None),
    ],
)
def test_request_tool_choice(tool_choice: Any, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "q"}],
        "tools": [{"type": "function", "function": {"name": "lookup"}}],
    }
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    request = o2a.translate_request(body, model_id=CLAUDE)
    assert request.get("tool_choice") == expected
    assert request["tools"] == [{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}]


def test_request_allowed_tools_narrow_the_tool_list_and_legacy_functions_still_work() -> None:
    request = o2a.translate_request(
        {
            "messages": [{"role": "user", "content": "q"}],
            "tools": [{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "b"}}],
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "b"}}]},
            },
        },
        model_id=CLAUDE,
    )
    assert [t["name"] for t in request["tools"]] == ["b"] and request["tool_choice"] == {"type": "any"}

    legacy = o2a.translate_request(
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": '{"x": 1}'}},
                {"role": "function", "name": "f", "content": "done"},
            ],
            "functions": [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}],
            "function_call": {"name": "f"},
        },
        model_id=CLAUDE,
    )
    use = legacy["messages"][1]["content"][0]
    assert use["type"] == "tool_use" and use["input"] == {"x": 1}
    assert legacy["messages"][2]["content"][0] == {"type": "tool_result", "tool_use_id": use["id"], "content": "done"}
    assert legacy["tool_choice"] == {"type": "tool", "name": "f"}
    assert_valid_anthropic_request(legacy)


@pytest.mark.parametrize(
    ("model", "body", "expected"),
    [
        ("claude-sonnet-4-5", {}, 32000),
        ("claude-3-5-haiku-20241022", {}, 8192),
        ("claude-3-haiku-20240307", {"max_tokens": 10000}, 4096),
        ("claude-opus-4-1", {"max_completion_tokens": 50000}, 32000),
        ("claude-sonnet-4-5", {"max_tokens": 100, "max_completion_tokens": 200}, 200),
        ("some-alias", {}, 4096),
        ("some-alias", {"max_tokens": 90000}, 90000),
    ],
)
def test_request_max_tokens_default_and_clamp(model: str, body: dict[str, Any], expected: int) -> None:
    request = o2a.translate_request({"messages": [{"role": "user", "content": "q"}], **body}, model_id=model)
    assert request["max_tokens"] == expected


@pytest.mark.parametrize(
    ("model", "body", "expected"),
    [
        (CLAUDE, {"temperature": 0.2, "top_p": 0.9}, {"temperature": 0.2}),
        (CLAUDE, {"top_p": 0.9}, {"top_p": 0.9}),
        (CLAUDE, {"temperature": 1.7}, {"temperature": 1.0}),
        (CLAUDE, {"temperature": 0.5, "top_k": 40}, {"temperature": 0.5, "top_k": 40}),
        ("claude-opus-4-7", {"temperature": 0.2, "top_p": 0.9}, {}),
        (CLAUDE, {"temperature": 0.2, "reasoning_effort": "low"}, {}),
    ],
)
def test_request_sampling(model: str, body: dict[str, Any], expected: dict[str, Any]) -> None:
    request = o2a.translate_request({"messages": [{"role": "user", "content": "q"}], **body}, model_id=model)
    assert {k: request[k] for k in ("temperature", "top_p", "top_k") if k in request} == expected


def test_request_stop_sequences_drop_whitespace_only_entries() -> None:
    request = o2a.translate_request(
        {"messages": [{"role": "user", "content": "q"}], "stop": ["\n", "END", " "]}, model_id=CLAUDE
    )
    assert request["stop_sequences"] == ["END"]
    single = o2a.translate_request({"messages": [{"role": "user", "content": "q"}], "stop": "###"}, model_id=CLAUDE)
    assert single["stop_sequences"] == ["###"]


@pytest.mark.parametrize(
    ("model", "effort", "max_tokens", "thinking", "output_config"),
    [
        (CLAUDE, "low", None, {"type": "enabled", "budget_tokens": 2048}, None),
        (CLAUDE, "high", None, {"type": "enabled", "budget_tokens": 16000}, None),
        (CLAUDE, "medium", 6000, {"type": "enabled", "budget_tokens": 3000}, None),
        (CLAUDE, "high", 1500, {"type": "enabled", "budget_tokens": 1024}, None),
        (CLAUDE, "high", 1024, None, None),
        (CLAUDE, "none", None, None, None),
        ("claude-3-5-sonnet-20241022", "high", None, None, None),
        ("claude-sonnet-4-6", "minimal", None, {"type": "adaptive"}, {"effort": "low"}),
        ("claude-sonnet-4-6", "xhigh", None, {"type": "adaptive"}, {"effort": "high"}),
        ("claude-opus-4-7", "xhigh", None, {"type": "adaptive"}, {"effort": "max"}),
    ],
)
def test_request_reasoning_effort_becomes_thinking(
    model: str,
    effort: str,
    max_tokens: int | None,
    thinking: dict[str, Any] | None,
    output_config: dict[str, Any] | None,
) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "Prove it."}], "reasoning_effort": effort}
    if max_tokens is not None:
        body["max_completion_tokens"] = max_tokens
    request = o2a.translate_request(body, model_id=model)
    assert request.get("thinking") == thinking
    assert request.get("output_config") == output_config
    if thinking and thinking["type"] == "enabled":
        assert 1024 <= thinking["budget_tokens"] < request["max_tokens"]


def test_request_forced_tool_switches_thinking_off() -> None:
    request = o2a.translate_request(
        {
            "messages": [{"role": "user", "content": "q"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "required",
            "reasoning_effort": "high",
        },
        model_id=CLAUDE,
    )
    assert "thinking" not in request and request["tool_choice"] == {"type": "any"}


def test_thinking_signature_survives_a_round_trip_through_an_openai_client() -> None:
    """Claude answers with thinking + tool_use; the OpenAI client echoes the assistant message back (as
    clients do with unknown fields) with the tool result; the next request must carry the signed block
    first, or Anthropic rejects a thinking-enabled tool loop."""
    answer = o2a.translate_response(golden_json("anthropic_message_tool_use.json"), client_model="gpt-4o")
    assistant = answer["choices"][0]["message"]
    call = assistant["tool_calls"][0]
    follow_up = {
        "messages": [
            {"role": "user", "content": "Weather in SF?"},
            assistant,
            {"role": "tool", "tool_call_id": call["id"], "content": "15C, fog"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather"}}],
        "reasoning_effort": "medium",
    }
    request = o2a.translate_request(follow_up, model_id=CLAUDE)
    assert request["thinking"]["type"] == "enabled"
    assert request["messages"][1]["content"][0] == {
        "type": "thinking",
        "thinking": "I should look up the weather.",
        "signature": "EqQBCgIYAhIMsig",
    }
    assert_valid_anthropic_request(request)

    # the same history without thinking: the signed block is removed, not sent to a non-thinking request
    plain = o2a.translate_request({**follow_up, "reasoning_effort": "none"}, model_id=CLAUDE)
    assert "thinking" not in plain
    assert all(b["type"] != "thinking" for m in plain["messages"] for b in m["content"])


def test_thinking_is_switched_off_when_the_last_tool_turn_has_no_signed_thinking() -> None:
    """E.g. the earlier turn was answered by GPT after a fall-over: Anthropic would reject thinking on."""
    request = o2a.translate_request(
        {
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "r"},
            ],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "reasoning_effort": "high",
        },
        model_id=CLAUDE,
    )
    assert "thinking" not in request
    assert_valid_anthropic_request(request)


def test_request_response_format() -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    body = {
        "messages": [{"role": "user", "content": "q"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}},
    }
    native = o2a.translate_request(body, model_id=CLAUDE)
    assert native["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "system" not in native

    older = o2a.translate_request(body, model_id="claude-3-5-sonnet-20241022")
    assert "output_config" not in older
    assert json.dumps(schema, separators=(",", ":")) in older["system"][-1]["text"]

    json_mode = o2a.translate_request(
        {
            "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}],
            "response_format": {"type": "json_object"},
        },
        model_id=CLAUDE,
    )
    assert json_mode["system"][0] == {"type": "text", "text": "S"}
    assert "JSON object" in json_mode["system"][1]["text"]


def test_request_user_stream_and_prompt_cache_key() -> None:
    request = o2a.translate_request(
        {
            "messages": [{"role": "user", "content": "q"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "user-42",
            "prompt_cache_key": "session-7",
        },
        model_id=CLAUDE,
    )
    assert request["stream"] is True and "stream_options" not in request
    assert request["metadata"] == {"user_id": "user-42"}
    assert request["cache_control"] == {"type": "ephemeral"}


def test_request_drops_fields_anthropic_would_reject_and_keeps_native_extras() -> None:
    request = o2a.translate_request(
        {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "q", "name": "alice"}],
            "frequency_penalty": 0.5,
            "presence_penalty": 0.5,
            "logit_bias": {"50256": -100},
            "logprobs": True,
            "top_logprobs": 3,
            "seed": 7,
            "store": True,
            "metadata": {"tag": "x"},
            "service_tier": "flex",
            "n": 1,
            "verbosity": "low",
            "web_search_options": {},
            "prediction": {"type": "content", "content": "x"},
            "some_future_field": {"a": 1},
            "tools": [{"type": "custom", "custom": {"name": "grammar_tool"}}],
        },
        model_id=CLAUDE,
    )
    assert_valid_anthropic_request(request)
    assert "tools" not in request and request["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "q"}]}
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "q"}], "n": 3}, "n"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        ({"messages": [{"role": "user", "content": "q"}], "modalities": ["text", "audio"]}, "modalities"),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}]},
            "messages[0].content[0].file",
        ),
        ({"messages": [{"role": "tool", "content": "orphan"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "critic", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "messages"),
    ],
)
def test_request_inexpressible_input_raises_a_typed_error(body: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as raised:
        o2a.translate_request(body, model_id=CLAUDE)
    assert raised.value.param == param


def test_request_ignores_shapes_it_does_not_use() -> None:
    request = o2a.translate_request(
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "q"}, {"type": "hologram", "x": 1}, 42]},
                {
                    "role": "assistant",
                    "content": [{"type": "refusal", "refusal": "no"}, {"type": "text", "text": "ok  "}],
                },
            ],
            "tools": "not-a-list",
            "stop": 5,
        },
        model_id=CLAUDE,
    )
    # the final assistant turn is a prefill: Anthropic rejects trailing whitespace there
    assert request["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": "ok"}]}


# ====================================================================================== Anthropic provider -> OpenAI client: JSON


def test_response_golden_message_is_a_valid_chat_completion() -> None:
    result = o2a.translate_response(golden_json("anthropic_message_tool_use.json"), client_model="gpt-4o")
    completion = ChatCompletion.model_validate(result)
    assert completion.model == "gpt-4o" and completion.id == "msg_01Aq9w938a90dw8q"
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll check the current weather in San Francisco for you."
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.id == "toolu_01A09q90qw90lq917835lq9" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "San Francisco, CA", "unit": "celsius"}
    assert result["choices"][0]["message"]["reasoning_content"] == "I should look up the weather."
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (2095 + 1000 + 4000, 503, 7598)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 4000
    assert usage.prompt_tokens_details.cache_write_tokens == 1000


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("tool_use", "stop"),  # a tool_use stop without client tool calls (server tools only)
    ],
)
def test_response_stop_reasons(stop_reason: str, finish: str) -> None:
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": CLAUDE,
        "content": [{"type": "text", "text": "x"}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    completion = ChatCompletion.model_validate(o2a.translate_response(body, client_model="gpt-4o"))
    assert completion.choices[0].finish_reason == finish


# ====================================================================================== Anthropic provider -> OpenAI client: stream


def test_stream_text_fed_one_byte_at_a_time_is_what_the_openai_sdk_expects() -> None:
    out = chat_stream(golden("anthropic_stream_text.sse"))
    expected = anthropic_final(golden("anthropic_stream_text.sse"))
    completion = openai_final(out)
    assert completion.choices[0].message.content == expected.content[0].text == "Hello! Déjà vu — 你好"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o" and completion.id == "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"
    chunks = openai_chunks(out)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 25
    assert chunks[-1]["usage"]["completion_tokens"] == 15
    assert out.endswith(b"data: [DONE]\n\n")
    assert b": ping\n\n" in out  # the provider's ping kept as a comment, invisible to the SDK


def test_stream_text_and_tool_use_in_random_chunks() -> None:
    source = golden("anthropic_stream_tool_use.sse")
    expected = anthropic_final(source)
    out = chat_stream(source, sizes=(3, 17, 1, 250, 9))
    completion = openai_final(out)
    message = completion.choices[0].message
    assert message.content == expected.content[0].text == "Okay, let's check the weather for San Francisco, CA:"
    assert message.tool_calls is not None and len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call.id == expected.content[1].id and call.function.name == "get_weather"
    assert (
        json.loads(call.function.arguments)
        == expected.content[1].input
        == {
            "location": "San Francisco, CA",
            "unit": "fahrenheit",
        }
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    usage = openai_chunks(out)[-1]["usage"]
    assert usage["prompt_tokens"] == 472 + 100 + 2000 and usage["prompt_tokens_details"]["cached_tokens"] == 2000
    assert usage["completion_tokens"] == 89


def test_stream_thinking_redacted_thinking_and_three_parallel_tool_calls() -> None:
    source = golden("anthropic_stream_thinking_parallel_tools.sse")
    out = chat_stream(source, sizes=(5,))
    chunks = openai_chunks(out)
    completion = openai_final(out)
    calls = completion.choices[0].message.tool_calls
    assert calls is not None
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("toolu_01Paris", "get_weather", {"city": "Paris"}),
        ("toolu_01Tokyo", "get_weather", {"city": "Tokyo"}),
        ("toolu_01Clock", "get_time", {}),  # no input delta streamed: "{}", never ""
    ]
    starts = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", []) if "id" in tc]
    assert [s["index"] for s in starts] == [0, 1, 2]  # tool-call indexes, not Anthropic block indexes 2, 3, 4
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks if c["choices"])
    assert reasoning == "The user wants weather in two cities.\n\nI will call get_weather twice."
    blocks = [b for c in chunks if c["choices"] for b in c["choices"][0]["delta"].get("thinking_blocks", [])]
    expected_blocks = [
        {"index": 0, "type": "thinking", "thinking": reasoning, "signature": SIG},
        {
            "index": 1,
            "type": "redacted_thinking",
            "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mPnZ5sQ7vB5URj",
        },
    ]
    assert blocks == expected_blocks  # one complete, replayable block each, not one per delta
    snapshot = completion.choices[0].message.to_dict()
    assert snapshot["thinking_blocks"] == expected_blocks and snapshot["reasoning_content"] == reasoning
    assert chunks[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 120}
    assert completion.choices[0].finish_reason == "tool_calls"


def test_streamed_thinking_blocks_replay_into_the_next_request() -> None:
    """The OpenAI SDK's own accumulator builds the assistant message; sent back, its signed blocks lead the
    tool turn of the next Anthropic request."""
    completion = openai_final(chat_stream(golden("anthropic_stream_thinking_parallel_tools.sse"), sizes=(11,)))
    assistant = completion.choices[0].message.to_dict()
    results = [{"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in assistant["tool_calls"]]
    request = o2a.translate_request(
        {
            "messages": [{"role": "user", "content": "Weather in Paris and Tokyo, and the time?"}, assistant, *results],
            "tools": [
                {"type": "function", "function": {"name": "get_weather"}},
                {"type": "function", "function": {"name": "get_time"}},
            ],
            "reasoning_effort": "low",
        },
        model_id=CLAUDE,
    )
    assert request["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    turn = request["messages"][1]["content"]
    assert turn[0] == {
        "type": "thinking",
        "thinking": "The user wants weather in two cities.\n\nI will call get_weather twice.",
        "signature": SIG,
    }
    assert turn[1]["type"] == "redacted_thinking" and [b["type"] for b in turn[2:]] == ["tool_use"] * 3
    assert_valid_anthropic_request(request)


def test_stream_translator_for_request_reads_stream_options() -> None:
    with_usage = o2a.StreamTranslator.for_request(
        {"stream": True, "stream_options": {"include_usage": True}}, client_model="m"
    )
    without = o2a.StreamTranslator.for_request({"stream": True}, client_model="m")
    source = golden("anthropic_stream_text.sse")
    assert openai_chunks(feed(with_usage, source))[-1]["choices"] == []
    assert openai_chunks(feed(without, source))[-1]["choices"] != []


def test_stream_usage_chunk_only_when_the_client_asked_for_it() -> None:
    out = chat_stream(golden("anthropic_stream_text.sse"), include_usage=False)
    chunks = openai_chunks(out)
    assert all(c["choices"] for c in chunks), "a client that did not ask for usage indexes choices[0] on every chunk"
    assert all("usage" not in c for c in chunks)


def test_stream_is_incremental() -> None:
    source = golden("anthropic_stream_text.sse")
    cut = source.index(b"Hello") + source[source.index(b"Hello") :].index(b"\n\n") + 2
    translator = o2a.StreamTranslator(client_model="gpt-4o", created=1)
    early = translator.feed(source[:cut])
    assert b'"content":"Hello"' in early and b"[DONE]" not in early


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(min_value=1, max_value=80), min_size=1, max_size=12))
def test_stream_output_does_not_depend_on_chunking(sizes: list[int]) -> None:
    for name in ("anthropic_stream_tool_use.sse", "anthropic_stream_thinking_parallel_tools.sse"):
        source = golden(name)
        whole = chat_stream(source, sizes=(len(source),))
        assert chat_stream(source, sizes=sizes) == whole


def test_stream_provider_error_mid_stream_is_an_openai_error_event() -> None:
    out = chat_stream(golden("anthropic_stream_overloaded.sse"))
    payloads = [json.loads(p) for _, p in sse_events(out) if p != "[DONE]"]
    assert payloads[-1] == {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded"}
    }
    assert b"[DONE]" not in out
    with pytest.raises(openai.APIError, match="Overloaded"):
        openai_final(out)


def test_stream_cut_before_its_end_never_looks_complete() -> None:
    source = golden("anthropic_stream_tool_use.sse")
    truncated = chat_stream(source[: source.index(b"event: message_delta")])
    with pytest.raises(openai.APIError, match="ended before"):
        openai_final(truncated)
    # cut after message_delta (the answer is complete, only message_stop is missing): closed normally
    complete = chat_stream(source[: source.index(b"event: message_stop")])
    assert complete.endswith(b"data: [DONE]\n\n")
    assert openai_final(complete).choices[0].finish_reason == "tool_calls"


# ====================================================================================== errors into the OpenAI shape


def test_error_overloaded_keeps_its_message_for_the_openai_sdk() -> None:
    body = o2a.translate_error(529, golden("anthropic_error_overloaded.json"))
    client = openai_client(body, status=529, content_type="application/json")
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert raised.value.status_code == 529
    assert raised.value.body == {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded"}


def test_error_prompt_too_long_is_openai_context_length_exceeded() -> None:
    error = json.loads(o2a.translate_error(400, golden("anthropic_error_prompt_too_long.json")))["error"]
    assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
    assert error["message"] == "prompt is too long: 210154 tokens > 200000 maximum"


def test_error_non_json_body() -> None:
    error = json.loads(o2a.translate_error(502, b"<html>Bad Gateway</html>"))["error"]
    assert error["message"] == "<html>Bad Gateway</html>" and error["type"] == "server_error"
    assert json.loads(o2a.translate_error(503, b""))["error"]["message"] == "upstream returned HTTP 503"


# ====================================================================================== Anthropic client -> OpenAI provider: request

CLAUDE_CODE_LIKE: dict[str, Any] = {
    "model": "claude-sonnet-4-20250514",
    "max_tokens": 32000,
    "stream": True,
    "system": [
        {
            "type": "text",
            "text": "You are Claude Code, Anthropic's official CLI for Claude.",
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "text", "text": "You are an interactive CLI tool that helps users with software engineering tasks."},
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>Today's date is 2026-05-01.</system-reminder>"},
                {"type": "text", "text": "List the files here.", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I'll run ls.", "signature": SIG},
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_01BashA",
                    "name": "Bash",
                    "input": {"command": "ls", "description": "List files"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01BashA", "content": "README.md\nsrc", "is_error": False},
                {"type": "text", "text": "<system-reminder>The user is in plan mode.</system-reminder>"},
            ],
        },
        {"role": "system", "content": "Keep answers under four lines."},
    ],
    "tools": [
        {
            "name": "Bash",
            "description": "Executes a given bash command",
            "input_schema": {
                "type": "object",
                "properties": {"command": {"type": "string"}, "description": {"type": "string"}},
                "required": ["command"],
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            },
        },
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    ],
    "tool_choice": {"type": "auto"},
    "thinking": {"type": "enabled", "budget_tokens": 31999},
    "metadata": {"user_id": "user_abc_account_def_session_123"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "high"},
    "temperature": 1,
}


def test_request_claude_code_shaped_request_to_gpt_4o() -> None:
    request = a2o.translate_request(CLAUDE_CODE_LIKE, model_id="gpt-4o")
    assert_valid_openai_request(request)
    assert request["model"] == "gpt-4o"
    assert request["max_tokens"] == 16384  # gpt-4o rejects more than 16384
    assert "reasoning_effort" not in request  # gpt-4o rejects the field
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    assert request["user"] == "user_abc_account_def_session_123"
    assert request["temperature"] == 1
    assert request["messages"] == [
        {
            "role": "system",
            "content": "You are Claude Code, Anthropic's official CLI for Claude.\n\n"
            "You are an interactive CLI tool that helps users with software engineering tasks.\n\n"
            "Keep answers under four lines.",
        },
        {
            "role": "user",
            "content": "<system-reminder>Today's date is 2026-05-01.</system-reminder>\n\nList the files here.",
        },
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_01BashA",
                    "type": "function",
                    "function": {"name": "Bash", "arguments": '{"command":"ls","description":"List files"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01BashA", "content": "README.md\nsrc"},
        {"role": "user", "content": "<system-reminder>The user is in plan mode.</system-reminder>"},
    ]
    assert [t["function"]["name"] for t in request["tools"]] == ["Bash"]  # the server tool is Anthropic's to run
    assert request["tool_choice"] == "auto"


def test_request_claude_code_shaped_request_to_a_reasoning_model() -> None:
    request = a2o.translate_request(CLAUDE_CODE_LIKE, model_id="o3")
    assert_valid_openai_request(request)
    assert request["max_completion_tokens"] == 32000 and "max_tokens" not in request
    assert request["reasoning_effort"] == "high"
    assert "temperature" not in request


@pytest.mark.parametrize(
    ("thinking", "output_config", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
        ({"type": "enabled", "budget_tokens": 8000}, None, "medium"),
        ({"type": "enabled", "budget_tokens": 20000}, None, "high"),
        ({"type": "adaptive"}, None, None),
        ({"type": "adaptive"}, {"effort": "low"}, "low"),
        ({"type": "adaptive"}, {"effort": "max"}, "high"),
        ({"type": "disabled"}, None, None),
    ],
)
def test_request_thinking_becomes_reasoning_effort(
    thinking: dict[str, Any], output_config: dict[str, Any] | None, effort: str | None
) -> None:
    body: dict[str, Any] = {"max_tokens": 30000, "messages": [{"role": "user", "content": "q"}], "thinking": thinking}
    if output_config:
        body["output_config"] = output_config
    assert a2o.translate_request(body, model_id="gpt-5").get("reasoning_effort") == effort


def test_request_images_documents_and_tool_result_images() -> None:
    request = a2o.translate_request(
        {
            "max_tokens": 100,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo"},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                        {
                            "type": "document",
                            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
                            "title": "spec.pdf",
                        },
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "plain notes"},
                        },
                        {"type": "text", "text": "Describe.", "cache_control": {"type": "ephemeral"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_shot", "name": "screenshot", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_shot",
                            "content": [
                                {"type": "text", "text": "captured"},
                                {
                                    "type": "image",
                                    "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                                },
                            ],
                        }
                    ],
                },
            ],
            "tools": [{"name": "screenshot", "input_schema": {"type": "object", "properties": {}}}],
        },
        model_id="gpt-4o",
    )
    assert_valid_openai_request(request)
    assert request["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x", "filename": "spec.pdf"}},
        {"type": "text", "text": "plain notes"},
        {"type": "text", "text": "Describe."},
    ]
    assert request["messages"][2] == {"role": "tool", "tool_call_id": "toolu_shot", "content": "captured"}
    assert request["messages"][3] == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
    }


def test_request_long_tool_ids_are_shortened_consistently() -> None:
    long_id = "toolu_" + "x" * 60
    request = a2o.translate_request(
        {
            "max_tokens": 10,
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": long_id, "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": long_id, "content": "r"}]},
            ],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        },
        model_id="gpt-4o",
    )
    assert_valid_openai_request(request)
    assert request["messages"][1]["tool_calls"][0]["id"] == request["messages"][2]["tool_call_id"] != long_id


@pytest.mark.parametrize(
    ("tool_choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}, None),
        ({"type": "tool", "name": "web_search"}, "auto", None),  # a dropped server tool cannot be forced
        ({"type": "none"}, "none", None),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
    ],
)
def test_request_anthropic_tool_choice(tool_choice: dict[str, Any], expected: Any, parallel: bool | None) -> None:
    request = a2o.translate_request(
        {
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "q"}],
            "tools": [
                {"name": "f", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search"},
            ],
            "tool_choice": tool_choice,
        },
        model_id="gpt-4o",
    )
    assert request["tool_choice"] == expected
    assert request.get("parallel_tool_calls") == parallel


def test_request_sampling_stop_sequences_and_structured_output() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = {
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "q"}],
        "temperature": 0.3,
        "top_p": 0.8,
        "top_k": 20,
        "stop_sequences": ["a", "b", "c", "d", "e"],
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
    }
    request = a2o.translate_request(body, model_id="gpt-4.1")
    assert (request["temperature"], request["top_p"], request["stop"]) == (0.3, 0.8, ["a", "b", "c", "d"])
    assert "top_k" not in request
    assert request["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    reasoning = a2o.translate_request(body, model_id="gpt-5-mini")
    assert not {"temperature", "top_p", "stop"} & set(reasoning)


@pytest.mark.parametrize(
    ("content", "param"),
    [
        ([{"type": "image", "source": {"type": "file", "file_id": "file_011"}}], "messages[0].content[0].source"),
        (
            [{"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}],
            "messages[0].content[0].source",
        ),
    ],
)
def test_request_anthropic_inexpressible_input_raises(content: list[dict[str, Any]], param: str) -> None:
    with pytest.raises(TranslationError) as raised:
        a2o.translate_request({"max_tokens": 10, "messages": [{"role": "user", "content": content}]}, model_id="gpt-4o")
    assert raised.value.param == param


# ====================================================================================== OpenAI provider -> Anthropic client: JSON


def test_response_golden_completion_is_a_valid_anthropic_message() -> None:
    result = a2o.translate_response(golden_json("openai_completion_tool_calls.json"), client_model="claude-sonnet-4-5")
    message = Message.model_validate(result)
    assert message.model == "claude-sonnet-4-5" and message.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "id", None), getattr(b, "input", None)) for b in message.content] == [
        ("tool_use", "call_abc123", {"location": "Boston, MA"}),
        ("tool_use", "call_def456", {"location": "Tokyo"}),
    ]
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (2082 - 1024, 1024, 117)
    assert usage.output_tokens_details is not None and usage.output_tokens_details.thinking_tokens == 64


@pytest.mark.parametrize(
    ("finish", "tool_calls", "stop_reason"),
    [
        ("stop", False, "end_turn"),
        ("length", False, "max_tokens"),
        ("content_filter", False, "refusal"),
        ("tool_calls", True, "tool_use"),
        ("stop", True, "tool_use"),  # compatible servers that report "stop" with tool calls
        (None, False, "end_turn"),
    ],
)
def test_response_finish_reasons(finish: str | None, tool_calls: bool, stop_reason: str) -> None:
    message: dict[str, Any] = {"role": "assistant", "content": "x", "reasoning_content": "private chain of thought"}
    if tool_calls:
        message["tool_calls"] = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{"}}]
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    result = Message.model_validate(a2o.translate_response(body, client_model="claude"))
    assert result.stop_reason == stop_reason
    assert all(b.type != "thinking" for b in result.content)  # unsigned reasoning is never passed as thinking
    if tool_calls:
        assert result.content[-1].type == "tool_use" and result.content[-1].input == {}  # truncated arguments


def test_response_refusal_is_text() -> None:
    body = {
        "id": "c",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": "I can't help with that."},
                "finish_reason": "stop",
            }
        ],
    }
    message = Message.model_validate(a2o.translate_response(body, client_model="claude"))
    assert message.content[0].type == "text" and message.content[0].text == "I can't help with that."


# ====================================================================================== OpenAI provider -> Anthropic client: stream


def test_messages_stream_text_is_what_the_anthropic_sdk_expects() -> None:
    source = golden("openai_stream_text.sse")
    expected = openai_final(source)
    out = messages_stream(source)
    anthropic_events(out)
    message = anthropic_final(out)
    assert message.content[0].type == "text"
    assert message.content[0].text == expected.choices[0].message.content == "Hello! Déjà vu — 你好"
    assert message.stop_reason == "max_tokens" and message.model == "claude-sonnet-4-5"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (
        86,
        1920,
        300,
    )


def test_messages_stream_parallel_tool_calls() -> None:
    source = golden("openai_stream_parallel_tools.sse")
    expected = openai_final(source).choices[0].message.tool_calls
    out = messages_stream(source, sizes=(7, 1, 33))
    events = anthropic_events(out)
    message = anthropic_final(out)
    assert (
        [(b.type, b.id, b.input) for b in message.content]
        == [("tool_use", c.id, json.loads(c.function.arguments)) for c in expected]
        == [
            ("tool_use", "call_Dn2RJJSxzDm49vlVTehseJ0k", {"city": "Paris"}),
            ("tool_use", "call_mCGI3Bm7XYkqcq3Zh4G3Ig1u", {"city": "Tokyo"}),
        ]
    )
    assert message.stop_reason == "tool_use"
    sequence = [
        (e["type"], e.get("index"))
        for e in events
        if e["type"].startswith("content_block") and e["type"] != "content_block_delta"
    ]
    assert sequence == [
        ("content_block_start", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_stop", 1),
    ]
    assert [e["type"] for e in events[-2:]] == ["message_delta", "message_stop"]
    assert events[-2]["usage"]["output_tokens"] == 51 and events[-2]["usage"]["input_tokens"] == 82


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(min_value=1, max_value=80), min_size=1, max_size=12))
def test_messages_stream_output_does_not_depend_on_chunking(sizes: list[int]) -> None:
    for name in ("openai_stream_text.sse", "openai_stream_parallel_tools.sse"):
        source = golden(name)
        assert messages_stream(source, sizes=sizes) == messages_stream(source, sizes=(len(source),))


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "llama",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def test_messages_stream_from_a_compatible_server_without_done_and_with_usage_on_the_finish_chunk() -> None:
    """Groq/vLLM style: whole tool calls in one chunk, finish_reason "stop", usage on that chunk, no [DONE]."""
    source = _chunk({"role": "assistant", "content": "Using tools."}) + _chunk(
        {
            "tool_calls": [
                {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
                {"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ]
        },
        "stop",
        {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    )
    translator = a2o.StreamTranslator(client_model="claude")
    out = translator.feed(source)
    assert out.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')  # closed without waiting
    assert translator.finish() == b""
    message = anthropic_final(out)
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.stop_reason == "tool_use" and message.usage.output_tokens == 5


def test_messages_stream_drops_unsigned_reasoning_from_compatible_servers() -> None:
    source = (
        _chunk({"role": "assistant", "reasoning_content": "Let me think."})
        + _chunk({"reasoning": "More thoughts."})
        + _chunk({"content": "42"})
        + _chunk({}, "stop")
        + b"data: [DONE]\n\n"
    )
    message = anthropic_final(messages_stream(source))
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [("text", "42")]
    assert message.stop_reason == "end_turn"


def test_messages_stream_interleaved_tool_call_deltas_reach_their_own_block() -> None:
    source = (
        _chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"a"'}}
                ]
            }
        )
        + _chunk(
            {
                "tool_calls": [
                    {"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": '{"b"'}}
                ]
            }
        )
        + _chunk(
            {
                "tool_calls": [
                    {"index": 0, "function": {"arguments": ": 1}"}},
                    {"index": 1, "function": {"arguments": ": 2}"}},
                ]
            }
        )
        + _chunk({}, "tool_calls")
        + b"data: [DONE]\n\n"
    )
    message = anthropic_final(messages_stream(source))
    assert [(b.name, b.input) for b in message.content] == [("f", {"a": 1}), ("g", {"b": 2})]


def test_messages_stream_error_chunk_and_truncation() -> None:
    error = messages_stream(
        _chunk({"content": "Hi"})
        + b'data: {"error": {"message": "The server had an error", "type": "server_error"}}\n\n'
    )
    events = anthropic_events(error)
    assert events[-1] == {"type": "error", "error": {"type": "api_error", "message": "The server had an error"}}
    with pytest.raises(anthropic.APIStatusError, match="The server had an error"):
        anthropic_final(error)

    truncated = messages_stream(
        _chunk({"content": "Hi"})
        + _chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"x'}}]})
    )
    events = anthropic_events(truncated)
    assert [e["type"] for e in events[-2:]] == ["content_block_stop", "error"]
    with pytest.raises(anthropic.APIStatusError, match="ended before"):
        anthropic_final(truncated)


# ====================================================================================== errors into the Anthropic shape


def test_error_context_length_reads_like_anthropic_prompt_too_long() -> None:
    body = a2o.translate_error(400, golden("openai_error_context_length.json"))
    client = anthropic_client(body, status=400, content_type="application/json")
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt is too long: 130532 tokens > 128000 maximum"},
    }


@pytest.mark.parametrize(
    ("status", "body", "error_type", "message"),
    [
        (
            429,
            golden("openai_error_rate_limit.json"),
            "rate_limit_error",
            json.loads(golden("openai_error_rate_limit.json"))["error"]["message"],
        ),
        (
            401,
            b'{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}}',
            "authentication_error",
            "Incorrect API key provided",
        ),
        (502, b"<html>Bad Gateway</html>", "api_error", "<html>Bad Gateway</html>"),
        (
            503,
            b'[{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}]',
            "overloaded_error",
            "The model is overloaded.",
        ),
        (404, b'{"detail": "Not Found"}', "not_found_error", "Not Found"),
    ],
)
def test_error_shapes_into_anthropic(status: int, body: bytes, error_type: str, message: str) -> None:
    assert json.loads(a2o.translate_error(status, body)) == {
        "type": "error",
        "error": {"type": error_type, "message": message},
    }


# ====================================================================================== both directions


def test_round_trip_chat_request_through_anthropic_and_back_keeps_the_conversation() -> None:
    """chat -> messages -> chat: what an OpenAI-format conversation means survives both translators."""
    chat = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": '{"c":"Rome"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "w",
                    "description": "weather",
                    "parameters": {"type": "object", "properties": {"c": {"type": "string"}}},
                },
            }
        ],
        "tool_choice": "auto",
        "max_tokens": 500,
        "temperature": 0.4,
        "stop": ["END"],
    }
    messages_body = o2a.translate_request(chat, model_id=CLAUDE)
    back = a2o.translate_request(messages_body, model_id="gpt-4o")
    assert back["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": '{"c":"Rome"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    assert back["tools"] == chat["tools"] and back["tool_choice"] == "auto"
    assert (back["max_tokens"], back["temperature"], back["stop"]) == (500, 0.4, ["END"])


@pytest.mark.parametrize("direction", ["chat_to_messages", "messages_to_chat"])
def test_translate_request_leaves_the_client_body_untouched(direction: str) -> None:
    """Translation runs once per attempt on the same client body (a fall-over translates it again)."""
    import copy

    if direction == "chat_to_messages":
        body: dict[str, Any] = {
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": "q", "cache_control": {"type": "ephemeral"}},
                {
                    "role": "assistant",
                    "content": "a  ",
                    "thinking_blocks": [{"type": "thinking", "thinking": "t", "signature": "s"}],
                },
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"properties": {}}}}],
            "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}},
            "reasoning_effort": "high",
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "output_config": {"effort": "low"},
        }
        def translate(b: dict[str, Any]) -> dict[str, Any]:
            return o2a.translate_request(b, model_id=CLAUDE)
    else:
        body = copy.deepcopy(CLAUDE_CODE_LIKE)
        def translate(b: dict[str, Any]) -> dict[str, Any]:
            return a2o.translate_request(b, model_id="o3")
    before = copy.deepcopy(body)
    first = translate(body)
    assert body == before
    assert translate(body) == first


def test_tool_names_over_openais_64_characters_are_shortened_and_restored() -> None:
    long_name = "mcp__plugin_design_figma-desktop-bridge__get_design_context_for_selection"
    assert len(long_name) > 64
    body = {
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": long_name, "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"}]},
        ],
        "tools": [
            {"name": long_name, "input_schema": {"type": "object"}},
            {"name": "Bash", "input_schema": {"type": "object"}},
        ],
        "tool_choice": {"type": "tool", "name": long_name},
    }
    request = a2o.translate_request(body, model_id="gpt-4o")
    short = request["tools"][0]["function"]["name"]
    assert (
        len(short) == 64
        and short.startswith("mcp__plugin_design")
        and request["tools"][1]["function"]["name"] == "Bash"
    )
    assert request["messages"][1]["tool_calls"][0]["function"]["name"] == short
    assert request["tool_choice"] == {"type": "function", "function": {"name": short}}
    names = a2o.tool_name_map(body)
    assert names == {short: long_name}

    completion = {
        "id": "c",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "call_9", "type": "function", "function": {"name": short, "arguments": "{}"}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    assert (
        a2o.translate_response(completion, client_model="claude", tool_names=names)["content"][0]["name"] == long_name
    )
    stream = (
        _chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_9", "type": "function", "function": {"name": short, "arguments": "{}"}}
                ]
            }
        )
        + _chunk({}, "tool_calls")
        + b"data: [DONE]\n\n"
    )
    message = anthropic_final(feed(a2o.StreamTranslator(client_model="claude", tool_names=names), stream))
    assert message.content[0].name == long_name
