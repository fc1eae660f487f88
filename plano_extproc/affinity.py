"""Model affinity: a session id pins the first decision for a while (TTL from insertion, LRU bound)."""

from __future__ import annotations

from dataclasses import dataclass

from plano_extproc.ttl_cache import TtlLruCache


@dataclass(frozen=True, slots=True)
class AffinityEntry:
    models: tuple[str, ...]
    route: str | None


class AffinityCache(TtlLruCache[str, AffinityEntry]):
    """X-Model-Affinity id -> the session's first decision. O(1) get/put; see TtlLruCache."""

    def put(self, session_id: str, models: tuple[str, ...], route: str | None) -> AffinityEntry:  # type: ignore[override]
        entry = AffinityEntry(models, route)
        super().put(session_id, entry)
        return entry
