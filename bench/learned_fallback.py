"""Learning from the primary router: does the embedded fallback behave like the primary once it fails?

Usage (from the repository root):

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python bench/learned_fallback.py [--set llm_tasks --set clinc_domains]

A stand-in primary answers every request with the benchmark's label (it plays a perfect Arch-Router).
`RouterChain` (primary + embedded fallback, as `routing.router.fallback: embedded` builds it) routes one
half of the set (within each route, cases sorted by id alternate between halves) while the primary
answers; then the primary is stopped (every call fails) and the other half is routed by the fallback.
Printed: the fallback's accuracy on that half with what it learned, and without (a fresh fallback that
never saw the primary), both folds pooled.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from route_quality import DEFAULT_DATA, halves, load, summarise  # noqa: E402

from plano_extproc.conversation import Turn  # noqa: E402
from plano_extproc.router.base import RouterBackend, RouterError, RouteSpec  # noqa: E402
from plano_extproc.router.chain import RouterChain  # noqa: E402
from plano_extproc.router.embedded import EmbeddedRouter  # noqa: E402


class LabelPrimary(RouterBackend):
    """Answers with the label of the text, until stopped; then fails like an unreachable backend."""

    name = "stand-in"

    def __init__(self, labels: dict[str, str | None]) -> None:
        self.labels, self.stopped = labels, False

    async def choose_route(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> str | None:
        if self.stopped:
            raise RouterError("unavailable", "stopped")
        return self.labels[conversation[-1].content]


async def run(cases: list[dict], specs: list[RouteSpec], learn: bool) -> list[tuple[dict, str | None, float]]:
    half = halves(cases)
    out = []
    for fold in (0, 1):
        taught = [c for c in cases if half[str(c["id"])] == fold]
        scored = [c for c in cases if half[str(c["id"])] != fold]
        primary = LabelPrimary({c["text"]: c["expected_route"] for c in cases})
        fallback = EmbeddedRouter(learned_refit_seconds=0.0)
        chain = RouterChain(primary, timeout_s=30.0, fallback=fallback)
        if learn:
            for c in taught:
                await chain.choose(specs, [Turn("user", c["text"])])
        primary.stopped = True
        for c in scored:
            outcome = await chain.choose(specs, [Turn("user", c["text"])])
            assert outcome.failed and outcome.backend == "embedded"
            out.append((c, outcome.route, outcome.seconds))
        await chain.close()
    return out


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--set", action="append", dest="sets")
    args = ap.parse_args()
    logging.getLogger("plano_extproc.router.chain").setLevel(logging.ERROR)  # one warning per failed call
    for name in args.sets or ["llm_tasks", "clinc_domains"]:
        routes, cases = load(args.data, name)
        specs = [RouteSpec(r["name"], r["description"]) for r in routes]
        for learn in (False, True):
            s = summarise(await run(cases, specs, learn))
            label = "learned from primary" if learn else "never saw primary"
            print(f"{name:<14} fallback, {label:<21} overall {s['overall']:.3f}  in-scope {s['in_scope']:.3f}  "
                  f"rejection {s['rejection']:.3f}  (n={s['cases']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
