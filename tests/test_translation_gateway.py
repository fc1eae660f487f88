"""API translation through the real Envoy, as a user of each SDK sees it.

Clients are the official `openai` and `anthropic` SDKs; providers are the local mocks, which answer in each
provider's own wire format (JSON and SSE, tool use included). Every test asserts what a user would notice
(the SDK parses the answer, text and tool arguments are right, the status is kept) and what the provider
received, in its own API.

`direct` is a gateway without routes (the request's model decides); the demo gateway (`gw`, ranked routes)
serves the fall-overs inside one request.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.harness import CLAUDE, CODE, REASONING, RunningGateway, claude, oai, user

pytestmark = pytest.mark.integration

GROQ = "llama-3.3-70b-versatile"
LOCAL = "local-chat"
CONFIG = f"""
version: v0.4.0
listeners:
  - {{name: egress_traffic, type: model, address: 0.0.0.0, port: 12000, timeout: 60s}}
model_providers:
  - {{model: openai/gpt-4o-mini, access_key: $OPENAI_API_KEY, default: true}}
  - {{model: openai/gpt-4o, access_key: $OPENAI_API_KEY}}
  - {{model: anthropic/{CLAUDE}, access_key: $ANTHROPIC_API_KEY}}
  - {{model: groq/{GROQ}, access_key: $GROQ_API_KEY}}
  - {{model: openai_compatible/{LOCAL}, base_url: "http://127.0.0.1:9/v1"}}
