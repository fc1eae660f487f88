"""Decision cache: cost of a hit vs a router call (embedded router in-process).

    .venv/bin/python bench/decision_cache.py
"""

from __future__ import annotations

import asyncio
import statistics
import time

from plano_extproc.conversation import Turn
from plano_extproc.router.base import RouteSpec
from plano_extproc.router.chain import RouterChain
from plano_extproc.router.embedded import EmbeddedRouter
from plano_extproc.ttl_cache import TtlLruCache

ROUTES = (
    RouteSpec("code_generation", "generating new code snippets, functions, or boilerplate based on user prompts or requirements"),
    RouteSpec("complex_reasoning", "complex reasoning tasks, multi-step problem solving, or detailed explanations"),
)
QUERIES = [f"Write a Python function number {i} that implements binary search" for i in range(300)]


async def main() -> None:
    router = EmbeddedRouter(query_cache_size=0)
    await router.warm_up(ROUTES)
    cached = RouterChain(router, 5.0, cache=TtlLruCache(60, 10_000))
    plain = RouterChain(router, 5.0)
    miss, hit = [], []
    for q in QUERIES:
        conv = (Turn("user", q),)
        t = time.perf_counter()
        await plain.choose(ROUTES, conv)
        miss.append(time.perf_counter() - t)
        await cached.choose(ROUTES, conv)
        t = time.perf_counter()
        await cached.choose(ROUTES, (Turn("user", q),))
        hit.append(time.perf_counter() - t)
    us = lambda xs: statistics.median(xs) * 1e6  # noqa: E731
    print(f"router call p50 {us(miss):.0f} us; cache hit p50 {us(hit):.1f} us; ratio {statistics.median(miss) / statistics.median(hit):.0f}x")
    await router.close()


if __name__ == "__main__":
    asyncio.run(main())
