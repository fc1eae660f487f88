"""The configured router with its per-call timeout, a circuit breaker, and its failure policy.

When the primary backend times out, fails, or its breaker is open, `routing.router.fallback` decides:
`embedded` asks the embedded CPU router instead, `default` gives up on routing (the request's model or
the default model). Either way the failure is reported in the outcome and counted, never raised.

Every answer the primary gives (a route or "no route"; not cached replays, not failures) is also handed
to a fallback that learns (`learned.LearnsFromPrimary`, the embedded router): it keeps them as bounded
per-route-set examples, so that when the primary fails the fallback decides like the primary did.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence

from plano_extproc.conversation import Turn
from plano_extproc.decision import RouterOutcome
from plano_extproc.router.base import RouterBackend, RouterError, RouteSpec
from plano_extproc.router.learned import LearnsFromPrimary
from plano_extproc.ttl_cache import TtlLruCache

log = logging.getLogger(__name__)


class CircuitBreaker:
    """Closed -> open after `failure_threshold` consecutive failures; after `open_seconds` one probe
    call is let through (half-open): success closes the breaker, failure opens it again."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, failure_threshold: int = 3, open_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self.state = self.CLOSED
        self.failures = 0
        self._opened_at = 0.0
        self._probing = False

    def allow(self) -> bool:
        if self.state == self.CLOSED:
            return True
        if self.state == self.OPEN and self._clock() - self._opened_at >= self.open_seconds:
            self.state = self.HALF_OPEN
        if self.state == self.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        if self.state != self.CLOSED:
            log.info("router breaker closed: the router answers again")
        self.state, self.failures, self._probing = self.CLOSED, 0, False

    def record_failure(self) -> None:
        self.failures += 1
        self._probing = False
        if self.state == self.HALF_OPEN or self.failures >= self.failure_threshold:
            if self.state != self.OPEN:
                log.warning("router breaker open for %.1fs after %d failure(s)", self.open_seconds, self.failures)
            self.state = self.OPEN
            self._opened_at = self._clock()


def _decision_key(routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> bytes:
    """A digest of everything the router is shown: the decision cache then holds 16 bytes per entry, not
    the conversation and the routes' examples (megabytes for an agent's request)."""
    h = hashlib.blake2b(digest_size=16)
    for part in [x for r in routes for x in (r.name, r.description, *r.examples, "\x00")] + ["\x01"] + [
        x for t in conversation for x in (t.role, t.content)
    ]:
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


class RouterChain:
    def __init__(
        self,
        primary: RouterBackend,
        timeout_s: float,
        fallback: RouterBackend | None = None,
        breaker: CircuitBreaker | None = None,
        cache: TtlLruCache[bytes, str | None] | None = None,
    ) -> None:
        self.primary = primary
        self.timeout_s = timeout_s
        self.fallback = fallback if fallback is not primary else None
        #: the fallback when it learns from the primary (a runtime Protocol check costs ~20 us: once, here)
        self._learner = self.fallback if isinstance(self.fallback, LearnsFromPrimary) else None
        self.breaker = breaker
        #: recent primary answers by (routes, filtered conversation): identical requests skip the call
        self.cache = cache
        #: failures of the primary by kind (timeout, error, bad_reply, unavailable, breaker_open)
        self.failures: dict[str, int] = {}
        #: observers (metrics): (backend, seconds, failure kind or None) per call; breaker state changes
        self.on_call: Callable[[str, float, str | None], None] | None = None
        self.on_breaker: Callable[[str, str], None] | None = None

    async def choose(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> RouterOutcome:
        if not routes or not conversation:
            return RouterOutcome(None)
        key = _decision_key(routes, conversation) if self.cache is not None else None
        if key is not None:
            cached = self.cache.get(key)  # type: ignore[union-attr]
            if cached is not None:
                return RouterOutcome(cached or None, self.primary.name, cached=True)
        started = time.perf_counter()
        if self.breaker is not None and not self.breaker.allow():
            kind = "breaker_open"
        else:
            route, failure = await self._call_primary(routes, conversation)
            if self.breaker is not None and self.on_breaker is not None:
                self.on_breaker(self.primary.name, self.breaker.state)
            if failure is None:
                if key is not None:
                    self.cache.put(key, route or "")  # type: ignore[union-attr]
                self._teach(routes, conversation, route)
                seconds = time.perf_counter() - started
                if self.on_call is not None:
                    self.on_call(self.primary.name, seconds, None)
                return RouterOutcome(route, self.primary.name, seconds=seconds)
            kind = failure
        if self.on_call is not None:
            self.on_call(self.primary.name, time.perf_counter() - started, kind)
        self.failures[kind] = self.failures.get(kind, 0) + 1
        if self.fallback is None:
            return RouterOutcome(None, None, failed=True, error_kind=kind, seconds=time.perf_counter() - started)
        fallback_started = time.perf_counter()
        try:
            route = await asyncio.wait_for(self.fallback.choose_route(routes, conversation), self.timeout_s)
        except Exception as exc:
            log.warning("fallback router %s failed too (%s)", self.fallback.name, type(exc).__name__)
            if self.on_call is not None:
                kind_of = exc.kind if isinstance(exc, RouterError) else "error"
                self.on_call(self.fallback.name, time.perf_counter() - fallback_started, kind_of)
            return RouterOutcome(None, None, failed=True, error_kind=kind, seconds=time.perf_counter() - started)
        if self.on_call is not None:
            self.on_call(self.fallback.name, time.perf_counter() - fallback_started, None)
        return RouterOutcome(route, self.fallback.name, failed=True, error_kind=kind, seconds=time.perf_counter() - started)

    def _teach(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn], route: str | None) -> None:
        """Hand the primary's answer to a fallback that learns from it (cheap; never fails the request)."""
        learner = self._learner
        if learner is not None:
            try:
                learner.learn(routes, conversation, route)
            except Exception:
                log.exception("fallback router %s could not learn from the primary", self.fallback.name)

    async def _call_primary(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> tuple[str | None, str | None]:
        """(the primary's route, None), or (None, the failure kind)."""
        try:
            route = await asyncio.wait_for(self.primary.choose_route(routes, conversation), self.timeout_s)
        except TimeoutError:
            kind = "timeout"
        except RouterError as exc:
            kind = exc.kind
        except Exception:  # a backend bug must not fail the request
            log.exception("router backend %s raised", self.primary.name)
            kind = "error"
        else:
            if self.breaker is not None:
                self.breaker.record_success()
            return route, None
        if self.breaker is not None:
            self.breaker.record_failure()
        log.warning("router %s failed (%s); fallback=%s", self.primary.name, kind, self.fallback.name if self.fallback else "default")
        return None, kind

    async def close(self) -> None:
        await self.primary.close()
        if self.fallback is not None:
            await self.fallback.close()
