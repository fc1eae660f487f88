"""A TTL + LRU map bounded by entries and, optionally, by bytes. O(1) operations. Pure (the clock is
injected); thread-safe. Every bounded in-process map of the gateway is one of these: affinity pins,
router decisions, in-flight proxied requests, the embedded router's embeddings."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0


class TtlLruCache(Generic[K, V]):
    """Entries expire `ttl_seconds` after insertion (a hit does not extend them); beyond `max_entries`
    (or `max_bytes`, when given, as measured by `weigh(key, value)`) the least recently used entries go.
    An entry heavier than `max_bytes` alone is not stored. A lock makes it safe from threads as well as
    coroutines."""

    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_bytes: int | None = None,
        weigh: Callable[[K, V], int] | None = None,
    ) -> None:
        if ttl_seconds <= 0 or max_entries < 1:
            raise ValueError("ttl_seconds must be > 0 and max_entries >= 1")
        if (max_bytes is None) != (weigh is None):
            raise ValueError("max_bytes and weigh go together")
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._weigh = weigh
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """The weight of what is stored (0 when not bounded by bytes)."""
        return self._bytes

    def get(self, key: K) -> V | None:
        now = self._clock()
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.stats.misses += 1
                return None
            expires_at, value, weight = found
            if expires_at <= now:
                del self._entries[key]
                self._bytes -= weight
                self.stats.expirations += 1
                self.stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return value

    def put(self, key: K, value: V) -> bool:
        """Store; False when the entry alone is heavier than `max_bytes` (then nothing is stored)."""
        weight = self._weigh(key, value) if self._weigh is not None else 0
        now = self._clock()
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[2]
            if self.max_bytes is not None and weight > self.max_bytes:
                return False
            self._entries[key] = (now + self.ttl_seconds, value, weight)
            self._bytes += weight
            self._evict(now)
            return True

    def put_if_absent(self, key: K, value: V, ttl_seconds: float | None = None) -> tuple[V, bool]:
        """Store `value` unless a live entry holds the key (first writer wins); returns the entry that
        holds the key afterwards and whether it is `value`. `ttl_seconds` overrides the cache's TTL for
        this entry. The lookup counts as no hit or miss. When `value` alone is heavier than `max_bytes`
        nothing is stored and (value, False) is returned."""
        weight = self._weigh(key, value) if self._weigh is not None else 0
        now = self._clock()
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                if found[0] > now:
                    self._entries.move_to_end(key)
                    return found[1], False
                del self._entries[key]
                self._bytes -= found[2]
                self.stats.expirations += 1
            if self.max_bytes is not None and weight > self.max_bytes:
                return value, False
            self._entries[key] = (now + (self.ttl_seconds if ttl_seconds is None else ttl_seconds), value, weight)
            self._bytes += weight
            self._evict(now)
            return value, True

    def pop(self, key: K) -> V | None:
        with self._lock:
            found = self._entries.pop(key, None)
            if found is None:
                return None
            self._bytes -= found[2]
            return found[1]

    def _evict(self, now: float) -> None:
        entries = self._entries
        # expired entries at the old end first (insertion order is close to expiry order)
        while entries:
            oldest_key, (expires_at, _, weight) = next(iter(entries.items()))
            over = len(entries) > self.max_entries or (self.max_bytes is not None and self._bytes > self.max_bytes)
            if expires_at <= now:
                self.stats.expirations += 1
            elif over:
                self.stats.evictions += 1
            else:
                break
            del entries[oldest_key]
            self._bytes -= weight
