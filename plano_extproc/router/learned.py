"""What the primary router taught the embedded fallback: its recent decisions, bounded, per route set.

When Arch-Router (Triton or OpenAI-compatible) answers, `RouterChain` hands the request's text and the
answer to the fallback (`LearnsFromPrimary.learn`). The embedded router keeps, per route set (names and
descriptions), the newest `per_route` requests per route and `none` requests it answered with "no route",
for at most `route_sets` route sets (least recently taught dropped first); each text is cut to its head
and tail. When the primary fails, the fallback routes with these as examples, so it behaves like the
primary did on similar requests.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from plano_extproc.conversation import Turn
from plano_extproc.router.base import RouteSpec

#: characters kept of a taught request: its head and its tail (what the router reads of it anyway)
KEEP_HEAD, KEEP_TAIL = 1536, 512

RouteSetKey = tuple[tuple[str, str], ...]


def route_set_key(routes: Sequence[RouteSpec]) -> RouteSetKey:
    """Routes are the same set when names and descriptions are (examples do not change the task)."""
    return tuple((r.name, r.description) for r in routes)


def keep(text: str) -> str:
    return text if len(text) <= KEEP_HEAD + KEEP_TAIL else text[:KEEP_HEAD] + "\n" + text[-KEEP_TAIL:]


@runtime_checkable
class LearnsFromPrimary(Protocol):
    """A fallback router that learns from the primary's answers (the embedded router does)."""

    def learn(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn], route: str | None) -> None: ...


@dataclass(slots=True)
class Taught:
    """One route set's lessons. `version` changes with every lesson (the fallback refits on change)."""

    per_route: dict[str, deque[str]]
    none: deque[str]
    version: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> tuple[int, dict[str, tuple[str, ...]], tuple[str, ...]]:
        with self.lock:
            return self.version, {k: tuple(v) for k, v in self.per_route.items()}, tuple(self.none)


class LearnedExamples:
    def __init__(self, *, per_route: int, none: int, route_sets: int) -> None:
        self.per_route, self.none, self.route_sets = per_route, none, route_sets
        self._sets: OrderedDict[RouteSetKey, Taught] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, routes: Sequence[RouteSpec], text: str, route: str | None) -> None:
        if not text.strip() or (route is not None and route not in {r.name for r in routes}):
            return
        key = route_set_key(routes)
        with self._lock:
            taught = self._sets.get(key)
            if taught is None:
                taught = Taught({r.name: deque(maxlen=self.per_route) for r in routes}, deque(maxlen=self.none))
                self._sets[key] = taught
            self._sets.move_to_end(key)
            while len(self._sets) > self.route_sets:
                self._sets.popitem(last=False)
        with taught.lock:
            target = taught.none if route is None else taught.per_route[route]
            if target.maxlen:
                target.append(keep(text))
                taught.version += 1

    def get(self, routes: Sequence[RouteSpec]) -> Taught | None:
        with self._lock:
            return self._sets.get(route_set_key(routes))

    def __len__(self) -> int:
        with self._lock:
            return len(self._sets)
