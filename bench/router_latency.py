"""Cost of one embedded-router decision, before/after, on one core.

Usage (from the repository root):

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python bench/router_latency.py [--before REV] [--rounds 200] [--encoder-threads 1,2]

Prompts: 1 KB and 8 KB user turns made of real benchmark prompts (llm_tasks: code, passages and
questions, concatenated to length; the same texts for both versions), plus a 4 MiB prompt (fewer
rounds). Each decision embeds its prompt (the query cache is off), routes over the seed config's two
routes and the nine llm_tasks routes, in-process, one thread. `--before REV` also loads the embedded router
of git revision REV (default: the commit before this work) and measures it on the same prompts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plano_extproc.conversation import Turn  # noqa: E402
from plano_extproc.router.base import RouteSpec  # noqa: E402
from plano_extproc.router.embedded import EmbeddedRouter  # noqa: E402

DATA = ROOT.parent / "shared" / "eval" / "llm_tasks"
SEED = [
    RouteSpec("code_generation", "generating new code snippets, functions, or boilerplate based on user prompts or requirements"),
    RouteSpec("complex_reasoning", "complex reasoning tasks, multi-step problem solving, or detailed explanations"),
]


def prompts(size: int, count: int) -> list[str]:
    """`count` different prompts of `size` bytes, each a run of consecutive benchmark prompts."""
    cases = [json.loads(line)["text"] for line in (DATA / "cases.jsonl").read_text().splitlines() if line.strip()]
    out, i = [], 0
    while len(out) < count:
        text = ""
        while len(text.encode()) < size:
            text += cases[i % len(cases)] + "\n\n"
            i += 1
        out.append(text.encode()[:size].decode("utf-8", "ignore"))
    return out


def load_before(rev: str):
    """The embedded router module of `rev`, imported under another name beside the current one."""
    tmp = Path(tempfile.mkdtemp(prefix="router-before-"))
    for name in ("embedded", "settings"):
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:plano_extproc/router/{name}.py"],
                             check=True, capture_output=True, text=True).stdout
        src = src.replace("from plano_extproc.router.settings import", "from before_settings import")
        (tmp / f"before_{name}.py").write_text(src)
    sys.path.insert(0, str(tmp))
    spec = importlib.util.spec_from_file_location("before_embedded", tmp / "before_embedded.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["before_embedded"] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def measure(router, routes: list[RouteSpec], texts: list[str], rounds: int) -> tuple[float, float, float]:
    """p50 and p95 of the wall time, and the process's CPU time (all threads) per decision, in ms."""
    router.choose_route_sync(routes, [Turn("user", texts[0])])  # route set built, model warm
    times = []
    cpu0 = time.process_time()
    for r in range(rounds):
        conv = [Turn("user", texts[r % len(texts)])]
        t0 = time.perf_counter()
        router.choose_route_sync(routes, conv)
        times.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / rounds
    times.sort()
    return statistics.median(times) * 1000, times[int(len(times) * 0.95)] * 1000, cpu * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default="", help="git revision of the router to compare with (e.g. 0781373)")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--encoder-threads", default="1",
                    help="encoder_threads of the current router, comma-separated to compare several (e.g. 1,2); "
                         "1 is the cost on one core")
    args = ap.parse_args()
    llm_routes = [RouteSpec(r["name"], r["description"]) for r in json.loads((DATA / "routes.json").read_text())]
    sets = {"1 KB": prompts(1024, 50), "8 KB": prompts(8192, 50), "4 MiB": prompts(4 << 20, 2)}
    threads = [int(n) for n in args.encoder_threads.split(",")]
    routers = {
        "after" if len(threads) == 1 else f"after/{n}t": EmbeddedRouter(query_cache_size=0, encoder_threads=n) for n in threads
    }
    if args.before:
        old = load_before(args.before)
        routers = {"before": old.EmbeddedRouter(query_cache_size=0), **routers}
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    for label, router in routers.items():
        router.warmup()
        for size, texts in sets.items():
            for rname, routes in (("seed 2 routes", SEED), ("llm_tasks 9 routes", llm_routes)):
                rounds = args.rounds if size != "4 MiB" else max(4, args.rounds // 40)
                p50, p95, cpu = measure(router, routes, texts, rounds)
                print(f"{label:<9} {size:>6} prompt, {rname:<19} p50 {p50:8.2f} ms   p95 {p95:8.2f} ms   "
                      f"CPU {cpu:6.2f} ms   ({rounds} decisions)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
