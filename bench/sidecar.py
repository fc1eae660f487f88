#!/usr/bin/env python3
"""Sidecar benchmark: the latency and throughput plano-extproc adds in front of an LLM provider.

Usage (from the repository root; needs `wrk` and `nginx` — `apt-get install -y wrk nginx-light`):

    .venv/bin/python bench/sidecar.py                      # ~3 minutes; prints a markdown table
    .venv/bin/python bench/sidecar.py --json out.json      # also write every number as JSON
    .venv/bin/python bench/sidecar.py --quick              # ~40 s smoke run

One invocation starts, all on 127.0.0.1:

* nginx (1 worker) answering every request with the same fixed OpenAI chat.completion JSON
  (bench/nginx.conf) — the stand-in for a provider;
* Envoy alone (`--concurrency 1`, a minimal static bootstrap: listener -> router -> nginx cluster);
* two `plano-extproc up` gateways (Envoy `--concurrency 1` + the ext_proc service), every provider's
  `base_url` pointed at the nginx: one with bench/configs/proxy-noroutes.yaml (no routing_preferences:
  decided by the request's model alone) and one with bench/configs/proxy-routes.yaml (the seed routes:
  the embedded MiniLM router decides every request).

Targets: nginx direct (reference), Envoy alone (the baseline), the decision path
(`POST /routing/v1/chat/completions`) on both gateways, and the proxy path (`POST /v1/chat/completions`)
on both: (3a) no routes, (3b) seed routes. Each target is warmed up (and its answer checked) with
sequential requests, then measured with wrk at concurrency 1 (p50/p95) and at concurrency 32 (req/s), in
`--rounds` interleaved rounds (targets rotate order each round; the table shows the median over rounds).

Every request body is an OpenAI chat request whose user text carries a running number
("Write a Python function that implements binary search (request 1234)"), so the embedded router's
per-text query cache never hits and MiniLM really runs on every routed request (a fixed body — what `hey`
sends — would measure a cache hit instead). wrk checks every answer: status 200, and for routed targets
the decision (the route in a decision body; for the proxy path the provider family nginx saw, echoed in
`x-bench-provider`). Every child process is stopped at the end, also on errors or Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))

from plano_devtools.local import envoy_binary, free_port  # noqa: E402

USER_WORDS = ["Write", "a", "Python", "function", "that", "implements", "binary", "search"]
#: the whitespace between two words encodes one base-8 digit of the request's number (see user_text)
GAPS = [" ", "  ", "   ", "    ", "\t", " \t", "\t ", "\t\t"]
VARIANTS = len(GAPS) ** (len(USER_WORDS) - 1)  # 2,097,152 distinct texts
MODEL = "gpt-4o-mini"
GOAL_ADDED_P50_MS = 1.5
GOAL_THROUGHPUT_SHARE = 0.20

# wrk script: one POST per call of request(), with a new number in the user text every time; counts the
# answers that are not 200 or do not carry the expected decision; done() prints one JSON line.
WRK_LUA = r"""
threads = {}
setup = function(thread)
  table.insert(threads, thread)
end

init = function(args)
  path = args[1]
  counter = tonumber(args[2])
  expect_header = args[3]
  expect_value = args[4]
  expect_body = args[5]
  bad_status = 0
  mismatch = 0
  hdrs = {["Content-Type"] = "application/json"}
end

