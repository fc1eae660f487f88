"""Arch-Router prompt building and reply parsing (docs/arch-router.md). Pure: no I/O.

The text must match what Arch-Router-1.5B was trained on byte for byte, so the template below is a
verbatim contract (note the leading and trailing newline and the two spaces before "Follow").
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from plano_extproc.conversation import Turn
from plano_extproc.router.base import RouterError, RouteSpec

ARCH_ROUTER_TEMPLATE = (
    "\n"
    "You are a helpful assistant designed to find the best suited route.\n"
    "You are provided with route description within <routes></routes> XML tags:\n"
    "<routes>\n"
    "{routes}\n"
    "</routes>\n"
    "\n"
    "<conversation>\n"
    "{conversation}\n"
    "</conversation>\n"
    "\n"
    "Your task is to decide which route is best suit with user intent on the conversation in "
    "<conversation></conversation> XML tags.  Follow the instruction:\n"
    '1. If the latest intent from user is irrelevant or user intent is full filled, response with other route {"route": "other"}.\n'
    "2. You must analyze the route descriptions and find the best match route for user latest intent.\n"
    "3. You only response the name of the route that best matches the user's request, use the exact name in the <routes></routes>.\n"
    "\n"
    "Based on your analysis, provide your response in the following JSON formats if you decide to match any route:\n"
    '{"route": "route_name"}\n'
)

MAX_ROUTER_TOKENS = 2048
_BYTES_PER_TOKEN = 4
_TEMPLATE_TOKENS = len(ARCH_ROUTER_TEMPLATE.encode()) // _BYTES_PER_TOKEN

# The Qwen2.5 chat template, rendered by the client because the TensorRT-LLM ensemble applies none.
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
QWEN_EOS_TOKEN_ID = 151645
QWEN_PAD_TOKEN_ID = 151643


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def routes_json(routes: Sequence[RouteSpec]) -> str:
    """Routes in the order given, so the same request always yields the same prompt."""
    return _compact([{"name": r.name, "description": r.description} for r in routes])


def select_turns(conversation: Sequence[Turn], max_tokens: int = MAX_ROUTER_TOKENS) -> list[Turn]:
    """The newest turns that fit the router's token budget (bytes // 4 as the estimate).

    Walks newest to oldest; the turn that overflows is kept whole only when it is a user turn, and the
    walk stops there. When nothing fits, the last turn is kept so the router always sees something.
    """
    used = _TEMPLATE_TOKENS
    picked: list[Turn] = []
    for turn in reversed(conversation):
        used += len(turn.content.encode()) // _BYTES_PER_TOKEN
        if used > max_tokens:
            if turn.role == "user":
                picked.append(turn)
            break
        picked.append(turn)
    if not picked and conversation:
        picked.append(conversation[-1])
    picked.reverse()
    return picked


def build_router_prompt(
    routes: Sequence[RouteSpec], conversation: Sequence[Turn], max_tokens: int = MAX_ROUTER_TOKENS
) -> str:
    """The single user message Arch-Router expects (conversation already filtered, see formats)."""
    turns = [{"role": t.role, "content": t.content} for t in select_turns(conversation, max_tokens)]
    # Plain replacement, not str.format: the template itself contains braces.
    return ARCH_ROUTER_TEMPLATE.replace("{routes}", routes_json(routes)).replace("{conversation}", _compact(turns))


def render_qwen_chatml(prompt: str) -> str:
    """Qwen2.5 ChatML around the router prompt, ending where the assistant's answer starts."""
    return (
        f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{prompt}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def _repair(reply: str) -> str:
    text = reply.replace("'", '"').replace("\\n", "")
    text = text.strip()
    if text.startswith("```json"):
        text = text[len("```json") :]
    if text.endswith("```"):
        text = text[: -len("```")]
    return text.strip()


def parse_router_reply(reply: str, route_names: Sequence[str] | frozenset[str]) -> str | None:
    """The route named by an Arch-Router reply, or None for "no route".

    Empty, missing, null, "", "other" and names not among `route_names` mean no route; a reply that is
    not a JSON object with a "route" key after the usual repairs raises RouterError(kind="bad_reply").
    """
    if not reply or not reply.strip():
        return None
    text = _repair(reply)
    try:
        parsed = json.loads(text)
    except ValueError:
        raise RouterError("bad_reply", f"router reply is not JSON: {reply[:80]!r}") from None
    if not isinstance(parsed, dict):
        raise RouterError("bad_reply", f"router reply is not a JSON object: {reply[:80]!r}")
    route = parsed.get("route")
    if route is None or route in ("", "other"):
        return None
    if not isinstance(route, str):
        raise RouterError("bad_reply", f"router reply's route is not a string: {reply[:80]!r}")
    return route if route in route_names else None
