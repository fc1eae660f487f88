"""Model affinity: a session id pins the first decision for a while (TTL from insertion, LRU bound)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AffinityEntry:
    models: tuple[str, ...]
    route: str | None
    expires_at: float


@dataclass
class AffinityStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0


class AffinityCache:
    """O(1) get/put. Entries expire `ttl_seconds` after insertion; a hit does not extend them.

    A lock makes it safe from threads as well as from coroutines (no operation awaits).
    """

    def __init__(self, ttl_seconds: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_seconds <= 0 or max_entries < 1:
            raise ValueError("ttl_seconds must be > 0 and max_entries >= 1")
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, AffinityEntry] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = AffinityStats()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, session_id: str) -> AffinityEntry | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is None:
                self.stats.misses += 1
                return None
            if entry.expires_at <= now:
                del self._entries[session_id]
                self.stats.expirations += 1
                self.stats.misses += 1
                return None
            self._entries.move_to_end(session_id)
            self.stats.hits += 1
            return entry

    def put(self, session_id: str, models: tuple[str, ...], route: str | None) -> AffinityEntry:
        entry = AffinityEntry(models, route, self._clock() + self.ttl_seconds)
        with self._lock:
            self._entries[session_id] = entry
            self._entries.move_to_end(session_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.stats.evictions += 1
        return entry