"""

#: a 1x1 PNG
PNG = base64.b64encode(
    bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
).decode()
IMAGE_URL = "https://example.com/cat.png"

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TIME = {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}
ASK_BOTH = 'Use get_weather {"city": "Paris"} and call get_time {"tz": "Europe/Paris"}'
CALLS = [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "Europe/Paris"})]

CHAT_TOOLS = [
    {"type": "function", "function": {"name": n, "description": f"the {n}", "parameters": p}} for n, p in (("get_weather", WEATHER), ("get_time", TIME))
]
ANTHROPIC_TOOLS = [{"name": n, "description": f"the {n}", "input_schema": p} for n, p in (("get_weather", WEATHER), ("get_time", TIME))]
RESPONSES_TOOLS = [{"type": "function", "name": n, "description": f"the {n}", "parameters": p} for n, p in (("get_weather", WEATHER), ("get_time", TIME))]


@pytest.fixture(scope="module")
def gateway() -> Iterator[RunningGateway]:
    running = RunningGateway(CONFIG)
    yield running
    running.close()


@pytest.fixture
def direct(gateway: RunningGateway) -> RunningGateway:
    for mock in gateway.gateway.mocks.values():
        mock.reset()
        mock.chunk_delay = 0.0
        mock.gzip = False
    return gateway


def received(mock) -> dict[str, Any]:
    """The only request `mock` received."""
    requests = mock.requests_snapshot()
    assert len(requests) == 1, [r["path"] for r in requests]
    return requests[0]


def prompt_tokens(request: dict[str, Any]) -> int:
    """What the mock reports as input tokens for a request it received."""
    return max(1, len(request["raw"]) // 4)


def anthropic_text(message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


# ================================================================================ OpenAI Chat -> Claude


def test_chat_client_on_claude_plain_with_system_and_developer(direct):
    reply = oai(direct).chat.completions.create(
        model=CLAUDE,
        messages=[{"role": "system", "content": "Be terse."}, {"role": "developer", "content": "Answer in French."}, *user("hello")],
        temperature=0.2,
    )
    assert reply.choices[0].message.content == f"mock-anthropic answered as {CLAUDE}"
    assert reply.choices[0].finish_reason == "stop" and reply.object == "chat.completion" and reply.model == CLAUDE
    seen = received(direct.anthropic_mock)
    assert seen["path"] == "/v1/messages" and seen["headers"]["anthropic-version"] == "2023-06-01"
    body = seen["body"]
    system = body["system"] if isinstance(body["system"], str) else "\n".join(b["text"] for b in body["system"])
    assert "Be terse." in system and "Answer in French." in system and system.index("Be terse.") < system.index("Answer in French.")
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    assert body["model"] == CLAUDE and body["max_tokens"] > 0 and body["temperature"] == 0.2
    assert reply.usage.prompt_tokens == prompt_tokens(seen) and reply.usage.completion_tokens == 4
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 4


def test_chat_client_on_claude_streams_with_usage(direct):
    direct.anthropic_mock.chunk_delay = 0.02
    chunks = list(oai(direct).chat.completions.create(model=CLAUDE, messages=user("hello"), stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"mock-anthropic answered as {CLAUDE}"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    seen = received(direct.anthropic_mock)
    assert seen["body"]["stream"] is True and chunks[-1].usage.prompt_tokens == prompt_tokens(seen)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_chat_client_on_claude_tool_round_trip(direct, stream):
    client = oai(direct)
    messages: list[dict] = [{"role": "system", "content": "You call tools."}, *user(ASK_BOTH)]
    if stream:
        with client.chat.completions.stream(model=CLAUDE, messages=messages, tools=CHAT_TOOLS) as events:
            first = events.get_final_completion()
    else:
        first = client.chat.completions.create(model=CLAUDE, messages=messages, tools=CHAT_TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == CALLS
    asked = received(direct.anthropic_mock)["body"]
    assert [(t["name"], t["input_schema"]) for t in asked["tools"]] == [("get_weather", WEATHER), ("get_time", TIME)]

    # the tool results go back: the assistant turn as the SDK gave it (plano's e2e: null content with tool_calls)
    direct.anthropic_mock.reset()
    messages.append({"role": "assistant", "content": None, "tool_calls": [c.model_dump() for c in calls]})
    messages += [{"role": "tool", "tool_call_id": c.id, "content": f"{c.function.name}: sunny"} for c in calls]
    final = client.chat.completions.create(model=CLAUDE, messages=messages, tools=CHAT_TOOLS, stream=False)
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == f"mock-anthropic answered as {CLAUDE} with tool results: get_weather: sunny | get_time: sunny"
    history = received(direct.anthropic_mock)["body"]["messages"]
    uses = [b for b in history[1]["content"] if b["type"] == "tool_use"]
    assert [(u["id"], u["name"], u["input"]) for u in uses] == [(c.id, n, a) for c, (n, a) in zip(calls, CALLS, strict=True)]
    results = [b for b in history[2]["content"] if b["type"] == "tool_result"]
    assert [r["tool_use_id"] for r in results] == [c.id for c in calls] and history[2]["role"] == "user"


def test_chat_client_tool_choice_reaches_claude(direct):
    reply = oai(direct).chat.completions.create(model=CLAUDE, messages=user("just answer"), tools=CHAT_TOOLS, tool_choice="required", parallel_tool_calls=False)
    assert [c.function.name for c in reply.choices[0].message.tool_calls] == ["get_weather"]
    assert received(direct.anthropic_mock)["body"]["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}

    direct.anthropic_mock.reset()
    named = {"type": "function", "function": {"name": "get_time"}}
    reply = oai(direct).chat.completions.create(model=CLAUDE, messages=user(ASK_BOTH), tools=CHAT_TOOLS, tool_choice=named)
    assert [c.function.name for c in reply.choices[0].message.tool_calls] == ["get_time"]
    assert received(direct.anthropic_mock)["body"]["tool_choice"]["name"] == "get_time"


def test_chat_client_images_reach_claude_as_image_blocks(direct):
    content = [
        {"type": "text", "text": "what is in these?"},
        {"type": "image_url", "image_url": {"url": IMAGE_URL}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    reply = oai(direct).chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": content}])
    assert reply.choices[0].message.content == f"mock-anthropic answered as {CLAUDE}"
    (turn,) = received(direct.anthropic_mock)["body"]["messages"]
    assert turn["content"][0] == {"type": "text", "text": "what is in these?"}
    assert turn["content"][1]["source"] == {"type": "url", "url": IMAGE_URL}
    assert turn["content"][2]["source"] == {"type": "base64", "media_type": "image/png", "data": PNG}
    assert {b["type"] for b in turn["content"][1:]} == {"image"}


def test_chat_client_on_claude_finish_reasons(direct):
    client = oai(direct)
    cut = client.chat.completions.create(model=CLAUDE, messages=user("hello"), max_tokens=2)
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("mock-anthropic answered ", "length")
    assert direct.anthropic_mock.requests_snapshot()[-1]["body"]["max_tokens"] == 2
    stopped = client.chat.completions.create(model=CLAUDE, messages=user("hello"), stop=["answered"])
    assert (stopped.choices[0].message.content, stopped.choices[0].finish_reason) == ("mock-anthropic ", "stop")
    assert direct.anthropic_mock.requests_snapshot()[-1]["body"]["stop_sequences"] == ["answered"]
    chunks = list(client.chat.completions.create(model=CLAUDE, messages=user("hello"), max_completion_tokens=1, stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]


# =============================================================================== Anthropic -> OpenAI GPT


def test_anthropic_client_on_gpt_plain(direct):
    message = claude(direct).messages.create(model="gpt-4o-mini", max_tokens=100, messages=user("hello"))
    assert anthropic_text(message) == "mock-openai answered as gpt-4o-mini"
    assert message.type == "message" and message.role == "assistant" and message.stop_reason == "end_turn" and message.model == "gpt-4o-mini"
    seen = received(direct.openai_mock)
    assert seen["path"] == "/v1/chat/completions" and seen["headers"]["authorization"].startswith("Bearer ")
    assert "x-api-key" not in seen["headers"] and "anthropic-version" not in seen["headers"]
    assert seen["body"]["messages"] == [{"role": "user", "content": "hello"}] and seen["body"]["max_tokens"] == 100
    assert message.usage.input_tokens == prompt_tokens(seen) and message.usage.output_tokens == 4


@pytest.mark.parametrize(
    "system",
    ["You are terse.", [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]],
    ids=["string", "blocks"],
)
def test_anthropic_system_prompts_reach_gpt(direct, system):
    messages = [{"role": "system", "content": "Harness note."}, *user("hello")]  # Claude Code's system role inside messages
    message = claude(direct).messages.create(model="gpt-4o-mini", max_tokens=50, system=system, messages=messages)
    assert anthropic_text(message) == "mock-openai answered as gpt-4o-mini"
    sent = received(direct.openai_mock)["body"]["messages"]
    assert sent[0]["role"] == "system" and "You are terse." in sent[0]["content"] and "Harness note." in sent[0]["content"]
    assert sent[0]["content"].index("You are terse.") < sent[0]["content"].index("Harness note.")
    assert sent[1:] == [{"role": "user", "content": "hello"}]
    assert "cache_control" not in json.dumps(sent)


def test_anthropic_client_on_gpt_streams(direct):
    direct.openai_mock.chunk_delay = 0.02
    with claude(direct).messages.stream(model="gpt-4o-mini", max_tokens=100, messages=user("hello")) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == "mock-openai answered as gpt-4o-mini"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4
    seen = received(direct.openai_mock)
    assert seen["body"]["stream"] is True and seen["body"]["stream_options"] == {"include_usage": True}
    assert final.usage.input_tokens == prompt_tokens(seen)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_anthropic_client_on_gpt_tool_round_trip(direct, stream):
    client = claude(direct)
    messages: list[dict] = user(ASK_BOTH)
    if stream:
        with client.messages.stream(model="gpt-4o-mini", max_tokens=200, messages=messages, tools=ANTHROPIC_TOOLS) as events:
            first = events.get_final_message()
    else:
        first = client.messages.create(model="gpt-4o-mini", max_tokens=200, messages=messages, tools=ANTHROPIC_TOOLS)
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == CALLS
    asked = received(direct.openai_mock)["body"]
    assert [t["function"]["name"] for t in asked["tools"]] == ["get_weather", "get_time"]
    assert asked["tools"][0]["function"]["parameters"] == WEATHER

    direct.openai_mock.reset()
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": u.id, "content": f"{u.name}: sunny"} for u in uses]},
    ]
    final = client.messages.create(model="gpt-4o-mini", max_tokens=200, messages=messages, tools=ANTHROPIC_TOOLS)
    assert final.stop_reason == "end_turn"
    assert anthropic_text(final) == "mock-openai answered as gpt-4o-mini with tool results: get_weather: sunny | get_time: sunny"
    history = received(direct.openai_mock)["body"]["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in history[1]["tool_calls"]] == [u.id for u in uses]
    assert [json.loads(c["function"]["arguments"]) for c in history[1]["tool_calls"]] == [a for _, a in CALLS]
    assert [(m["tool_call_id"], m["content"]) for m in history[2:]] == [(u.id, f"{u.name}: sunny") for u in uses]


def test_anthropic_tool_choice_reaches_gpt(direct):
    message = claude(direct).messages.create(
        model="gpt-4o-mini", max_tokens=50, messages=user("just answer"), tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )  # fmt: skip
    assert [b.name for b in message.content if b.type == "tool_use"] == ["get_weather"]
    body = received(direct.openai_mock)["body"]
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False


def test_anthropic_images_reach_gpt_as_image_url_parts(direct):
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": IMAGE_URL}},
        {"type": "text", "text": "what is in these?"},
    ]
    message = claude(direct).messages.create(model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": content}])
    assert anthropic_text(message) == "mock-openai answered as gpt-4o-mini"
    (turn,) = received(direct.openai_mock)["body"]["messages"]
    assert turn["content"] == [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": IMAGE_URL}},
        {"type": "text", "text": "what is in these?"},
    ]


def test_anthropic_client_on_gpt_stop_reasons(direct):
    client = claude(direct)
    cut = client.messages.create(model="gpt-4o-mini", max_tokens=2, messages=user("hello"))
    assert (anthropic_text(cut), cut.stop_reason) == ("mock-openai answered ", "max_tokens")
    with client.messages.stream(model="gpt-4o-mini", max_tokens=2, messages=user("hello")) as stream:
        assert stream.get_final_message().stop_reason == "max_tokens"
    stopped = client.messages.create(model="gpt-4o-mini", max_tokens=50, messages=user("hello"), stop_sequences=["answered"])
    # OpenAI reports a stop sequence as a plain "stop" and does not say which one matched
    assert anthropic_text(stopped) == "mock-openai " and stopped.stop_reason == "end_turn"
    assert direct.openai_mock.requests_snapshot()[-1]["body"]["stop"] == ["answered"]


# ===================================================================== Responses -> chat-only and Claude

RESPONSES_TARGETS = {
    GROQ: ("openai", "/openai/v1/chat/completions"),
    LOCAL: ("openai", "/v1/chat/completions"),
    CLAUDE: ("anthropic", "/v1/messages"),
}


def mock_for(gw: RunningGateway, model: str):
    return gw.gateway.mocks[RESPONSES_TARGETS[model][0]]


def answer_of(model: str) -> str:
    return f"mock-{RESPONSES_TARGETS[model][0]} answered as {model}"


@pytest.mark.parametrize("model", list(RESPONSES_TARGETS))
def test_responses_client_plain_with_instructions(direct, model):
    response = oai(direct).responses.create(model=model, instructions="Be brief.", input="hello", max_output_tokens=100)
    assert response.output_text == answer_of(model) and response.status == "completed" and response.object == "response"
    assert response.model == model and response.id
    seen = received(mock_for(direct, model))
    assert seen["path"] == RESPONSES_TARGETS[model][1]
    if model == CLAUDE:
        system = seen["body"]["system"]
        assert "Be brief." in (system if isinstance(system, str) else json.dumps(system))
        assert seen["body"]["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    else:
        assert seen["body"]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    assert response.usage.input_tokens == prompt_tokens(seen) and response.usage.output_tokens == 4
    assert response.usage.total_tokens == response.usage.input_tokens + 4


@pytest.mark.parametrize("model", list(RESPONSES_TARGETS))
def test_responses_client_streams(direct, model):
    mock_for(direct, model).chunk_delay = 0.02
    events = list(oai(direct).responses.create(model=model, input="Write a short haiku about coding", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == answer_of(model) and events[-1].response.output_text == text
    assert events[-1].response.usage.output_tokens == 4


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("model", list(RESPONSES_TARGETS))
def test_responses_client_function_tool_round_trip(direct, model, stream):
    client = oai(direct)
    mock = mock_for(direct, model)
    if stream:
        with client.responses.stream(model=model, input=ASK_BOTH, tools=RESPONSES_TOOLS) as events:
            deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
            first = events.get_final_response()
        assert len(deltas) >= 2
    else:
        first = client.responses.create(model=model, input=ASK_BOTH, tools=RESPONSES_TOOLS)
    calls = [o for o in first.output if o.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == CALLS
    assert all(c.call_id for c in calls) and len({c.call_id for c in calls}) == 2

    mock.reset()
    follow = [
        {"role": "user", "content": ASK_BOTH},
        *({"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments} for c in calls),
        *({"type": "function_call_output", "call_id": c.call_id, "output": f"{c.name}: sunny"} for c in calls),
    ]
    final = client.responses.create(model=model, input=follow, tools=RESPONSES_TOOLS)
    assert final.output_text == f"{answer_of(model)} with tool results: get_weather: sunny | get_time: sunny"
    body = received(mock)["body"]
    if model == CLAUDE:
        results = [b for b in body["messages"][-1]["content"] if b["type"] == "tool_result"]
        assert [r["tool_use_id"] for r in results] == [c.call_id for c in calls]
    else:
        assert [(m["role"], m.get("tool_call_id")) for m in body["messages"][-2:]] == [("tool", c.call_id) for c in calls]


@pytest.mark.parametrize("model", [GROQ, CLAUDE])
def test_responses_client_token_limit_is_incomplete(direct, model):
    response = oai(direct).responses.create(model=model, input="hello", max_output_tokens=2)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == f"mock-{RESPONSES_TARGETS[model][0]} answered "
    events = list(oai(direct).responses.create(model=model, input="hello", max_output_tokens=2, stream=True))
    assert events[-1].type == "response.incomplete" and events[-1].response.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize("model", [GROQ, CLAUDE])
def test_responses_client_images(direct, model):
    content = [
        {"type": "input_text", "text": "what is in these?"},
        {"type": "input_image", "image_url": IMAGE_URL},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"},
    ]
    response = oai(direct).responses.create(model=model, input=[{"role": "user", "content": content}])
    assert response.output_text == answer_of(model)
    (turn,) = received(mock_for(direct, model))["body"]["messages"]
    if model == CLAUDE:
        assert [b.get("source") for b in turn["content"][1:]] == [
            {"type": "url", "url": IMAGE_URL},
            {"type": "base64", "media_type": "image/png", "data": PNG},
        ]
    else:
        assert [p["image_url"]["url"] for p in turn["content"][1:]] == [IMAGE_URL, f"data:image/png;base64,{PNG}"]


# ============================================================================================== thinking

THOUGHT = f"mock-anthropic thinking as {CLAUDE}"


def test_anthropic_client_thinking_stream_on_claude_native(direct):
    """plano's e2e expectation: thinking blocks and deltas reach an Anthropic client on Claude untouched."""
    with claude(direct).messages.stream(
        model=CLAUDE, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024}, messages=user("Explain briefly what 2+2 equals")
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert any(e.type == "content_block_start" and e.content_block.type == "thinking" for e in events)
    assert any(e.type == "content_block_delta" and e.delta.type == "thinking_delta" for e in events)
    assert [b.type for b in final.content] == ["thinking", "text"] and final.content[0].thinking == THOUGHT


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_chat_client_reasoning_on_claude_keeps_the_thinking_signature_through_a_tool_turn(direct, stream):
    client = oai(direct)
    messages: list[dict] = user(ASK_BOTH)
    if stream:
        chunks = list(client.chat.completions.create(model=CLAUDE, messages=messages, tools=CHAT_TOOLS, reasoning_effort="high", stream=True))
        reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks if c.choices)
        with client.chat.completions.stream(model=CLAUDE, messages=messages, tools=CHAT_TOOLS, reasoning_effort="high") as events:
            message = events.get_final_completion().choices[0].message
    else:
        message = client.chat.completions.create(model=CLAUDE, messages=messages, tools=CHAT_TOOLS, reasoning_effort="high").choices[0].message
        reasoning = message.model_extra["reasoning_content"]
    assert reasoning == THOUGHT
    blocks = message.model_extra["thinking_blocks"]
    assert [(b["type"], b["thinking"]) for b in blocks] == [("thinking", THOUGHT)] and blocks[0]["signature"].startswith("mock-signature-")
    asked = direct.anthropic_mock.requests_snapshot()[-1]["body"]
    assert asked["thinking"]["type"] == "enabled" and asked["thinking"]["budget_tokens"] < asked["max_tokens"]

    direct.anthropic_mock.reset()
    calls = message.tool_calls
    messages.append({"role": "assistant", "content": None, "tool_calls": [c.model_dump() for c in calls], "thinking_blocks": blocks})
    messages += [{"role": "tool", "tool_call_id": c.id, "content": "sunny"} for c in calls]
    final = client.chat.completions.create(model=CLAUDE, messages=messages, tools=CHAT_TOOLS, reasoning_effort="high")
    assert final.choices[0].message.content == f"mock-anthropic answered as {CLAUDE} with tool results: sunny | sunny"
    sent = received(direct.anthropic_mock)["body"]
    assistant = sent["messages"][1]["content"]
    assert assistant[0] == {"type": "thinking", "thinking": THOUGHT, "signature": blocks[0]["signature"]}  # the signature survived
    assert [b["type"] for b in assistant[1:]] == ["tool_use", "tool_use"] and sent["thinking"]["type"] == "enabled"