-- same as user_text() in sidecar.py, with the whitespace already JSON-escaped
words = {WORDS}
gaps = {" ", "  ", "   ", "    ", "\\t", " \\t", "\\t ", "\\t\\t"}
user_text = function(n)
  n = n % VARIANTS
  local parts = {words[1]}
  for i = 2, #words do
    local digit = n % 8
    n = (n - digit) / 8
    parts[#parts + 1] = gaps[digit + 1]
    parts[#parts + 1] = words[i]
  end
  return table.concat(parts)
end

request = function()
  counter = counter + 1
  local body = '{"model":"MODEL","messages":[{"role":"user","content":"' .. user_text(counter) .. '"}]}'
  return wrk.format("POST", path, hdrs, body)
end

response = function(status, headers, body)
  if status ~= 200 then
    bad_status = bad_status + 1
  elseif expect_header ~= "-" and headers[expect_header] ~= expect_value then
    mismatch = mismatch + 1
  elseif expect_body ~= "-" and not string.find(body, expect_body, 1, true) then
    mismatch = mismatch + 1
  end
end

done = function(summary, latency, requests)
  local bad, mis = 0, 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("bad_status")
    mis = mis + t:get("mismatch")
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%.1f,"p95_us":%.1f,"p99_us":%.1f,"mean_us":%.1f,'
    .. '"max_us":%.1f,"socket_errors":%d,"timeouts":%d,"bad_status":%d,"mismatch":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.mean, latency.max, e.connect + e.read + e.write, e.timeout, bad, mis))
end
""".replace("MODEL", MODEL).replace("{WORDS}", "{" + ", ".join(json.dumps(w) for w in USER_WORDS) + "}").replace(
    "VARIANTS", str(VARIANTS))


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    server: str  # which started server: nginx | envoy | noroutes | routes
    path: str
    expect_header: tuple[str, str] | None = None  # (name, value) every response must carry
    expect_body: str | None = None  # substring every response body must contain
    needs_router: bool = False
    goal: bool = False  # judged against the goal


TARGETS = [
    Target("nginx", "nginx direct (reference)", "nginx", "/v1/chat/completions"),
    Target("envoy", "Envoy alone -> nginx (baseline)", "envoy", "/v1/chat/completions"),
    Target(
        "decision-noroutes", "decision path, no routes", "noroutes", "/routing/v1/chat/completions",
        expect_body='"model":"openai/gpt-4o-mini"',
    ),
    Target(
        "decision-routes", "(2) decision path, seed routes (MiniLM)", "routes", "/routing/v1/chat/completions",
        expect_body='"route":"code_generation"', needs_router=True,
    ),
    Target(
        "proxy-noroutes", "(3a) proxy path, no routes", "noroutes", "/v1/chat/completions",
        expect_header=("x-bench-provider", "openai"), goal=True,
    ),
    Target(
        "proxy-routes", "(3b) proxy path, seed routes (MiniLM)", "routes", "/v1/chat/completions",
        expect_header=("x-bench-provider", "anthropic"), needs_router=True, goal=True,
    ),
]


def user_text(n: int) -> str:
    """The n-th variant of the user text: the same words (so the same tokens, the same MiniLM work and the same
    decision) with different whitespace between them (so a different key for the router's query cache)."""
    n %= VARIANTS
    out = [USER_WORDS[0]]
    for word in USER_WORDS[1:]:
        n, digit = divmod(n, len(GAPS))
        out += [GAPS[digit], word]
    return "".join(out)


def body_for(n: int) -> bytes:
    return json.dumps({"model": MODEL, "messages": [{"role": "user", "content": user_text(n)}]}).encode()


# --------------------------------------------------------------------------------------------- processes


@dataclass
class Servers:
    workdir: Path
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed right after the fork
        # Own process group: at the end the whole group (e.g. `up` and its Envoy) is stopped by its id.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        return proc

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # anything left in the group we created (only ours: the group id is the child's pid)
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if proc.poll() is None:
                proc.wait(5)
        self.procs.clear()


def wait_tcp(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} not open after {timeout}s")


def wait_http_ok(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def wait_log_line(servers: Servers, name: str, proc: subprocess.Popen[bytes], needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in servers.log_tail(name, 100_000):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode}:\n{servers.log_tail(name)}")
        time.sleep(0.1)
    raise TimeoutError(f"{name} not ready after {timeout}s:\n{servers.log_tail(name)}")


def start_nginx(servers: Servers) -> None:
    port = free_port()
    prefix = servers.workdir / "nginx"
    prefix.mkdir()
    text = (BENCH_DIR / "nginx.conf").read_text().replace("@PREFIX@", str(prefix)).replace("@PORT@", str(port))
    (prefix / "nginx.conf").write_text(text)
    proc = servers.spawn("nginx", [shutil.which("nginx") or "nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                                   "-e", str(prefix / "error.log")])
    try:
        wait_tcp(port, proc, 10)
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"nginx: {exc}\n{servers.log_tail('nginx')}\n{(prefix / 'error.log').read_text(errors='replace')}") from None
    servers.ports["nginx"] = port


def envoy_alone_bootstrap(listen_port: int, admin_port: int, nginx_port: int) -> dict[str, Any]:
    def address(port: int) -> dict[str, Any]:
        return {"socket_address": {"address": "127.0.0.1", "port_value": port}}

    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench",
        "route_config": {
            "name": "bench",
            "virtual_hosts": [{"name": "all", "domains": ["*"],
                               "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "nginx", "timeout": "0s"}}]}],
        },
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {
        "admin": {"address": address(admin_port)},
        "static_resources": {
            "listeners": [{"name": "bench", "address": address(listen_port),
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": hcm}]}]}],
            "clusters": [{
                "name": "nginx", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "nginx",
                                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(nginx_port)}}]}]},
            }],
        },
    }


def start_envoy_alone(servers: Servers) -> None:
    port, admin = free_port(), free_port()
    path = servers.workdir / "envoy-alone.json"
    path.write_text(json.dumps(envoy_alone_bootstrap(port, admin, servers.ports["nginx"]), indent=1))
    proc = servers.spawn("envoy", [envoy_binary(), "-c", str(path), "--concurrency", "1", "--use-dynamic-base-id",
                                   "--log-level", "warning"])
    try:
        wait_http_ok(f"http://127.0.0.1:{admin}/ready", proc, 30)
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"envoy alone: {exc}\n{servers.log_tail('envoy')}") from None
    servers.ports["envoy"] = port


def plano_cli() -> str:
    beside = Path(sys.executable).parent / "plano-extproc"
    return str(beside) if beside.exists() else (shutil.which("plano-extproc") or "plano-extproc")


def gateway_config(source: Path, nginx_port: int, dest: Path, responses: str | None = None) -> None:
    """The bench config with every provider's base_url on the running nginx, and `observability.responses`
    set to `responses` when given."""
    data = yaml.safe_load(source.read_text())
    for provider in data.get("model_providers") or []:
        provider["base_url"] = f"http://127.0.0.1:{nginx_port}"
    if responses is not None:
        data["observability"] = {**(data.get("observability") or {}), "responses": responses}
    dest.write_text(yaml.safe_dump(data, sort_keys=False))


BASELINE_SUFFIX = "-base"


def start_gateways(
    servers: Servers,
    names: list[str],
    env: dict[str, str] | None,
    baseline: str | None = None,
    baseline_observe: str | None = None,
) -> None:
    """`up` per gateway name; a name ending in -base runs the `baseline` source tree and/or its config with
    `observability.responses: baseline_observe`."""
    cli = plano_cli()
    helptext = subprocess.run([cli, "up", "--help"], capture_output=True, text=True, timeout=60, check=False).stdout
    started = []
    for name in names:
        config = servers.workdir / f"{name}.yaml"
        base = name.endswith(BASELINE_SUFFIX)
        gateway_config(BENCH_DIR / "configs" / f"proxy-{name.removesuffix(BASELINE_SUFFIX)}.yaml", servers.ports["nginx"], config,
                       baseline_observe if base else None)
        port = free_port()
        cmd = [cli, "up", "--config", str(config), "--port", str(port)]
        if "--metrics-port" in helptext:  # two gateways run side by side: never the fixed default port
            cmd += ["--metrics-port", str(free_port())]
        gw_env = env
        if base and baseline:
            gw_env = dict(env or os.environ)
            gw_env["PYTHONPATH"] = baseline + os.pathsep + gw_env.get("PYTHONPATH", "")
        proc = servers.spawn(name, cmd, env=gw_env)
        started.append((name, port, proc))
    for name, port, proc in started:  # both start in parallel
        wait_log_line(servers, name, proc, "plano gateway ready on", 120)
        servers.ports[name] = port


# ------------------------------------------------------------------------------------------- measuring


class CheckFailed(RuntimeError):
    pass


def warm_up(target: Target, port: int, count: int, first: int) -> float:
    """Sequential keep-alive requests, every answer checked: first until one is right (a gateway's first
    routed requests may fall back while the router model loads), then `count` that must all be right.
    Returns the median latency of the last half, in ms."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def one(n: int) -> tuple[float, str | None]:
        t0 = time.perf_counter()
        conn.request("POST", target.path, body=body_for(n), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        took = time.perf_counter() - t0
        if resp.status != 200:
            return took, f"HTTP {resp.status}: {data[:300]!r}"
        if target.expect_header and resp.getheader(target.expect_header[0]) != target.expect_header[1]:
            got = resp.getheader(target.expect_header[0])
            return took, f"expected {target.expect_header[0]}: {target.expect_header[1]}, got {got!r}"
        if target.expect_body and target.expect_body not in data.decode(errors="replace"):
            return took, f"answer lacks {target.expect_body}: {data[:300]!r}"
        json.loads(data)
        return took, None

    times = []
    try:
        deadline = time.monotonic() + 60
        while True:
            _, problem = one(first)
            first += 1
            if problem is None:
                break
            if time.monotonic() > deadline:
                raise CheckFailed(f"{target.key}: no correct answer within 60 s; last: {problem}")
            time.sleep(0.2)
        for i in range(count):
            took, problem = one(first + i)
            if problem:
                raise CheckFailed(f"{target.key}: warm-up request {i + 1}: {problem}")
            times.append(took)
    finally:
        conn.close()
    return statistics.median(times[len(times) // 2:]) * 1000 if times else 0.0


def run_wrk(wrk: str, lua: Path, target: Target, port: int, connections: int, seconds: float, first: int) -> dict[str, Any]:
    name, value = target.expect_header or ("-", "-")
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(lua),
           f"http://127.0.0.1:{port}", "--", target.path, str(first), name, value, target.expect_body or "-"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-1500:]}\n{out.stderr[-1500:]}")
    raw = json.loads(line[len("WRKJSON "):])
    seconds_run = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "seconds": round(seconds_run, 3),
        "rps": raw["requests"] / seconds_run if seconds_run else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": raw["socket_errors"] + raw["timeouts"] + raw["bad_status"],
        "mismatches": raw["mismatch"],
    }


def run_hey(hey: str, body_file: Path, target: Target, port: int, connections: int, seconds: float) -> dict[str, Any]:
    """The same measurement with `hey` (`--tool hey`): one fixed body, so routed targets hit the router's
    query cache; latencies have hey's 0.1 ms resolution; only the status codes are checked."""
    cmd = [hey, "-z", f"{max(1, round(seconds))}s", "-c", str(connections), "-m", "POST", "-T", "application/json",
           "-D", str(body_file), "-t", "10", "-o", "csv", f"http://127.0.0.1:{port}{target.path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    rows = [line.split(",") for line in out.stdout.splitlines()[1:] if line and line[0].isdigit()]
    if out.returncode != 0 or not rows:
        raise RuntimeError(f"hey failed ({out.returncode}): {out.stdout[-1500:]}\n{out.stderr[-1500:]}")
    lat = sorted(float(r[0]) * 1000 for r in rows)
    span = max(float(r[7]) + float(r[0]) for r in rows)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))]

    return {
        "requests": len(rows), "seconds": round(span, 3), "rps": len(rows) / span if span else 0.0,
        "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "mean_ms": statistics.fmean(lat), "max_ms": lat[-1],
        "errors": sum(1 for r in rows if r[6] != "200"), "mismatches": 0,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return {
        "p50_ms": med("p50_ms"), "p95_ms": med("p95_ms"), "p99_ms": med("p99_ms"), "rps": med("rps"),
        "requests": sum(r["requests"] for r in runs), "errors": sum(r["errors"] for r in runs),
        "mismatches": sum(r["mismatches"] for r in runs),
        "rps_range": [min(r["rps"] for r in runs), max(r["rps"] for r in runs)],
        "p50_range_ms": [min(r["p50_ms"] for r in runs), max(r["p50_ms"] for r in runs)],
    }


# --------------------------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
        except OSError:
            return "?"
        text = (out.stdout + out.stderr).strip().splitlines()
        return text[0] if text else "?"

    commit = version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    try:
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "plano_extproc"],
                               capture_output=True, text=True, timeout=20, check=False).stdout.strip()
    except OSError:
        dirty = ""
    if dirty:
        commit += " + uncommitted changes in plano_extproc/"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "envoy": version([envoy_binary(), "--version"]).split("version:")[-1].strip(),
        "nginx": version(["nginx", "-v"]),
        "wrk": version(["wrk", "--version"]).split("[")[0].strip() if shutil.which("wrk") else None,
        "commit": commit,
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }


def fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def report(results: dict[str, dict[str, Any]], targets: list[Target], concurrency: int) -> str:
    base = results.get("envoy")
    c = concurrency
    lines = [
        f"| target | c=1 p50 ms | c=1 p95 ms | c={c} req/s | c={c} p50 ms | added p50 vs Envoy ms | throughput vs Envoy | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for t in targets:
        r = results.get(t.key)
        if r is None:
            continue
        c1, c32 = r["c1"], r["c32"]
        added = share = None
        if base and t.key != "envoy":
            added = c1["p50_ms"] - base["c1"]["p50_ms"]
            share = c32["rps"] / base["c32"]["rps"] if base["c32"]["rps"] else None
        bad = c1["errors"] + c32["errors"] + c1["mismatches"] + c32["mismatches"]
        lines.append(
            f"| {t.label} | {fmt(c1['p50_ms'])} | {fmt(c1['p95_ms'])} | {c32['rps']:,.0f} | {fmt(c32['p50_ms'], 1)} | "
            f"{'—' if added is None else f'{added:+.2f}'} | {'—' if share is None else f'{share:.1%}'} | {bad} |"
        )
        if t.goal and added is not None and share is not None:
            ok_lat, ok_thr = added <= GOAL_ADDED_P50_MS, share >= GOAL_THROUGHPUT_SHARE
            r["goal"] = {"added_p50_ms": added, "throughput_share": share, "latency_ok": ok_lat, "throughput_ok": ok_thr}
            verdicts.append(
                f"- {t.label}: added p50 {added:+.2f} ms ({'meets' if ok_lat else 'MISSES'} <= {GOAL_ADDED_P50_MS} ms), "
                f"throughput {share:.1%} of Envoy alone ({'meets' if ok_thr else 'MISSES'} >= {GOAL_THROUGHPUT_SHARE:.0%})"
            )
    return "\n".join(lines + ([""] + ["Goal (issue): proxy path adds <= 1.5 ms p50 at c=1 and keeps >= 20 % of Envoy-alone throughput"] + verdicts if verdicts else []))


# ------------------------------------------------------------------------------------------------ main


def check_tools(tool: str) -> str:
    missing = [name for name in (tool, "nginx") if shutil.which(name) is None]
    if missing:
        package = {"nginx": "nginx-light"}
        print(f"missing: {', '.join(missing)}. Install (Debian/Ubuntu): sudo apt-get install -y "
              f"{' '.join(package.get(m, m) for m in missing)}", file=sys.stderr)
        raise SystemExit(2)
    try:
        envoy_binary()
    except FileNotFoundError as exc:
        print(f"{exc} (run from the project venv: .venv/bin/python bench/sidecar.py)", file=sys.stderr)
        raise SystemExit(2) from None
    return shutil.which(tool) or tool


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round of 2 s per measurement, 30 warm-up requests")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows medians (default 3)")
    ap.add_argument("--c1-seconds", type=float, default=4, help="length of each concurrency-1 run (default 4)")
    ap.add_argument("--c32-seconds", type=float, default=5, help="length of each high-concurrency run (default 5)")
    ap.add_argument("--concurrency", type=int, default=32, help="connections of the throughput run (default 32)")
    ap.add_argument("--warmup", type=int, default=200, help="sequential warm-up requests per target (default 200)")
    ap.add_argument("--targets", help=f"comma-separated subset of: {', '.join(t.key for t in TARGETS)}")
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="set OPENBLAS_NUM_THREADS/OMP_NUM_THREADS for the gateways (default: leave the environment as is)")
    ap.add_argument("--tool", choices=["wrk", "hey"], default="wrk",
                    help="load generator (default wrk; hey sends one fixed body, so routed targets hit the router's cache)")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    ap.add_argument("--baseline", metavar="DIR",
                    help="also measure the proxy targets on the plano_extproc source tree in DIR (e.g. a `git worktree` "
                         "of an older commit), side by side in the same run")
    ap.add_argument("--baseline-observe", choices=["bodies", "headers", "off"],
                    help="also measure the proxy targets with the gateway config's observability.responses set to this "
                         "(e.g. off); combines with --baseline")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.c1_seconds, args.c32_seconds, args.warmup = 1, 2, 2, 30

    tool = check_tools(args.tool)
    # Ctrl-C and SIGTERM both unwind through the `finally` that stops every child process.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    targets = TARGETS
    if args.targets:
        wanted = set(args.targets.split(","))
        unknown = wanted - {t.key for t in TARGETS}
        if unknown:
            ap.error(f"unknown targets: {', '.join(sorted(unknown))}")
        targets = [t for t in TARGETS if t.key in wanted or t.key == "envoy"]
    if args.baseline or args.baseline_observe:
        if args.baseline:
            args.baseline = str(Path(args.baseline).resolve())
        tag = " ".join([*(["baseline tree"] if args.baseline else []),
                        *([f"observability.responses: {args.baseline_observe}"] if args.baseline_observe else [])])
        base = [
            Target(t.key + BASELINE_SUFFIX, f"{t.label} @ {tag}", t.server + BASELINE_SUFFIX, t.path,
                   t.expect_header, t.expect_body, t.needs_router)
            for t in targets if t.key.startswith("proxy-")
        ]
        targets = targets + base
    if importlib.util.find_spec("plano_extproc.router.embedded") is None:
        skipped = [t.key for t in targets if t.needs_router]
        targets = [t for t in targets if not t.needs_router]
        print(f"note: plano_extproc.router.embedded is not available; skipping {', '.join(skipped)}", file=sys.stderr)

    env = dict(os.environ)
    if args.blas_threads:
        env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = str(args.blas_threads)

    info = machine()
    print(f"# sidecar benchmark {info['date']}: {info['nproc']} CPUs ({info['cpu']}), Envoy {info['envoy']}, "
          f"{info['nginx']}, load from {args.tool}, commit {info['commit']}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="plano-bench-"))
    servers = Servers(workdir)
    results: dict[str, dict[str, Any]] = {}
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {t.key: {"c1": [], "c32": []} for t in targets}
    lua = workdir / "post.lua"
    lua.write_text(WRK_LUA)
    body_file = workdir / "body.json"
    body_file.write_bytes(body_for(0))
    counter = 0  # every request of the whole run gets its own number (no router cache hits)

    def next_block() -> int:
        nonlocal counter
        counter = (counter + 200_000) % VARIANTS
        return counter

    started = time.monotonic()
    try:
        print("starting nginx, Envoy alone and the gateways ...", flush=True)
        start_nginx(servers)
        start_envoy_alone(servers)
        gateways = sorted({t.server for t in targets} - {"nginx", "envoy"})
        start_gateways(servers, gateways, env, args.baseline, args.baseline_observe)
        print(f"  ready in {time.monotonic() - started:.1f} s: ports {servers.ports}", flush=True)

        for t in targets:
            ms = warm_up(t, servers.ports[t.server], args.warmup, next_block())
            print(f"  warm-up {t.key}: {args.warmup} requests ok, sequential median {ms:.2f} ms", flush=True)

        for rnd in range(args.rounds):
            order = targets[rnd % len(targets):] + targets[: rnd % len(targets)]
            for phase, conns, seconds in (("c1", 1, args.c1_seconds), ("c32", args.concurrency, args.c32_seconds)):
                for t in order:
                    port = servers.ports[t.server]
                    if args.tool == "hey":
                        r = run_hey(tool, body_file, t, port, conns, seconds)
                    else:
                        r = run_wrk(tool, lua, t, port, conns, seconds, next_block())
                    raw[t.key][phase].append(r)
                    print(f"  round {rnd + 1}/{args.rounds} {phase:>3} {t.key:<18} p50 {r['p50_ms']:7.3f} ms  "
                          f"p95 {r['p95_ms']:7.3f} ms  {r['rps']:8.0f} req/s  errors {r['errors']}  "
                          f"mismatches {r['mismatches']}", flush=True)
                    time.sleep(0.3)
        for t in targets:
            results[t.key] = {"label": t.label, "path": t.path, "c1": summarize(raw[t.key]["c1"]),
                              "c32": summarize(raw[t.key]["c32"]), "runs": raw[t.key]}
    except CheckFailed as exc:
        print(f"check failed: {exc}", file=sys.stderr)
        return 1
    finally:
        servers.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)

    elapsed = time.monotonic() - started
    info["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print()
    print(f"{args.rounds} round(s); c=1: {args.c1_seconds:g} s, c={args.concurrency}: {args.c32_seconds:g} s per target "
          f"and round; load average before {info['loadavg_before'][0]:.2f}, after {info['loadavg_after'][0]:.2f}; medians over rounds; {'wrk -t1, a new body every request' if args.tool == 'wrk' else 'hey, one fixed body'}; total {elapsed:.0f} s")
    print()
    table = report(results, targets, args.concurrency)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": info, "settings": {k: v for k, v in vars(args).items() if k != "json"},
             "goal": {"added_p50_ms": GOAL_ADDED_P50_MS, "throughput_share": GOAL_THROUGHPUT_SHARE},
             "results": results}, indent=2))
        print(f"\nwrote {args.json}")
    bad = sum(r[p]["errors"] + r[p]["mismatches"] for r in results.values() for p in ("c1", "c32"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
