"""The interface every router backend implements, and the errors they raise."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from plano_extproc.conversation import Turn

#: bounds of a route's example requests (config and inline): how many, and how long each may be
MAX_ROUTE_EXAMPLES = 200
MAX_EXAMPLE_CHARS = 2000


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """What a router is told about one route: the name it must answer with, its description, and
    optional example requests (used by the embedded router; Arch-Router's prompt has no place for them)."""

    name: str
    description: str
    examples: tuple[str, ...] = ()


class RouterError(Exception):
    """The router could not decide. `kind` is a bounded label: timeout, error, bad_reply, unavailable."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class RouterBackend(abc.ABC):
    """Routes + conversation -> the name of one of the routes, or None for "no route fits"."""

    #: bounded label used in decisions, logs and metrics ("embedded", "triton", "openai")
    name: str = "router"

    @abc.abstractmethod
    async def choose_route(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> str | None:
        """Return a name from `routes` or None. Raise RouterError when no decision can be made."""

    async def warm_up(self, routes: Sequence[RouteSpec]) -> None:  # noqa: B027 - optional hook
        """Load models and prepare `routes` before the first request, so it pays no start-up cost."""

    async def ready(self) -> bool:
        """True when the backend can answer now (used by readiness checks)."""
        return True

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections, threads and models."""
