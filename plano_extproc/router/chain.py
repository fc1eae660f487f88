"""The configured router with its per-call timeout and its failure policy.

When the primary backend times out or fails, `routing.router.fallback` decides: `embedded` asks the
embedded CPU router instead, `default` gives up on routing (the request's model or the default model).
Either way the failure is reported in the outcome, never raised to the request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from plano_extproc.conversation import Turn
from plano_extproc.decision import RouterOutcome
from plano_extproc.router.base import RouterBackend, RouteSpec, RouterError

log = logging.getLogger(__name__)


class RouterChain:
    def __init__(self, primary: RouterBackend, timeout_s: float, fallback: RouterBackend | None = None) -> None:
        self.primary = primary
        self.timeout_s = timeout_s
        self.fallback = fallback if fallback is not primary else None
        self.failures: dict[str, int] = {}

    async def choose(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> RouterOutcome:
        if not routes or not conversation:
            return RouterOutcome(None)
        try:
            route = await asyncio.wait_for(self.primary.choose_route(routes, conversation), self.timeout_s)
            return RouterOutcome(route, self.primary.name)
        except asyncio.TimeoutError:
            kind = "timeout"
        except RouterError as exc:
            kind = exc.kind
        except Exception:  # a backend bug must not fail the request
            log.exception("router backend %s raised", self.primary.name)
            kind = "error"
        self.failures[kind] = self.failures.get(kind, 0) + 1
        log.warning("router %s failed (%s); fallback=%s", self.primary.name, kind, self.fallback.name if self.fallback else "default")
        if self.fallback is None:
            return RouterOutcome(None, None, failed=True, error_kind=kind)
        try:
            route = await asyncio.wait_for(self.fallback.choose_route(routes, conversation), self.timeout_s)
            return RouterOutcome(route, self.fallback.name, failed=True, error_kind=kind)
        except Exception:
            log.exception("fallback router %s failed too", self.fallback.name)
            return RouterOutcome(None, None, failed=True, error_kind=kind)

    async def close(self) -> None:
        await self.primary.close()
        if self.fallback is not None:
            await self.fallback.close()
