"""CPU per proxied request of the ext_proc process and of Envoy, two source trees side by side.

For each `observability.responses` mode: nginx (bench/nginx.conf) as every provider, one `plano-extproc
up` gateway (bench/configs/proxy-noroutes.yaml) from each tree, warmed up, then rounds that alternate the
two: wrk at 32 connections (CPU = utime + stime from /proc of the `up` process, which is the ext_proc
service, and of its Envoy child, over the run, divided by the requests) and wrk at 1 connection (p50).
After the rounds it prints the response-side counters each gateway recorded, so a tree that observed
nothing shows. The machine is usually shared: compare only the two trees of one run.

    .venv/bin/python bench/cpu_per_request.py --baseline /tmp/base-tree --modes bodies,headers,off
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import sidecar  # noqa: E402 - beside this file

COUNTERS = ("plano_requests_total", "plano_upstream_responses_total", "plano_tokens_total", "plano_gen_ai_time_to_first_token_seconds_count", "plano_access_log_entries_total")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        p = stack.pop()
        found.append(p)
        stack += [int(x) for x in subprocess.run(["pgrep", "-P", str(p)], capture_output=True, text=True, check=False).stdout.split()]
    return found


def counters(metrics_port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        if name in COUNTERS and (name != "plano_requests_total" or 'endpoint="proxy"' in line):
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="the source tree to compare with (e.g. git archive of an older commit)")
    ap.add_argument("--modes", default="bodies,headers,off")
    ap.add_argument("--seconds", type=float, default=10.0, help="per c=32 run (c=1 runs 4 s)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    trees = {"before": str(Path(args.baseline).resolve()), "after": str(BENCH.parent)}
    target = next(t for t in sidecar.TARGETS if t.key == "proxy-noroutes")
    results: dict[str, list[dict[str, Any]]] = {}
    for mode in args.modes.split(","):
        servers = sidecar.Servers(Path(tempfile.mkdtemp(prefix="plano-cpu-")))
        try:
            sidecar.start_nginx(servers)
            gateways = []
            for label, tree in trees.items():
                name = f"{mode}-{label}"
                config = servers.workdir / f"{name}.yaml"
                sidecar.gateway_config(BENCH / "configs" / "proxy-noroutes.yaml", servers.ports["nginx"], config, mode)
                port, metrics = sidecar.free_port(), sidecar.free_port()
                env = {**os.environ, "PYTHONPATH": tree}
                cmd = [sidecar.plano_cli(), "up", "--config", str(config), "--port", str(port), "--metrics-port", str(metrics)]
                gateways.append((name, port, metrics, servers.spawn(name, cmd, env=env)))
            for name, port, _, proc in gateways:
                sidecar.wait_log_line(servers, name, proc, "plano gateway ready on", 120)
                sidecar.warm_up(target, port, 300, 1)
            lua = servers.workdir / "bench.lua"
            lua.write_text(sidecar.WRK_LUA)
            for n in range(args.rounds):
                for name, port, _, proc in gateways if n % 2 == 0 else gateways[::-1]:
                    pids = descendants(proc.pid)
                    envoy = {p for p in pids if Path(f"/proc/{p}/comm").read_text().strip() == "envoy"}
                    before = {p: cpu_seconds(p) for p in pids}
                    loaded = sidecar.run_wrk("wrk", lua, target, port, 32, args.seconds, 10_000)
                    used = {p: cpu_seconds(p) - before[p] for p in pids}
                    single = sidecar.run_wrk("wrk", lua, target, port, 1, 4, 10_000)
                    requests = loaded["requests"]
                    row = {
                        "extproc_cpu_ms": round(sum(v for p, v in used.items() if p not in envoy) * 1000 / requests, 3),
                        "envoy_cpu_ms": round(sum(v for p, v in used.items() if p in envoy) * 1000 / requests, 3),
                        "c32_rps": round(loaded["rps"]),
                        "c1_p50_ms": single["p50_ms"],
                        "errors": loaded["errors"] + single["errors"],
                    }
                    results.setdefault(name, []).append(row)
                    print(name, json.dumps(row), flush=True)
            time.sleep(2)  # the last access-log batch
            for name, _, metrics, _ in gateways:
                print(name, "recorded", json.dumps(counters(metrics)), flush=True)
        finally:
            servers.stop_all()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
