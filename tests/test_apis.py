"""The three client APIs: what the router sees, what goes upstream, and clean errors."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plano_extproc.apis import ANTHROPIC_MESSAGES, CLIENT_APIS, OPENAI_CHAT, OPENAI_RESPONSES, ClientApi, RequestFormatError
from plano_extproc.conversation import Turn

PREFS = [{"name": "code", "description": "writing code", "models": ["openai/gpt-4o"]}]


def parse(api: ClientApi, body: dict) -> object:
    return api.parse(orjson.dumps(body))


def test_openai_chat_filters_roles_and_joins_text_parts():
    req = parse(
        OPENAI_CHAT,
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
        ANTHROPIC_MESSAGES,
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
    req = parse(OPENAI_RESPONSES, {"model": "gpt-4o", "instructions": "hidden", "input": "hello"})
    assert req.conversation == (Turn("user", "hello"),)
    req = parse(
        OPENAI_RESPONSES,
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
        OPENAI_CHAT,
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
        (b'{"stream": "yes", "messages": [{"role": "user", "content": "x"}]}', "stream must be a boolean"),
        (b'{"messages": [{"role": "user", "content": "x"}], "routing_preferences": [{"name": "a", "description": "b", "models": []}]}', "routing_preferences[0].models"),
        (b'{"messages": [{"role": "user", "content": "x"}], "routing_preferences": [{"name": "a", "description": "b"}]}', "routing_preferences[0].models: Field required"),
        (b'{"messages": [{"role": "user", "content": "x"}], "routing_preferences": {}}', "non-empty array"),
        (b'{"messages": [{"role": "user", "content": "x"}], "routing_preferences": [{"name": "a", "description": "b", "models": ["m"]}, {"name": "a", "description": "c", "models": ["m"]}]}', "appears twice"),
    ],
)
def test_bad_openai_bodies_give_actionable_errors(body, fragment):
    with pytest.raises(RequestFormatError) as info:
        OPENAI_CHAT.parse(body)
    assert fragment in info.value.message
    assert info.value.status == 400


def test_claude_code_shapes_are_read_liberally():
    """A `system` role inside `messages`, content the router cannot read, parts of odd shapes: skipped, not rejected."""
    req = parse(
        ANTHROPIC_MESSAGES,
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are Claude Code"},
                {"role": "user", "content": [{"type": [], "text": "x"}, {"type": "text", "text": 5}, "junk", {"type": "text", "text": "fix the bug"}]},
                {"role": "user", "content": 7},
                "not a message",
            ],
            "context_management": {"edits": []},
            "output_config": {"effort": "high"},
        },
    )
    assert req.conversation == (Turn("user", "fix the bug"),)
    assert req.body["output_config"] == {"effort": "high"} and req.body["messages"][0]["role"] == "system"
    chat = parse(OPENAI_CHAT, {"messages": []})
    assert chat.conversation == ()


def test_a_turn_ending_in_a_tool_result_is_routed_like_its_user_turn():
    chat = parse(
        OPENAI_CHAT,
        {"messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": "Let me check the weather tool for you.", "tool_calls": [{"id": "1"}]},
            {"role": "tool", "content": "sunny", "tool_call_id": "1"},
        ]},
    )
    assert chat.conversation == (Turn("user", "weather in Paris?"),)
    anthropic = parse(
        ANTHROPIC_MESSAGES,
        {"messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "t", "name": "w", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "sunny"}]},
        ]},
    )
    assert anthropic.conversation == (Turn("user", "weather in Paris?"),)
    responses = parse(
        OPENAI_RESPONSES,
        {"input": [
            {"role": "user", "content": "weather in Paris?"},
            {"type": "function_call", "call_id": "c", "name": "w", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "sunny"},
        ]},
    )
    assert responses.conversation == (Turn("user", "weather in Paris?"),)
    # a later user turn is a new request again
    later = parse(OPENAI_CHAT, {"messages": [
        {"role": "user", "content": "weather?"}, {"role": "tool", "content": "sunny", "tool_call_id": "1"},
        {"role": "assistant", "content": "Sunny."}, {"role": "user", "content": "and tomorrow?"},
    ]})
    assert later.conversation[-1] == Turn("user", "and tomorrow?") and len(later.conversation) == 3


def test_hostile_inline_routes_are_a_400():
    shared = [{"model": f"m{i}", "routing_preferences": [{"name": "same", "description": "d"}]} for i in range(33)]
    with pytest.raises(RequestFormatError) as info:
        parse(OPENAI_CHAT, {"messages": [{"role": "user", "content": "x"}], "routing_policy": shared})
    assert info.value.status == 400 and "routing_policy" in info.value.message
    many = [{"name": f"r{i}", "description": "d", "models": ["m"]} for i in range(65)]
    with pytest.raises(RequestFormatError, match="at most 64"):
        parse(OPENAI_CHAT, {"messages": [{"role": "user", "content": "x"}], "routing_preferences": many})


def test_deep_nesting_is_a_400_not_a_crash():
    deep = b'{"messages": [{"role": "user", "content": "x"}], "n": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    with pytest.raises(RequestFormatError) as info:
        OPENAI_CHAT.parse(deep)
    assert info.value.status == 400


def test_responses_requires_input():
    with pytest.raises(RequestFormatError, match="'input' is required"):
        parse(OPENAI_RESPONSES, {"model": "gpt-4o"})


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


@pytest.mark.parametrize("api", CLIENT_APIS, ids=lambda a: a.name)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values | plausible)
def test_arbitrary_json_yields_a_parse_or_the_typed_error(api, value):
    raw = json.dumps(value).encode()
    try:
        req = api.parse(raw)
    except RequestFormatError as exc:
        assert exc.message and exc.status == 400
    else:
        assert all(isinstance(t.content, str) and t.content for t in req.conversation)


@pytest.mark.parametrize("api", CLIENT_APIS, ids=lambda a: a.name)
@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_yield_the_typed_error(api, raw):
    try:
        api.parse(raw)
    except RequestFormatError:
        pass


def test_agent_context_blocks_never_reach_the_router():
    claude_code = parse(
        ANTHROPIC_MESSAGES,
        {"messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>\nAs you answer, use this todo list: write tests\n</system-reminder>"},
                {"type": "text", "text": "Explain the trade-offs between microservices and monolithic architectures"},
            ]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Read", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": "file text"},
                {"type": "text", "text": "<system-reminder>The file was modified</system-reminder>"},
            ]},
        ]},
    )
    # the user's own words only, and the tool-result turn routes like the user turn it continues
    assert claude_code.conversation == (Turn("user", "Explain the trade-offs between microservices and monolithic architectures"),)
    codex = parse(
        OPENAI_RESPONSES,
        {"input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>\n  <cwd>/repo</cwd>\n</environment_context>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Write quicksort in Go"}]},
        ]},
    )
    assert codex.conversation == (Turn("user", "Write quicksort in Go"),)


REMINDER = "<system-reminder>\nAttribution for git commits: end git commit messages with Co-Authored-By\n</system-reminder>\n"


def test_agent_harness_blocks_are_not_shown_to_the_router():
    """Claude Code's <system-reminder> blocks and Codex's environment and AGENTS.md context are the
    harness talking, not the user: the router reads the user's own words."""
    claude_code = parse(
        ANTHROPIC_MESSAGES,
        {
            "model": "claude-x",
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": REMINDER}, {"type": "text", "text": "write a binary search"}]},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": REMINDER + "\n\nnow in Rust <system-reminder>todo list empty</system-reminder>"},
            ],
        },
    )
    assert claude_code.conversation == (Turn("user", "write a binary search"), Turn("assistant", "ok"), Turn("user", "now in Rust"))
    codex = parse(
        OPENAI_RESPONSES,
        {
            "model": "gpt-4o",
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "# AGENTS.md instructions for /w\n\n<INSTRUCTIONS>\nuse tabs\n</INSTRUCTIONS>"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>\n  <cwd>/w</cwd>\n</environment_context>"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "explain the tab rule"}]},
            ],
        },
    )
    assert codex.conversation == (Turn("user", "explain the tab rule"),)
    # text that merely mentions a tag, or a message that is only a reminder, is left as it is / dropped
    chat = parse(OPENAI_CHAT, {"messages": [{"role": "user", "content": "what does <system-reminder> mean?"}, {"role": "user", "content": REMINDER}]})
    assert chat.conversation == (Turn("user", "what does <system-reminder> mean?"),)
