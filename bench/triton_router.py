"""Latency of one router call through Triton on the CPU: TritonRouter.choose_route -> gRPC -> tritonserver
(nvidia-pytriton) -> the `arch_router_cpu` Python-backend model (embedded router) -> parse.

Usage (from the repository root):

    .venv/bin/python bench/triton_router.py                 # starts its own CPU Triton
    .venv/bin/python bench/triton_router.py --url 127.0.0.1:8001 --model arch_router_cpu   # a running one

Sends N (default 200) distinct CLINC single-turn queries with the 10 CLINC domain routes, one at a time
(after a warm-up), and prints p50/p95/p99 of the whole call; then the same queries at concurrency 8
(throughput); then, for comparison, the embedded router in-process on the same queries (what the
Triton path adds is the difference). Every query is distinct, so the model's query cache never hits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plano_extproc.config import RouterConfig, TritonTuning
from plano_extproc.conversation import Turn
from plano_extproc.router.base import RouteSpec
from plano_extproc.router.triton import TritonRouter

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "eval" / "clinc_domains"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(label: str, ms: list[float]) -> str:
    return (f"{label}: n={len(ms)} p50={pct(ms, 50):.2f} ms p95={pct(ms, 95):.2f} ms "
            f"p99={pct(ms, 99):.2f} ms mean={statistics.fmean(ms):.2f} ms")


async def bench(url: str, model: str, routes: list[RouteSpec], texts: list[str], warm: list[str]) -> None:
    router = TritonRouter(RouterConfig(backend="triton", url=url, model=model, timeout_ms=5000, triton=TritonTuning(max_tokens=16)))
    try:
        await router.warm_up(routes)
        for text in warm:
            await router.choose_route(routes, [Turn("user", text)])
        ms = []
        for text in texts:
            t0 = time.perf_counter()
            await router.choose_route(routes, [Turn("user", text)])
            ms.append((time.perf_counter() - t0) * 1000)
        print(summary("triton router call, sequential", ms))

        # concurrency 8: same queries again with a suffix so they are new to the query cache
        sem = asyncio.Semaphore(8)
        lat: list[float] = []

        async def one(text: str) -> None:
            async with sem:
                t0 = time.perf_counter()
                await router.choose_route(routes, [Turn("user", text + " please")])
                lat.append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(t) for t in texts))
        wall = time.perf_counter() - t0
        print(summary("triton router call, concurrency 8", lat) + f"  throughput={len(texts) / wall:.0f}/s")
    finally:
        await router.close()


def bench_embedded(routes: list[RouteSpec], texts: list[str], warm: list[str]) -> None:
    from plano_extproc.router.embedded import EmbeddedRouter

    router = EmbeddedRouter(query_cache_size=0)
    router.warmup(routes)
    for text in warm:
        router.choose_route_sync(routes, [Turn("user", text)])
    ms = []
    for text in texts:
        t0 = time.perf_counter()
        router.choose_route_sync(routes, [Turn("user", text)])
        ms.append((time.perf_counter() - t0) * 1000)
    print(summary("embedded router in-process (reference)", ms))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--url", help="a running Triton's gRPC host:port (default: start a CPU Triton)")
    parser.add_argument("--model", default="arch_router_cpu")
    parser.add_argument("-n", type=int, default=200)
    args = parser.parse_args()

    routes = [RouteSpec(r["name"], r["description"]) for r in json.loads((args.data / "routes.json").read_text())]
    cases = [json.loads(line) for line in (args.data / "cases.jsonl").read_text().splitlines() if line.strip()]
    step = max(1, len(cases) // (args.n + 20))
    texts = [c["text"] for c in cases[::step]]
    warm, texts = texts[:20], texts[20 : 20 + args.n]

    server = None
    url = args.url
    if url is None:
        from plano_devtools.triton_local import LocalTriton

        server = LocalTriton(models=(args.model,))
        t0 = time.perf_counter()
        server.start()
        print(f"started CPU tritonserver in {time.perf_counter() - t0:.1f}s at {server.grpc_url}")
        url = server.grpc_url
    try:
        asyncio.run(bench(url, args.model, routes, texts, warm))
        if server is not None:
            print(f"triton served {server.metric('nv_inference_request_success'):.0f} requests; "
                  f"queue time total {server.metric('nv_inference_queue_duration_us') / 1000:.1f} ms, "
                  f"compute (model) total {server.metric('nv_inference_compute_infer_duration_us') / 1000:.1f} ms")
    finally:
        if server is not None:
            server.close()
    bench_embedded(routes, texts, warm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
