"""The three client API formats: what the router sees, what goes upstream, and clean errors."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plano_extproc.conversation import Turn
from plano_extproc.formats import PARSERS, ApiFormat, RequestFormatError, parse_request

PREFS = [{"name": "code", "description": "writing code", "models": ["openai/gpt-4o"]}]


def parse(fmt: ApiFormat, body: dict) -> object:
    return parse_request(fmt, orjson.dumps(body))


def test_openai_chat_filters_roles_and_joins_text_parts():
    req = parse(
        ApiFormat.OPENAI_CHAT,
        {
            "model": "gpt-4o",
            "stream": True,
            "messages": [
                {"role": "system", "content": "be nice"},
                {"role": "developer", "content": "be terse"},
                {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "here"}]},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
                {"role": "tool", "content": "42", "tool_call_id": "1"},
                {"role": "assistant", "content": "It is 42."},
                {"role": "user", "content": "thanks"},
            ],
            "routing_preferences": PREFS,
        },
    )
    assert req.model == "gpt-4o" and req.stream is True
    assert req.conversation == (Turn("user", "look\nhere"), Turn("assistant", "It is 42."), Turn("user", "thanks"))
    assert [p.name for p in req.preferences] == ["code"]
    assert "routing_preferences" not in req.body and req.body["messages"][0]["role"] == "system"


def test_anthropic_system_and_tool_results_never_reach_the_router():
    req = parse(
        ApiFormat.ANTHROPIC_MESSAGES,
        {
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 100,
            "system": "secret system prompt",
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "w", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "sunny"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Sunny."}]},
                {"role": "user", "content": [{"type": "text", "text": "and tomorrow?"}, {"type": "image", "source": {}}]},
            ],
        },
    )
    assert req.conversation == (Turn("user", "weather?"), Turn("assistant", "Sunny."), Turn("user", "and tomorrow?"))
    assert req.preferences is None and req.stream is False


def test_responses_input_string_items_and_instructions():
    req = parse(ApiFormat.OPENAI_RESPONSES, {"model": "gpt-4o", "instructions": "hidden", "input": "hello"})
    assert req.conversation == (Turn("user", "hello"),)
    req = parse(
        ApiFormat.OPENAI_RESPONSES,
        {
            "input": [
                {"role": "developer", "content": "hidden"},
                {"role": "user", "content": [{"type": "input_text", "text": "call it"}, {"type": "input_image", "image_url": "x"}]},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "tool says hi"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "done"}]},
            ]
        },
    )
    assert req.model is None
    assert req.conversation == (Turn("user", "call it"), Turn("assistant", "done"))


def test_older_routing_policy_shape_is_converted_and_stripped():
    req = parse(
        ApiFormat.OPENAI_CHAT,
        {
            "messages": [{"role": "user", "content": "hi"}],
            "routing_policy": [
                {"model": "openai/gpt-4o", "routing_preferences": [{"name": "reason", "description": "thinking"}]},
                {"model": "anthropic/claude", "routing_preferences": [{"name": "code", "description": "coding"}, {"name": "reason", "description": "thinking"}]},
            ],
        },
    )
    assert [(p.name, p.models) for p in req.preferences] == [
        ("reason", ("openai/gpt-4o", "anthropic/claude")),
        ("code", ("anthropic/claude",)),
    ]
    assert "routing_policy" not in req.body


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b"[1,2]", "must be a JSON object, not an array"),
        (b'{"messages": "hi"}', "'messages' must be an array"),
        (b'{"model": 5, "messages": []}', "model must be a string"),
        (b'{"messages": []}', "at least one message"),
        (b'{"messages": [{"role": "user", "content": 5}]}', "messages[0].content must be a string or an array"),
        (b'{"stream": "yes", "messages": [{"role": "user", "content": "x"}]}', "stream must be a boolean"),
        (b'{"messages": [{"role": "user", "content": "x"}], "routing_preferences": [{"name": "a", "description": "b", "models": []}]}', "routing_preferences[0].models"),
        (b'{"messages": [{"role": "user", "content": "x"}], "routing_preferences": [{"name": "a", "description": "b"}]}', "routing_preferences[0].models: Field required"),
        (b'{"messages": [{"role": "user", "content": "x"}], "routing_preferences": {}}', "non-empty array"),
        (b'{"messages": [{"role": "user", "content": "x"}], "routing_preferences": [{"name": "a", "description": "b", "models": ["m"]}, {"name": "a", "description": "c", "models": ["m"]}]}', "appears twice"),
    ],
)
def test_bad_openai_bodies_give_actionable_errors(body, fragment):
    with pytest.raises(RequestFormatError) as info:
        parse_request(ApiFormat.OPENAI_CHAT, body)
    assert fragment in info.value.message
    assert info.value.status == 400


def test_anthropic_role_must_be_user_or_assistant():
    with pytest.raises(RequestFormatError, match="role must be 'user' or 'assistant'"):
        parse(ApiFormat.ANTHROPIC_MESSAGES, {"messages": [{"role": "system", "content": "x"}]})


def test_responses_requires_input():
    with pytest.raises(RequestFormatError, match="'input' is required"):
        parse(ApiFormat.OPENAI_RESPONSES, {"model": "gpt-4o"})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", 3, None]), "content": json_values}
)
plausible = st.fixed_dictionaries(
    {},
    optional={
        "model": json_values,
        "stream": json_values,
        "messages": st.lists(message | json_values, max_size=4),
        "input": json_values | st.lists(message | json_values, max_size=4),
        "system": json_values,
        "routing_preferences": json_values | st.lists(st.fixed_dictionaries({"name": json_values, "description": json_values, "models": json_values}), max_size=3),
        "routing_policy": json_values,
    },
)


@pytest.mark.parametrize("fmt", list(ApiFormat))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values | plausible)
def test_arbitrary_json_yields_a_parse_or_the_typed_error(fmt, value):
    raw = json.dumps(value).encode()
    try:
        req = PARSERS[fmt](raw)
    except RequestFormatError as exc:
        assert exc.message and exc.status == 400
    else:
        assert all(isinstance(t.content, str) and t.content for t in req.conversation)


@pytest.mark.parametrize("fmt", list(ApiFormat))
@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_yield_the_typed_error(fmt, raw):
    try:
        PARSERS[fmt](raw)
    except RequestFormatError:
        pass
