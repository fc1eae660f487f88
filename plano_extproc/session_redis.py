"""`routing.session_cache.type: redis`: X-Model-Affinity pins shared by every replica (an adapter).

* A pin is written with ``SET key value NX EX ttl``: the first decision wins and its TTL counts from that
  first decision; a later pin attempt (another replica that routed the same new session at the same
  time) loses, reads the winner with ``GET`` and answers with it. Reads are ``GET``.
* Every call is bounded by ``routing.session_cache.timeout_ms`` (socket connect and read timeouts, and
  an asyncio deadline over the whole call; the client's own retries are off).
* Fail-open: when Redis is down, slow or answers nonsense, the request is routed as a new session (never
  an error for the client). Each failure is counted by operation and kind; the first failure of an
  outage is logged (error), and so is the recovery (info). For `retry_interval` seconds after a failure
  Redis is not asked at all (counted as kind ``unavailable``), so an outage costs requests nothing;
  after that the next request tries again, and pins resume as soon as Redis answers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout
from redis.retry import Retry

from plano_extproc.affinity import AffinityEntry, SessionStats, decode_entry, encode_entry

log = logging.getLogger(__name__)

T = TypeVar("T")

#: connections to Redis per process; beyond it a call fails (counted) instead of queueing
MAX_CONNECTIONS = 256


def redact(url: str) -> str:
    """The URL without its password (logs)."""
    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)


class _Failed(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class RedisSessionStore:
    kind = "redis"

    def __init__(
        self,
        url: str,
        timeout_s: float = 0.25,
        retry_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.retry_interval_s = retry_interval_s
        self._clock = clock
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # a failed call is answered at once (fail-open), never retried
            max_connections=MAX_CONNECTIONS,
            health_check_interval=0,
        )
        self._stats = SessionStats()
        self._down_since: float | None = None
        self._skip_until = 0.0

    @property
    def stats(self) -> SessionStats:
        return self._stats

    def entries(self) -> int | None:
        return None  # DBSIZE would count other keys and cost a round trip per scrape

    # ----------------------------------------------------------------------------------- fail-open

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis call within the deadline; raises _Failed (already counted and logged)."""
        now = self._clock()
        if now < self._skip_until:
            self._count(operation, "unavailable")
            raise _Failed("unavailable")
        try:
            result = await asyncio.wait_for(call(), self.timeout_s)
        except (TimeoutError, RedisTimeout):
            self._failed(operation, "timeout", "no answer within %.0f ms" % (self.timeout_s * 1000))
        except (RedisError, OSError) as exc:
            self._failed(operation, "error", f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a client bug must not fail a request either
            log.exception("Redis session cache: unexpected error")
            self._failed(operation, "error", type(exc).__name__)
        else:
            if self._down_since is not None:
                log.info(
                    "Redis session cache at %s answers again after %.1fs: sessions are pinned again",
                    redact(self.url),
                    self._clock() - self._down_since,
                )
                self._down_since = None
                self._stats.available = True
            return result
        raise AssertionError("unreachable")  # _failed raises

    def _count(self, operation: str, kind: str) -> None:
        errors = self._stats.errors
        errors[(operation, kind)] = errors.get((operation, kind), 0) + 1

    def _failed(self, operation: str, kind: str, detail: str) -> None:
        self._count(operation, kind)
        now = self._clock()
        self._skip_until = now + self.retry_interval_s
        if self._down_since is None:
            self._down_since = now
            self._stats.available = False
            log.error(
                "Redis session cache at %s failed (%s): requests are routed without session pins until it "
                "answers again (retried every %.1fs; failures counted in plano_affinity_store_errors_total)",
                redact(self.url),
                detail,
                self.retry_interval_s,
            )
        raise _Failed(kind)

    # ------------------------------------------------------------------------------------ the store

    async def get(self, key: str) -> AffinityEntry | None:
        try:
            raw = await self._call("get", lambda: self._client.get(key))
        except _Failed:
            self._stats.misses += 1
            return None
        if raw is None:
            self._stats.misses += 1
            return None
        entry = decode_entry(raw)
        if entry is None:
            self._count("get", "bad_value")
            self._stats.misses += 1
            return None
        self._stats.hits += 1
        return entry

    async def pin(self, key: str, entry: AffinityEntry, ttl_seconds: float) -> AffinityEntry | None:
        value = encode_entry(entry)
        try:
            stored = await self._call("pin", lambda: self._set(key, value, ttl_seconds, only_new=True))
        except _Failed:
            return None
        if stored:
            self._stats.stored += 1
            return None
        # another decision holds the key: answer with it, so every replica serves the session alike
        try:
            raw = await self._call("get", lambda: self._client.get(key))
        except _Failed:
            return None
        held = decode_entry(raw) if raw is not None else None
        if held is None:  # expired in between, or not a pin we can read: ours stands for this request
            return None
        self._stats.conflicts += 1
        return held

    async def replace(self, key: str, entry: AffinityEntry, ttl_seconds: float) -> None:
        try:
            await self._call("pin", lambda: self._set(key, encode_entry(entry), ttl_seconds, only_new=False))
        except _Failed:
            return
        self._stats.stored += 1

    async def _set(self, key: str, value: bytes, ttl_seconds: float, only_new: bool) -> bool:
        if float(ttl_seconds).is_integer():
            result = await self._client.set(key, value, ex=int(ttl_seconds), nx=only_new)
        else:  # a fractional TTL: the same command in milliseconds
            result = await self._client.set(key, value, px=max(1, math.ceil(ttl_seconds * 1000)), nx=only_new)
        return bool(result)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._client.aclose(), self.timeout_s)
        except Exception:
            log.debug("closing the Redis client failed", exc_info=True)
