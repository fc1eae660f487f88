"""What the primary router taught the embedded fallback: its recent decisions, bounded, per route set.

When Arch-Router (Triton or OpenAI-compatible) answers, `RouterChain` hands the request's text and the
answer to the fallback (`LearnsFromPrimary.learn`). The embedded router keeps, per route set (names and
descriptions), a uniform sample (reservoir sampling) of at most `per_route` requests per route and `none`
requests the primary answered with "no route", for at most `route_sets` route sets (least recently taught
dropped first); each text is cut to its head and tail. A uniform sample rather than the newest requests:
traffic comes in bursts of one kind (measured: keeping the newest 40 per route made the fallback *worse*
than knowing nothing on CLINC, whose cases arrive grouped by intent). When the primary fails, the fallback routes with these as examples, so it behaves like the
primary did on similar requests.
"""

from __future__ import annotations

import hashlib
import random
import threading
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from plano_extproc.conversation import Turn
from plano_extproc.router.base import RouteSpec

#: characters kept of a taught request: its head and its tail (what the router reads of it anyway)
KEEP_HEAD, KEEP_TAIL = 1536, 512

RouteSetKey = bytes


def route_set_key(routes: Sequence[RouteSpec]) -> RouteSetKey:
    """Routes are the same set when names and descriptions are (examples do not change the task); the
    key is a digest, so a kept route set costs 16 bytes of key however long its descriptions are."""
    h = hashlib.blake2b(digest_size=16)
    for r in routes:
        for part in (r.name, r.description):
            data = part.encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    return h.digest()


def keep(text: str) -> str:
    return text if len(text) <= KEEP_HEAD + KEEP_TAIL else text[:KEEP_HEAD] + "\n" + text[-KEEP_TAIL:]


@runtime_checkable
class LearnsFromPrimary(Protocol):
    """A fallback router that learns from the primary's answers (the embedded router does)."""

    def learn(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn], route: str | None) -> None: ...


@dataclass(slots=True)
class Reservoir:
    """A uniform sample of at most `size` of the texts offered so far (Vitter's algorithm R)."""

    size: int
    rng: random.Random
    items: list[str] = field(default_factory=list)
    seen: int = 0

    def offer(self, text: str) -> bool:
        """Add `text` to the sample or not; True when the sample changed."""
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(text)
            return True
        j = self.rng.randrange(self.seen)
        if j < self.size:
            self.items[j] = text
            return True
        return False


@dataclass(slots=True)
class Taught:
    """One route set's lessons. `version` changes with every change (the fallback refits on change)."""

    per_route: dict[str, Reservoir]
    none: Reservoir
    version: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> tuple[int, dict[str, tuple[str, ...]], tuple[str, ...]]:
        with self.lock:
            return self.version, {k: tuple(v.items) for k, v in self.per_route.items()}, tuple(self.none.items)


class LearnedExamples:
    def __init__(self, *, per_route: int, none: int, route_sets: int) -> None:
        self.per_route, self.none, self.route_sets = per_route, none, route_sets
        self._sets: OrderedDict[RouteSetKey, Taught] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, routes: Sequence[RouteSpec], text: str, route: str | None) -> str | None:
        """Offer one lesson; the text as stored (cut to head and tail) when it was kept, else None."""
        if not text.strip() or (route is not None and route not in {r.name for r in routes}):
            return None
        key = route_set_key(routes)
        with self._lock:
            taught = self._sets.get(key)
            if taught is None:
                # seeded by the route set, so the same traffic always keeps the same sample
                rng = random.Random(zlib.crc32(key))
                taught = Taught({r.name: Reservoir(self.per_route, rng) for r in routes}, Reservoir(self.none, rng))
                self._sets[key] = taught
            self._sets.move_to_end(key)
            while len(self._sets) > self.route_sets:
                self._sets.popitem(last=False)
        kept = keep(text)
        with taught.lock:
            target = taught.none if route is None else taught.per_route[route]
            if target.size and target.offer(kept):
                taught.version += 1
                return kept
        return None

    def get(self, routes: Sequence[RouteSpec]) -> Taught | None:
        with self._lock:
            return self._sets.get(route_set_key(routes))

    def __len__(self) -> int:
        with self._lock:
            return len(self._sets)
