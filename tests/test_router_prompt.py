"""Arch-Router's prompt, pinned byte for byte, and the tolerant reply parser."""

from __future__ import annotations

import pytest

from plano_extproc.conversation import Turn
from plano_extproc.router.base import RouterError, RouteSpec
from plano_extproc.router.prompt import build_router_prompt, parse_router_reply, render_qwen_chatml, select_turns

ROUTES = [
    RouteSpec("code_generation", "generating new code snippets, functions, or boilerplate based on user prompts or requirements"),
    RouteSpec("complex_reasoning", "complex reasoning tasks, multi-step problem solving, or detailed explanations"),
]

GOLDEN = (
    "\nYou are a helpful assistant designed to find the best suited route.\n"
    "You are provided with route description within <routes></routes> XML tags:\n"
    "<routes>\n"
    '[{"name":"code_generation","description":"generating new code snippets, functions, or boilerplate based on user prompts or requirements"},'
    '{"name":"complex_reasoning","description":"complex reasoning tasks, multi-step problem solving, or detailed explanations"}]\n'
    "</routes>\n\n"
    "<conversation>\n"
    '[{"role":"user","content":"hi"},{"role":"assistant","content":"Hello! How can I assist you today?"},'
    '{"role":"user","content":"Écris une fonction \\"tri\\" en Python"}]\n'
    "</conversation>\n\n"
    "Your task is to decide which route is best suit with user intent on the conversation in <conversation></conversation> XML tags.  Follow the instruction:\n"
    '1. If the latest intent from user is irrelevant or user intent is full filled, response with other route {"route": "other"}.\n'
    "2. You must analyze the route descriptions and find the best match route for user latest intent.\n"
    "3. You only response the name of the route that best matches the user's request, use the exact name in the <routes></routes>.\n\n"
    "Based on your analysis, provide your response in the following JSON formats if you decide to match any route:\n"
    '{"route": "route_name"}\n'
)

CONVERSATION = [
    Turn("user", "hi"),
    Turn("assistant", "Hello! How can I assist you today?"),
    Turn("user", 'Écris une fonction "tri" en Python'),
]


def test_prompt_is_byte_for_byte_the_arch_router_contract():
    assert build_router_prompt(ROUTES, CONVERSATION) == GOLDEN


def test_same_request_same_prompt_and_routes_keep_their_order():
    assert build_router_prompt(ROUTES, CONVERSATION) == build_router_prompt(list(ROUTES), list(CONVERSATION))
    swapped = build_router_prompt(ROUTES[::-1], CONVERSATION)
    assert swapped.index("complex_reasoning") < swapped.index("code_generation")


def test_budget_walk_drops_old_turns_and_keeps_an_overflowing_user_turn_whole():
    # The template alone is ~260 tokens (bytes // 4); give each big turn 1000 tokens.
    old_user = Turn("user", "o" * 4000)
    old_assistant = Turn("assistant", "a" * 4000)
    big_user = Turn("user", "u" * 4000)
    latest = Turn("user", "write a sorting function")
    conversation = [old_user, old_assistant, big_user, Turn("assistant", "ok"), latest]
    picked = select_turns(conversation)
    # newest first: latest, "ok", big_user fit (~250+6+0+1000); old_assistant overflows and is not a user turn
    assert picked == [big_user, Turn("assistant", "ok"), latest]
    prompt = build_router_prompt(ROUTES, conversation)
    assert "a" * 4000 not in prompt and "o" * 4000 not in prompt and "u" * 4000 in prompt

    # an overflowing *user* turn is kept whole, and the walk stops there
    conversation = [old_user, Turn("user", "x" * 8000), latest]
    assert select_turns(conversation) == [Turn("user", "x" * 8000), latest]


def test_budget_keeps_the_last_turn_when_nothing_fits():
    huge_assistant = Turn("assistant", "z" * 10000)
    assert select_turns([huge_assistant]) == [huge_assistant]
    assert select_turns([]) == []


def test_qwen_chatml_wraps_the_prompt():
    text = render_qwen_chatml("PROMPT")
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>user\nPROMPT<|im_end|>\n<|im_start|>assistant\n")


NAMES = {"code_generation", "complex_reasoning"}


@pytest.mark.parametrize(
    "reply, route",
    [
        ('{"route": "code_generation"}', "code_generation"),
        ("{'route': 'complex_reasoning'}", "complex_reasoning"),
        ('```json\n{"route": "code_generation"}\n```', "code_generation"),
        ('{"route": "code_generation"}\\n', "code_generation"),
        ('{"route": "other"}', None),
        ('{"route": null}', None),
        ('{"route": ""}', None),
        ("{}", None),
        ('{"route": "image_generation"}', None),
        ("", None),
        ("   ", None),
    ],
)
def test_reply_parsing_tolerance(reply, route):
    assert parse_router_reply(reply, NAMES) == route


@pytest.mark.parametrize("reply", ["code_generation", '{"route": "code', "[1]", '{"route": 3}'])
def test_malformed_replies_are_router_errors(reply):
    with pytest.raises(RouterError) as info:
        parse_router_reply(reply, NAMES)
    assert info.value.kind == "bad_reply"
