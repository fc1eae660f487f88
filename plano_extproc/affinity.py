"""Model affinity: a session id pins the first decision for a while (TTL from the first decision).

Pure parts: the cache key a session maps to (`affinity_key`: plano's ``plano:affinity:[{tenant}:]{session}``,
bounded whatever a client sends), the stored value (`encode_entry` / `decode_entry`: plano's
``{"model_name", "route_name"}`` plus our ranked ``models``), and the in-process store. The engine asks a
`SessionStore`; which one is `routing.session_cache.type` (memory here, redis in `session_redis.py`).

Both stores keep the *first* decision: a pin is only written when the key is free, and whoever loses
that race gets the winner's entry back (`pin`), so every replica answers a session with the same model.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from plano_extproc.ttl_cache import CacheStats, TtlLruCache

#: plano's namespace for affinity keys (shared Redis keyspace)
KEY_PREFIX = "plano:affinity:"
#: a session id longer than this (or with bytes outside printable ASCII) is stored by its hash
MAX_SESSION_KEY = 128
#: a tenant value is kept as is only when it is a short plain token; anything else is hashed
_PLAIN_TENANT = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PLAIN_SESSION = re.compile(rf"[!-~]{{1,{MAX_SESSION_KEY}}}")  # printable ASCII, no space
#: marks a hashed part; never the first character of a part kept as is
_HASHED = "~"
#: the tenant part of a request without the tenant header, when keys are tenant-scoped: no tenant's
#: value can produce it (a kept tenant never contains "~", a hashed one has 32 hex digits after it)
NO_TENANT = _HASHED
#: bounds on what a stored entry may hold (Redis is shared: a value is not trusted further than this)
MAX_ENTRY_MODELS = 16
MAX_ENTRY_TEXT = 256


def _digest(text: str) -> str:
    return _HASHED + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def session_part(session_id: str) -> str:
    """The session id as it appears in a key: as sent when short and printable, else its hash."""
    if _PLAIN_SESSION.fullmatch(session_id) and not session_id.startswith(_HASHED):
        return session_id
    return _digest(session_id)


def tenant_part(tenant: str | None) -> str:
    if tenant is None or tenant == "":
        return NO_TENANT
    return tenant if _PLAIN_TENANT.fullmatch(tenant) else _digest(tenant)


def affinity_key(session_id: str, tenant: str | None = None, *, tenant_scoped: bool = False) -> str:
    """``plano:affinity:{session}``, or ``plano:affinity:{tenant}:{session}`` when keys are tenant-scoped
    (`routing.session_cache.tenant_header` set). At most ~200 characters for any input; two different
    (tenant, session) pairs never share a key (the tenant part contains no ":"; hashed parts are marked)."""
    if not tenant_scoped:
        return KEY_PREFIX + session_part(session_id)
    return f"{KEY_PREFIX}{tenant_part(tenant)}:{session_part(session_id)}"


@dataclass(frozen=True, slots=True)
class AffinityEntry:
    models: tuple[str, ...]
    route: str | None


def encode_entry(entry: AffinityEntry) -> bytes:
    """plano's value shape (``model_name``, ``route_name``) plus the ranked ``models`` it lacks."""
    return orjson.dumps({"model_name": entry.models[0], "route_name": entry.route, "models": list(entry.models)})


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ENTRY_TEXT else None


def decode_entry(raw: bytes | str) -> AffinityEntry | None:
    """A stored value, or None when it is not one we can use (then the session is routed anew)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    route = data.get("route_name")
    if route is not None and _text(route) is None:
        return None
    models_raw = data.get("models")
    if models_raw is None:  # written by plano: one model
        model = _text(data.get("model_name"))
        return AffinityEntry((model,), route) if model is not None else None
    if not isinstance(models_raw, list) or not 0 < len(models_raw) <= MAX_ENTRY_MODELS:
        return None
    models = tuple(m for m in (_text(x) for x in models_raw) if m is not None)
    return AffinityEntry(models, route) if len(models) == len(models_raw) else None


# ------------------------------------------------------------------------------------------- stores


@dataclass
class SessionStats(CacheStats):
    """What a store counts: a cache's lookups, plus what only a session store knows; read at scrape time
    (metrics.py)."""

    #: pins written / pins not written because another decision (a race, another replica) was first
    stored: int = 0
    conflicts: int = 0
    #: (operation, kind) -> calls that failed and were answered as if the session were new
    errors: dict[tuple[str, str], int] = field(default_factory=dict)
    #: False while the backend is unreachable (memory: always True)
    available: bool = True


class SessionStore(Protocol):
    """Where pins live. Never raises: a store that cannot answer behaves as if the session were new."""

    #: "memory" | "redis" (metric label)
    kind: str

    @property
    def stats(self) -> SessionStats: ...

    def entries(self) -> int | None:
        """Pins held now, when the store can tell cheaply (None: it cannot)."""
        ...

    async def get(self, key: str) -> AffinityEntry | None: ...

    async def pin(self, key: str, entry: AffinityEntry, ttl_seconds: float) -> AffinityEntry | None:
        """Store `entry` unless the key holds a pin already. Returns that earlier pin (another decision
        for the session was first: it wins), or None when `entry` was stored (or the store failed)."""
        ...

    async def replace(self, key: str, entry: AffinityEntry, ttl_seconds: float) -> None:
        """Overwrite the key's pin (a pin that names no model of this config)."""
        ...

    async def close(self) -> None: ...


class AffinityCache(TtlLruCache[str, AffinityEntry]):
    """Key -> the session's first decision. O(1) get/put; see TtlLruCache."""

    def put(self, session_id: str, models: tuple[str, ...], route: str | None) -> AffinityEntry:  # type: ignore[override]
        entry = AffinityEntry(models, route)
        super().put(session_id, entry)
        return entry


class MemorySessionStore:
    """`routing.session_cache.type: memory`: this process's own TTL + LRU map (session_max_entries)."""

    kind = "memory"

    def __init__(
        self, max_entries: int, ttl_seconds: float = 600.0, clock: Callable[[], float] = time.monotonic, *, cache: AffinityCache | None = None
    ) -> None:
        self.cache = cache if cache is not None else AffinityCache(ttl_seconds, max_entries, clock)
        self._stored = 0
        self._conflicts = 0

    @property
    def stats(self) -> SessionStats:
        c = self.cache.stats
        return SessionStats(c.hits, c.misses, c.evictions, c.expirations, self._stored, self._conflicts)

    def entries(self) -> int | None:
        return len(self.cache)

    def resize(self, max_entries: int) -> None:
        """A reloaded config's session_max_entries (the pins held are kept; the LRU trims on the next put)."""
        self.cache.max_entries = max_entries

    async def get(self, key: str) -> AffinityEntry | None:
        return self.cache.get(key)

    async def pin(self, key: str, entry: AffinityEntry, ttl_seconds: float) -> AffinityEntry | None:
        held, stored = self.cache.put_if_absent(key, entry, ttl_seconds)
        if stored:
            self._stored += 1
            return None
        if held is entry:  # heavier than the bound: not stored
            return None
        self._conflicts += 1
        return held

    async def replace(self, key: str, entry: AffinityEntry, ttl_seconds: float) -> None:
        self.cache.pop(key)
        self.cache.put_if_absent(key, entry, ttl_seconds)
        self._stored += 1

    async def close(self) -> None:
        pass