def test_claude_thinking_in_history_is_dropped_cleanly_for_gpt(direct):
    """A conversation that started on Claude (signed thinking in the history) continues on GPT."""
    history = [
        *user("hello"),
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}, {"type": "text", "text": "hi there"}]},
        *user("and now?"),
    ]
    message = claude(direct).messages.create(model="gpt-4o-mini", max_tokens=50, thinking={"type": "enabled", "budget_tokens": 1024}, messages=history)
    assert anthropic_text(message) == "mock-openai answered as gpt-4o-mini" and [b.type for b in message.content] == ["text"]
    sent = received(direct.openai_mock)["body"]
    assert sent["messages"] == [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}, {"role": "user", "content": "and now?"}]
    assert "thinking" not in sent and "sig" not in json.dumps(sent)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_responses_client_reasoning_on_claude(direct, stream):
    client = oai(direct)
    if stream:
        events = list(client.responses.create(model=CLAUDE, input="hello", reasoning={"effort": "high"}, stream=True))
        assert "".join(e.delta for e in events if e.type == "response.reasoning_text.delta") == THOUGHT
        response = events[-1].response
    else:
        response = client.responses.create(model=CLAUDE, input="hello", reasoning={"effort": "high"})
    assert [o.type for o in response.output] == ["reasoning", "message"]
    assert response.output[0].content[0].text == THOUGHT and response.output_text == f"mock-anthropic answered as {CLAUDE}"
    assert received(direct.anthropic_mock)["body"]["thinking"]["type"] == "enabled"


