"""The conversation as the router sees it: plain-text turns, already filtered (DESIGN §3)."""

from __future__ import annotations

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
