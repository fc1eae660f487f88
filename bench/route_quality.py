"""Routing quality of the embedded router on the open benchmarks, in-process (no gateway).

Usage (from the repository root):

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python bench/route_quality.py            # both sets, descriptions only
    ... bench/route_quality.py --examples 20        # + two-fold example routing (see below)
    ... bench/route_quality.py --set llm_tasks --set clinc_domains --data ../shared/eval
    ... bench/route_quality.py --override threshold=0.3   # any EmbeddedRouterSettings field

For each set (`routes.json` + `cases.jsonl`, see the README in each) it prints overall accuracy (a
`null` case is right when no route is returned), in-scope accuracy, null/out-of-scope rejection and
in-scope false rejections — the same numbers `/work/shared/tools/route_eval.py` computes over HTTP.

`--examples N` scores example routing two-fold: the cases are split into two halves (within each
expected route, sorted by id, alternating); for each fold, N in-scope cases per route are drawn from one half (seeded shuffle of that
half, first N per route — no look at the texts) and given to the router as that route's `examples`;
the *other* half is scored. The two folds' results are pooled. Null cases never become examples.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plano_extproc.conversation import Turn  # noqa: E402
from plano_extproc.router.base import RouteSpec  # noqa: E402
from plano_extproc.router.embedded import EmbeddedRouter, EmbeddedRouterSettings  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "eval"


def load(data: Path, name: str) -> tuple[list[dict], list[dict]]:
    routes = json.loads((data / name / "routes.json").read_text())
    cases = [json.loads(line) for line in (data / name / "cases.jsonl").read_text().splitlines() if line.strip()]
    return routes, cases


def halves(cases: list[dict]) -> dict[str, int]:
    """Stable, stratified two-fold split: within each expected route, cases sorted by id alternate
    between half 0 and half 1 (so both halves hold every route and source in equal measure). A hash
    of the id was the first choice, but on llm_tasks every id's sha256 starts with an even byte, so
    that "split" put all cases in one half."""
    by_route: dict[object, list[str]] = {}
    for c in cases:
        by_route.setdefault(c["expected_route"], []).append(str(c["id"]))
    return {cid: i & 1 for ids in by_route.values() for i, cid in enumerate(sorted(ids))}


def pick_examples(cases: list[dict], routes: list[dict], n: int, seed: int) -> dict[str, list[str]]:
    """N in-scope texts per route from `cases`, by a seeded shuffle (no look at the texts)."""
    order = list(cases)
    random.Random(seed).shuffle(order)
    got: dict[str, list[str]] = {r["name"]: [] for r in routes}
    for c in order:
        name = c["expected_route"]
        if name is not None and name in got and len(got[name]) < n:
            got[name].append(c["text"])
    return got


def score(router: EmbeddedRouter, specs: list[RouteSpec], cases: list[dict]) -> list[tuple[dict, str | None, float]]:
    out = []
    for c in cases:
        conv = [Turn(m["role"], m["content"]) for m in c["messages"]] if c.get("messages") else [Turn("user", c["text"])]
        t0 = time.perf_counter()
        got = router.choose_route_sync(specs, conv)
        out.append((c, got, time.perf_counter() - t0))
    return out


def summarise(results: list[tuple[dict, str | None, float]]) -> dict[str, float]:
    ins = [r for r in results if r[0]["expected_route"] is not None]
    oos = [r for r in results if r[0]["expected_route"] is None]
    right = lambda r: r[1] == r[0]["expected_route"]  # noqa: E731
    lat = sorted(r[2] for r in results)
    return {
        "cases": len(results),
        "overall": sum(map(right, results)) / max(len(results), 1),
        "in_scope": sum(map(right, ins)) / max(len(ins), 1),
        "rejection": sum(r[1] is None for r in oos) / max(len(oos), 1),
        "false_reject": sum(r[1] is None for r in ins) / max(len(ins), 1),
        "p50_ms": lat[len(lat) // 2] * 1000 if lat else 0.0,
        "p95_ms": lat[int(len(lat) * 0.95)] * 1000 if lat else 0.0,
    }


def fmt(name: str, mode: str, s: dict[str, float]) -> str:
    return (f"{name:<14} {mode:<16} n={s['cases']:<5} overall {s['overall']:.3f}  in-scope {s['in_scope']:.3f}  "
            f"rejection {s['rejection']:.3f}  false-reject {s['false_reject']:.3f}  "
            f"p50 {s['p50_ms']:.2f} ms  p95 {s['p95_ms']:.2f} ms")


def parse_override(items: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = json.loads(value) if value[:1] in "-0123456789[{tfn" else value
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--set", action="append", dest="sets", help="benchmark directory name (repeatable)")
    ap.add_argument("--examples", type=int, default=0, help="also score two-fold with N examples per route")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--limit", type=int, default=0, help="only a seeded sample of N cases per set")
    ap.add_argument("--override", action="append", default=[], help="EmbeddedRouterSettings field=value")
    ap.add_argument("--json", type=Path, default=None, help="write all summaries here")
    args = ap.parse_args()
    settings = EmbeddedRouterSettings.model_validate(parse_override(args.override))
    router = EmbeddedRouter(settings, query_cache_size=0)
    router.warmup()
    report: dict[str, dict[str, dict[str, float]]] = {}
    for name in args.sets or ["llm_tasks", "clinc_domains"]:
        routes, cases = load(args.data, name)
        if args.limit and args.limit < len(cases):
            cases = random.Random(args.seed).sample(cases, args.limit)
        specs = [RouteSpec(r["name"], r["description"], tuple(r.get("examples", ()))) for r in routes]
        s = summarise(score(router, specs, cases))
        report.setdefault(name, {})["descriptions"] = s
        print(fmt(name, "descriptions", s), flush=True)
        if args.examples:
            pooled = []
            half = halves(cases)
            for fold in (0, 1):
                train = [c for c in cases if half[str(c["id"])] == fold]
                test = [c for c in cases if half[str(c["id"])] != fold]
                ex = pick_examples(train, routes, args.examples, args.seed + fold)
                fold_specs = [RouteSpec(r["name"], r["description"], tuple(ex[r["name"]])) for r in routes]
                pooled += score(router, fold_specs, test)
            s = summarise(pooled)
            report[name][f"examples_{args.examples}"] = s
            print(fmt(name, f"{args.examples} examples/route", s), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