# ===================================================================================== compressed answers


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_providers_that_compress_are_translated_and_same_api_streams_stay_compressed(direct, stream):
    """Real providers gzip their answers when asked, and every SDK asks. A translated attempt asks for an
    uncompressed answer (the translator reads it); so does a non-streaming one while response bodies are
    observed (Envoy's json_to_metadata reads its usage and cannot read gzip, docs/envoy.md finding (w)); a
    same-API stream reaches the client as the provider sent it."""
    for mock in direct.gateway.mocks.values():
        mock.gzip = True
    reply = oai(direct).chat.completions.create(model=CLAUDE, messages=user("hello"), stream=stream)
    text = "".join(c.choices[0].delta.content or "" for c in reply if c.choices) if stream else reply.choices[0].message.content
    assert text == f"mock-anthropic answered as {CLAUDE}"
    assert received(direct.anthropic_mock)["headers"].get("accept-encoding", "identity") == "identity"

    if stream:
        with claude(direct).messages.stream(model="gpt-4o-mini", max_tokens=20, messages=user("hello")) as events:
            assert "".join(events.text_stream) == "mock-openai answered as gpt-4o-mini"
    else:
        assert (
            anthropic_text(claude(direct).messages.create(model="gpt-4o-mini", max_tokens=20, messages=user("hello"))) == "mock-openai answered as gpt-4o-mini"
        )

    request = urllib.request.Request(
        direct.url + "/v1/chat/completions",
        data=json.dumps({"model": "gpt-4o", "messages": user("hello"), "stream": stream}).encode(),
        headers={"content-type": "application/json", "accept-encoding": "gzip"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers.get("content-encoding") == ("gzip" if stream else None)
        body = gzip.decompress(response.read()) if stream else response.read()
    if stream:
        assert body.startswith(b"data: {") and body.rstrip().endswith(b"data: [DONE]")
    else:
        assert json.loads(body)["choices"][0]["message"]["content"] == "mock-openai answered as gpt-4o"
        assert direct.openai_mock.requests_snapshot()[-1]["headers"]["accept-encoding"] == "identity"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_an_answer_compressed_anyway_is_decoded_before_translation(direct, stream):
    """A provider (or a proxy in front of it) that compresses although asked for identity."""
    direct.openai_mock.gzip = direct.anthropic_mock.gzip = "always"
    reply = oai(direct).chat.completions.create(model=CLAUDE, messages=user("hello"), stream=stream)
    text = "".join(c.choices[0].delta.content or "" for c in reply if c.choices) if stream else reply.choices[0].message.content
    assert text == f"mock-anthropic answered as {CLAUDE}"
    direct.openai_mock.fail_next(status=400)
    with pytest.raises(anthropic.BadRequestError) as info:
        claude(direct).messages.create(model="gpt-4o-mini", max_tokens=20, messages=user("hello"), stream=stream)
    assert "injected failure" in info.value.body["error"]["message"]


# ============================================================================================== errors

OPENAI_ERRORS = {400: openai.BadRequestError, 429: openai.RateLimitError, 500: openai.InternalServerError}
ANTHROPIC_ERRORS = {400: anthropic.BadRequestError, 429: anthropic.RateLimitError, 500: anthropic.InternalServerError}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("status", sorted(OPENAI_ERRORS))
def test_claude_errors_reach_a_chat_client_in_openai_shape(direct, status, stream):
    direct.anthropic_mock.fail_next(status=status, times=2)  # 429/5xx: one same-provider retry, then the last answer
    with pytest.raises(OPENAI_ERRORS[status]) as info:
        oai(direct).chat.completions.create(model=CLAUDE, messages=user("hello"), stream=stream)
    assert info.value.status_code == status
    assert "injected failure" in info.value.body["message"] and info.value.body["type"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("status", sorted(ANTHROPIC_ERRORS))
def test_gpt_errors_reach_an_anthropic_client_in_anthropic_shape(direct, status, stream):
    direct.openai_mock.fail_next(status=status, times=2)
    kinds = {400: "invalid_request_error", 429: "rate_limit_error", 500: "api_error"}
    with pytest.raises(ANTHROPIC_ERRORS[status]) as info:
        if stream:
            with claude(direct).messages.stream(model="gpt-4o-mini", max_tokens=10, messages=user("hello")) as events:
                events.get_final_message()
        else:
            claude(direct).messages.create(model="gpt-4o-mini", max_tokens=10, messages=user("hello"))
    assert info.value.status_code == status
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == kinds[status]
    assert "injected failure" in info.value.body["error"]["message"]


@pytest.mark.parametrize("model", [GROQ, CLAUDE])
@pytest.mark.parametrize("status", sorted(OPENAI_ERRORS))
def test_provider_errors_reach_a_responses_client(direct, model, status):
    mock_for(direct, model).fail_next(status=status, times=2)
    with pytest.raises(OPENAI_ERRORS[status]) as info:
        oai(direct).responses.create(model=model, input="hello")
    assert info.value.status_code == status and "injected failure" in info.value.body["message"]


def test_a_request_the_target_api_cannot_express_is_a_400_in_the_clients_shape(direct):
    with pytest.raises(openai.BadRequestError) as info:
        oai(direct).responses.create(model=CLAUDE, input="and then?", previous_response_id="resp_123")
    assert "previous_response_id" in info.value.message
    assert direct.anthropic_mock.requests_snapshot() == []


# ===================================================================================== same-API traffic


class Recorder:
    """HTTP clients for each SDK that remember the bytes it sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        hooks = {"request": [lambda request: self.bodies.append(request.read())]}
        self.openai = openai.DefaultHttpxClient(event_hooks=hooks, timeout=30)
        self.anthropic = anthropic.DefaultHttpxClient(event_hooks=hooks, timeout=30)


@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
def test_same_api_traffic_reaches_the_provider_byte_for_byte_but_the_model(direct, api):
    recorder = Recorder()
    if api == "messages":
        client = anthropic.Anthropic(base_url=direct.url, api_key="k", max_retries=0, http_client=recorder.anthropic)
        reply = client.messages.create(
            model=f"anthropic/{CLAUDE}", max_tokens=20, system=[{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
            messages=user("héllo"), tools=ANTHROPIC_TOOLS, metadata={"user_id": "u1"},
        )  # fmt: skip
        assert anthropic_text(reply) == f"mock-anthropic answered as {CLAUDE}"
        mock, full, bare = direct.anthropic_mock, f"anthropic/{CLAUDE}", CLAUDE
    else:
        client = openai.OpenAI(base_url=direct.url + "/v1", api_key="k", max_retries=0, http_client=recorder.openai)
        if api == "chat":
            reply = client.chat.completions.create(model="openai/gpt-4o", messages=user("héllo"), tools=CHAT_TOOLS, seed=7, logprobs=True)
            assert reply.choices[0].message.content == "mock-openai answered as gpt-4o"
        else:
            reply = client.responses.create(model="openai/gpt-4o", input="héllo", tools=RESPONSES_TOOLS, store=True, reasoning={"effort": "low"})
            assert reply.output_text == "mock-openai answered as gpt-4o"
        mock, full, bare = direct.openai_mock, "openai/gpt-4o", "gpt-4o"
    (sent,) = recorder.bodies
    seen = received(mock)
    assert sent.count(f'"{full}"'.encode()) == 1
    assert seen["raw"] == sent.replace(f'"{full}"'.encode(), f'"{bare}"'.encode())


# ============================================================================ fall-over inside a request
# The demo routes: code generation -> [Claude, gpt-4o], complex reasoning -> [gpt-4o, Claude].


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_anthropic_client_falls_over_from_claude_to_gpt(gw, stream):
    gw.anthropic_mock.fail_next(status=429)
    client = claude(gw)
    if stream:
        with client.messages.stream(model=CLAUDE, max_tokens=100, messages=user(CODE)) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(model=CLAUDE, max_tokens=100, messages=user(CODE))
    assert anthropic_text(message) == "mock-openai answered as gpt-4o" and message.stop_reason == "end_turn"
    assert message.model == "gpt-4o" and message.usage.output_tokens == 4
    (failed,) = gw.anthropic_mock.requests_snapshot()
    served = received(gw.openai_mock)
    assert failed["status"] == 429 and failed["path"] == "/v1/messages"
    assert served["path"] == "/v1/chat/completions" and served["body"]["messages"] == user(CODE)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_anthropic_client_falls_over_from_gpt_back_to_claude(gw, stream):
    gw.openai_mock.fail_next(status=503)
    client = claude(gw)
    if stream:
        with client.messages.stream(model=CLAUDE, max_tokens=100, messages=user(REASONING)) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(model=CLAUDE, max_tokens=100, messages=user(REASONING))
    # the answering attempt spoke the client's own API: passed through untranslated
    assert anthropic_text(message) == f"mock-anthropic answered as {CLAUDE}" and message.stop_reason == "end_turn"
    (failed,) = gw.openai_mock.requests_snapshot()
    assert failed["status"] == 503 and failed["path"] == "/v1/chat/completions"
    assert received(gw.anthropic_mock)["body"]["messages"] == user(REASONING)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_chat_client_falls_over_from_gpt_to_claude(gw, stream):
    gw.openai_mock.fail_next(status=429)
    client = oai(gw)
    if stream:
        chunks = list(client.chat.completions.create(model="gpt-4o", messages=user(REASONING), stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
    else:
        reply = client.chat.completions.create(model="gpt-4o", messages=user(REASONING))
        text, usage = reply.choices[0].message.content, reply.usage
    assert text == f"mock-anthropic answered as {CLAUDE}" and usage.completion_tokens == 4
    assert gw.openai_mock.requests_snapshot()[0]["status"] == 429
    assert received(gw.anthropic_mock)["path"] == "/v1/messages"


def test_a_translated_stream_after_a_fall_over_keeps_its_usage_chunk(gw):
    """A short answer's end can be observed before the response translator reads the request's record
    (found on one fresh connection per request): the record stays until both are done with it."""
    body = {"model": "gpt-4o", "messages": user(REASONING), "stream": True, "stream_options": {"include_usage": True}}
    for _ in range(3):
        gw.openai_mock.fail_next(status=429)
        request = urllib.request.Request(gw.url + "/v1/chat/completions", data=json.dumps(body).encode(), headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            events = [line[6:] for line in response.read().decode().splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["usage"]["completion_tokens"] == 4
    inflight = gw.gateway.server.inflight
    deadline = time.monotonic() + 10
    while (len(inflight) or inflight.parked) and time.monotonic() < deadline:  # the observer finishes after the client read
        time.sleep(0.02)
    assert len(inflight) == 0 and inflight.parked == 0  # and nothing is left behind


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(
    ("prompt", "failing", "answer"),
    [(CODE, "anthropic", "mock-openai answered as gpt-4o"), (REASONING, "openai", f"mock-anthropic answered as {CLAUDE}")],
    ids=["claude-to-gpt", "gpt-to-claude"],
)
def test_responses_client_falls_over_between_vendors(gw, prompt, failing, answer, stream):
    gw.gateway.mocks[failing].fail_next(status=500)
    client = oai(gw)
    if stream:
        events = list(client.responses.create(model="gpt-4o", input=prompt, stream=True))
        assert events[-1].type == "response.completed"
        text = events[-1].response.output_text
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == text
    else:
        text = client.responses.create(model="gpt-4o", input=prompt).output_text
    assert text == answer
    assert gw.gateway.mocks[failing].requests_snapshot()[0]["status"] == 500


def test_an_agent_session_with_tools_falls_over_at_every_turn(gw):
    """An Anthropic client's session pinned to the code-generation route: Claude fails at every turn, GPT
    answers each one (text, then tool calls, then the final answer after the tool results) in Anthropic's API."""
    client = claude(gw).with_options(default_headers={"x-model-affinity": f"agent-{time.time_ns()}"})
    messages: list[dict] = user(CODE)
    gw.anthropic_mock.fail_next(status=529)
    first = client.messages.create(model=CLAUDE, max_tokens=200, messages=messages, tools=ANTHROPIC_TOOLS)
    assert anthropic_text(first) == "mock-openai answered as gpt-4o" and first.stop_reason == "end_turn"

    messages += [{"role": "assistant", "content": anthropic_text(first)}, *user(ASK_BOTH)]
    gw.anthropic_mock.fail_next(status=529)
    second = client.messages.create(model=CLAUDE, max_tokens=200, messages=messages, tools=ANTHROPIC_TOOLS)
    uses = [b for b in second.content if b.type == "tool_use"]
    assert second.stop_reason == "tool_use" and [(u.name, u.input) for u in uses] == CALLS

    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in second.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": u.id, "content": "ok"} for u in uses]},
    ]
    gw.anthropic_mock.fail_next(status=529)
    with client.messages.stream(model=CLAUDE, max_tokens=200, messages=messages, tools=ANTHROPIC_TOOLS) as stream:
        final = stream.get_final_message()
    assert anthropic_text(final) == "mock-openai answered as gpt-4o with tool results: ok | ok" and final.stop_reason == "end_turn"
    assert [r["status"] for r in gw.anthropic_mock.requests_snapshot()] == [529, 529, 529]
    assert [r["body"]["model"] for r in gw.openai_mock.requests_snapshot()] == ["gpt-4o"] * 3


def test_every_attempt_failing_returns_the_last_providers_error_in_the_clients_shape(gw):
    gw.anthropic_mock.fail_next(status=429)
    gw.openai_mock.fail_next(status=500)
    with pytest.raises(anthropic.InternalServerError) as info:
        claude(gw).messages.create(model=CLAUDE, max_tokens=10, messages=user(CODE))
    assert info.value.status_code == 500 and info.value.body["error"]["type"] == "api_error"

    gw.openai_mock.fail_next(status=500)
    gw.anthropic_mock.fail_next(status=429)
    with pytest.raises(openai.RateLimitError) as info2:
        oai(gw).chat.completions.create(model="gpt-4o", messages=user(REASONING))
    assert info2.value.status_code == 429 and info2.value.body["code"] == "rate_limit_exceeded"  # OpenAI's own 429 shape


# ======================================================================== plano's own e2e expectations
# tests/e2e/test_model_alias_routing.py of katanemo/plano, where they need no real provider.


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_anthropic_client_on_an_alias_of_a_gpt_model(gw, stream):
    client = claude(gw)
    if stream:
        with client.messages.stream(model="fast-model", max_tokens=500, messages=user("hello")) as events:
            text = "".join(events.text_stream)
    else:
        text = anthropic_text(client.messages.create(model="fast-model", max_tokens=500, messages=user("hello")))
    assert text == "mock-openai answered as gpt-4o-mini"
    assert received(gw.openai_mock)["body"]["model"] == "gpt-4o-mini"


def test_a_400_from_the_provider_reaches_the_client_as_a_400(gw):
    gw.openai_mock.fail_next(status=400)
    with pytest.raises(openai.BadRequestError) as info:
        oai(gw).chat.completions.create(model="fast-model", max_tokens=50, messages=user("hello"))
    assert info.value.status_code == 400
    gw.openai_mock.fail_next(status=400)
    with pytest.raises(anthropic.BadRequestError) as info2:
        claude(gw).messages.create(model="fast-model", max_tokens=50, messages=user("hello"))
    assert info2.value.status_code == 400 and info2.value.body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("model", ["gpt-4o", CLAUDE])
def test_responses_echo_tool_plain_and_streaming(gw, model):
    """test_openai_responses_api_client.py: "Call the echo tool", plain and streamed, passthrough and on Claude;
    text or tool-call argument deltas are both fine there (the mock answers text: it names no tool)."""
    tools = [
        {
            "type": "function",
            "name": "echo_tool",
            "description": "Echo back the provided input",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        }
    ]
    client = oai(gw)
    response = client.responses.create(model=model, input="Call the echo tool", tools=tools)
    assert response.id and response.output_text
    events = list(client.responses.create(model=model, input="Call the echo tool", tools=tools, stream=True))
    assert any(e.type in ("response.output_text.delta", "response.function_call_arguments.delta") for e in events)
