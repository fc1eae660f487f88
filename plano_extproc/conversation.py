"""The conversation as the router sees it: plain-text turns, already filtered (docs/arch-router.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Turn:
    """One message the router sees: only `user` and `assistant` turns with text survive filtering."""

    role: str
    content: str


# Roles whose text never reaches the router.
HIDDEN_ROLES = frozenset({"system", "developer", "tool", "function"})


def latest_user_text(conversation: tuple[Turn, ...] | list[Turn]) -> str:
    """The newest user turn's text, or the newest turn of any role when there is no user turn."""
    for turn in reversed(conversation):
        if turn.role == "user":
            return turn.content
    return conversation[-1].content if conversation else ""


# -- client-injected context ---------------------------------------------------------------------

#: Context blocks that agent clients put into the *user* turn although the user never typed them:
#: Claude Code's ``<system-reminder>`` (todo lists, file contents, hook output), Codex's
#: ``<environment_context>`` (cwd, sandbox, shell) and ``<user_instructions>`` (AGENTS.md), and the
#: ``<command-name>``/``<command-message>``/``<command-args>``/``<local-command-stdout>`` echo of
#: slash commands. Routing on them would route every turn of a session by the same boilerplate.
CONTEXT_TAGS: tuple[str, ...] = (
    "system-reminder",
    "environment_context",
    "user_instructions",
    "command-name",
    "command-message",
    "command-args",
    "local-command-stdout",
)
_BLOCK = re.compile(
    r"<(" + "|".join(re.escape(t) for t in CONTEXT_TAGS) + r")(?:\s[^>]*)?>.*?</\1\s*>"
    # Codex's AGENTS.md block: a heading, then the file between INSTRUCTIONS tags
    r"|^# AGENTS\.md instructions for [^\n]*\n+<INSTRUCTIONS>.*?</INSTRUCTIONS>",
    re.DOTALL | re.IGNORECASE | re.MULTILINE,
)


def strip_context_blocks(text: str) -> str:
    """The user's own words of a user turn: `text` without client-injected context blocks (see
    CONTEXT_TAGS), blank lines collapsed, stripped. Only closed blocks go — agents always close them, and a
    user who merely mentions a tag ("what does <system-reminder> mean?") keeps their words. Text without
    such blocks comes back unchanged except for surrounding whitespace; a turn that held nothing else
    comes back as "" (callers then treat the turn as having no text)."""
    if "</" not in text:
        return text.strip()
    out = _BLOCK.sub("\n", text)
    return re.sub(r"\n\s*\n+", "\n\n", out).strip()
