#!/usr/bin/env python3
"""Sidecar benchmark: the latency, throughput and CPU per request plano-extproc adds in front of an LLM provider.

Usage (from the repository root; needs `wrk` and `nginx` — `apt-get install -y wrk nginx-light`):

    .venv/bin/python bench/sidecar.py                      # ~5 minutes; prints a markdown table
    .venv/bin/python bench/sidecar.py --json out.json      # also write every number as JSON
    .venv/bin/python bench/sidecar.py --quick              # ~1 min smoke run
    .venv/bin/python bench/sidecar.py --litellm            # also LiteLLM's proxy as a peer (bench/.venv-litellm)

One invocation starts, all on 127.0.0.1:

* nginx (1 worker) answering every request with the same fixed OpenAI chat.completion JSON
  (bench/nginx.conf) — the stand-in for a provider;
* Envoy alone (`--concurrency 1`, a minimal static bootstrap: listener -> router -> nginx cluster);
* two `plano-extproc up` gateways (Envoy `--concurrency 1` + the ext_proc service), every provider's
  `base_url` pointed at the nginx: one with bench/configs/proxy-noroutes.yaml (no routing_preferences:
  decided by the request's model alone) and one with bench/configs/proxy-routes.yaml (the seed routes:
  the embedded MiniLM router decides every request);
* with `--litellm`, LiteLLM's proxy (`litellm --num_workers 1`, one model `gpt-4o-mini` on the nginx), from
  its own virtualenv bench/.venv-litellm, created on first use.

Targets: nginx direct (reference), Envoy alone (the baseline), the decision path
(`POST /routing/v1/chat/completions`) on both gateways, and the proxy path (`POST /v1/chat/completions`)
on both: (3a) no routes, (3b) seed routes; (3b) again with a ~1 KB user prompt; (3a), (3b) and Envoy alone
again with a 16 KB system prompt in every request; LiteLLM. Each target is warmed up (and its answer
checked) with sequential requests, then measured with wrk at concurrency 1 (p50/p95) and at concurrency 32
(req/s), in `--rounds` interleaved rounds (targets rotate order each round; the table shows the median over
rounds). During every wrk run the CPU time (utime + stime, all threads, from /proc) of the target's
processes is sampled: the started process and all its descendants, split into Envoy, Python (the ext_proc,
or LiteLLM) and other; the deltas divided by the requests wrk completed are the "CPU ms/req" columns.

Every request body is an OpenAI chat request whose user text carries a running number
("Write a Python function that implements binary search (request 1234)"), so the embedded router's
per-text query cache never hits and MiniLM really runs on every routed request (a fixed body — what `hey`
sends — would measure a cache hit instead). wrk checks every answer: status 200, and for routed targets
the decision (the route in a decision body; for the proxy path the provider family nginx saw, echoed in
`x-bench-provider`). Every child process is stopped at the end, also on errors or Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
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

# Goals of issue 13 (performance), judged in the verdict lines.
GOAL_EXTPROC_CPU_MS = 0.8  # ext_proc CPU per proxied request, response observation on, (3a) at high concurrency
GOAL_THROUGHPUT_SHARE = 0.12  # (3a) req/s as a share of Envoy alone
GOAL_VS_LITELLM = 20.0  # (3a) req/s as a multiple of LiteLLM's
GOAL_ADDED_P50_MS = 1.2  # (3a) p50 at c=1 minus Envoy alone's
GOAL_ROUTED_ADDED_P50_MS = 3.0  # (3b) with a ~1 KB prompt, p50 at c=1 minus Envoy alone's
GOAL_ROUTED_SHARE_OF_PROXY = 0.5  # (3b) with a ~1 KB prompt, req/s as a share of (3a)'s

# The large-body variant: a 16 KB system prompt of plain instructions (deterministic: these paragraphs, numbered,
# repeated until the next one would pass 16 KB), the same in every request; the user text still varies.
_SYSTEM_PARAGRAPHS = [
    "You are a careful software engineering assistant inside a company's internal developer portal. Answer "
    "questions about code, tooling and design with accurate, concise explanations, and prefer a small working "
    "example over an abstract description.",
    "When you write code, follow the conventions of the language the user is working in. Use clear names, keep "
    "functions short, and add a comment only where the intent is not obvious from the code itself. Do not invent "
    "library functions; if you are not sure that an API exists, say so.",
    "Before answering, make sure you understand what is being asked. If a request is ambiguous in a way that "
    "changes the answer, ask one short clarifying question instead of guessing. If it is only slightly "
    "ambiguous, state the assumption you made and answer.",
    "Never include secrets, access tokens, passwords or personal data in an answer, even when they appear in the "
    "conversation. If the user pastes such data, remind them to rotate it and carry on without repeating it.",
    "Format answers in Markdown. Put code in fenced blocks with the language named after the opening fence. Use "
    "bullet lists for steps that can be done in any order and numbered lists for steps that must be done in "
    "sequence. Keep headings short.",
    "When you review code, start with the problems that would give wrong results or lose data, then security "
    "problems, then performance, and only then style. For each problem say where it is, why it matters and how "
    "to fix it.",
    "If the user asks for a command to run, prefer commands that are safe to repeat. Warn before anything that "
    "deletes data, rewrites history or changes shared infrastructure, and offer a way to check the effect first, "
    "such as a dry run.",
    "When you propose a change of behaviour, also propose a test that fails before the change and passes after "
    "it. Keep tests independent of each other and of the order in which they run, and do not sleep in tests.",
    "Explain trade-offs honestly. When several approaches are reasonable, name them, say what each costs in "
    "complexity, speed and maintenance, and recommend one for the user's situation. Do not claim certainty you "
    "do not have.",
    "The user's services run on small machines with two cores and little memory, so favour solutions that are "
    "light on CPU and memory, start quickly and need no extra background services.",
    "Keep the answer as short as the question allows. Do not repeat the question back, do not apologise, and "
    "add a closing summary only when the answer is long enough for one to help.",
    "When you rely on documentation, name the document and the section so the user can find it. When you "
    "describe behaviour from memory rather than from a document in the conversation, say so.",
]


def _system_prompt(limit: int = 16 * 1024) -> str:
    text, i = "Guidelines for every answer in this conversation.\n\n", 0
    while True:
        para = f"{i + 1}. {_SYSTEM_PARAGRAPHS[i % len(_SYSTEM_PARAGRAPHS)]}\n\n"
        if len(text) + len(para) > limit:
            return text.rstrip() + "\n"
        text, i = text + para, i + 1


SYSTEM_PROMPT_16K = _system_prompt()

# The ~1 KB prompt variant: the varying user text, then these fixed details (still a code-generation request).
USER_DETAILS_1K = (
    ". It takes a sorted list of integers and a target value and returns the index of the target, or -1 when the "
    "target is not in the list. Requirements: use an iterative loop rather than recursion; keep the running time "
    "logarithmic in the length of the list; handle an empty list, a list with one element, and targets smaller "
    "than the first or larger than the last element; when the target occurs more than once, return the index of "
    "its first occurrence. Add type hints for the parameters and the return value, and a docstring that states "
    "the precondition that the list is sorted in ascending order. Do not use the bisect module or any other "
    "library helper. After the function, write a short set of pytest unit tests that cover the cases above, "
    "including a list of even length and one of odd length, and a test that a list of a hundred thousand "
    "elements is searched quickly. Explain briefly why the loop always terminates, and state the worst-case number "
    "of comparisons."
)

#: body variant -> (messages before the user message, text after the varying user text)
BODY_VARIANTS: dict[str, tuple[list[dict[str, str]], str]] = {
    "small": ([], ""),
    "1k": ([], USER_DETAILS_1K),
    "16k": ([{"role": "system", "content": SYSTEM_PROMPT_16K}], ""),
}

# wrk script: one POST per call of request(), with a new number in the user text every time; counts the
# answers that are not 200 or do not carry the expected decision; done() prints one JSON line. The body
# variant comes as two files: JSON text put before the user message, and (JSON-escaped) text after its
# varying part ("-": none).
WRK_LUA = r"""
threads = {}
setup = function(thread)
  table.insert(threads, thread)
end

local slurp = function(path)
  if path == nil or path == "-" then
    return ""
  end
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

init = function(args)
  path = args[1]
  counter = tonumber(args[2])
  expect_header = args[3]
  expect_value = args[4]
  expect_body = args[5]
  before_user = slurp(args[6])
  after_user = slurp(args[7])
  extra_fields = args[8] or ""
  if extra_fields == "-" then
    extra_fields = ""
  end
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
  local body = '{"model":"MODEL",' .. extra_fields .. '"messages":[' .. before_user .. '{"role":"user","content":"'
    .. user_text(counter) .. after_user .. '"}]}'
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
    server: str  # which started server: nginx | envoy | noroutes | routes | litellm (+ -base)
    path: str
    expect_header: tuple[str, str] | None = None  # (name, value) every response must carry
    expect_body: str | None = None  # substring every response body must contain
    needs_router: bool = False
    body: str = "small"  # key of BODY_VARIANTS
    extra_fields: str | None = None  # top-level JSON fields after "model" (raw, each ending in a comma)

    @property
    def envoy_key(self) -> str:
        """The Envoy-alone target this one is compared with (the same body size)."""
        return "envoy-16k" if self.body == "16k" else "envoy"


LITELLM_KEY = "litellm-proxy"
#: the routed targets send Anthropic Messages (the seed routes pick Claude first, so the request is served
#: natively and the numbers are routing's, not translation's); (3d) is a Chat client on the same routes
MESSAGES_FIELDS = '"max_tokens":256,'
#: the fixed completion's text, which every routed answer must carry (translated or not)
ROUTED_ANSWER = "binary_search(items, target)"

TARGETS = [
    Target("nginx", "nginx direct (reference)", "nginx", "/v1/chat/completions"),
    Target("envoy", "Envoy alone -> nginx (baseline)", "envoy", "/v1/chat/completions"),
    Target("envoy-16k", "Envoy alone -> nginx, 16 KB system prompt", "envoy", "/v1/chat/completions", body="16k"),
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
        expect_header=("x-bench-provider", "openai"),
    ),
    Target(
        "proxy-routes", "(3b) proxy path, seed routes (MiniLM)", "routes", "/v1/messages",
        expect_header=("x-bench-provider", "anthropic"), expect_body=ROUTED_ANSWER, needs_router=True, extra_fields=MESSAGES_FIELDS,
    ),
    Target(
        "proxy-routes-chat", "(3d) proxy path, seed routes, Chat client routed to Claude (translated)", "routes",
        "/v1/chat/completions", expect_header=("x-bench-provider", "anthropic"), expect_body=ROUTED_ANSWER, needs_router=True,
    ),
    Target(
        "proxy-routes-1k", "(3b) proxy path, seed routes (MiniLM), 1 KB prompt", "routes", "/v1/messages",
        expect_header=("x-bench-provider", "anthropic"), expect_body=ROUTED_ANSWER, needs_router=True, body="1k",
        extra_fields=MESSAGES_FIELDS,
    ),
    Target(
        "proxy-noroutes-16k", "(3a) proxy path, no routes, 16 KB system prompt", "noroutes", "/v1/chat/completions",
        expect_header=("x-bench-provider", "openai"), body="16k",
    ),
    Target(
        "proxy-routes-16k", "(3b) proxy path, seed routes (MiniLM), 16 KB system prompt", "routes",
        "/v1/messages", expect_header=("x-bench-provider", "anthropic"), expect_body=ROUTED_ANSWER, needs_router=True,
        body="16k", extra_fields=MESSAGES_FIELDS,
    ),
    # Translated both ways: an Anthropic Messages client on an OpenAI model (the request to Chat Completions, the
    # answer back to a Messages JSON); checked on the translated answer's shape and the provider nginx saw.
    Target(
        "proxy-translated", "(3c) proxy path, no routes, Anthropic client on an OpenAI model (translated)", "noroutes",
        "/v1/messages", expect_header=("x-bench-provider", "openai"), expect_body='"type":"message"',
        extra_fields=MESSAGES_FIELDS,
    ),
    # LiteLLM re-encodes the provider's answer: check that the completion's text came through.
    Target(LITELLM_KEY, "LiteLLM proxy -> nginx", "litellm", "/v1/chat/completions",
           expect_body="binary_search(items, target)"),
]


TARGETS_BY_KEY = {t.key: t for t in TARGETS}


def user_text(n: int) -> str:
    """The n-th variant of the user text: the same words (so the same tokens, the same MiniLM work and the same
    decision) with different whitespace between them (so a different key for the router's query cache)."""
    n %= VARIANTS
    out = [USER_WORDS[0]]
    for word in USER_WORDS[1:]:
        n, digit = divmod(n, len(GAPS))
        out += [GAPS[digit], word]
    return "".join(out)


def body_for(n: int, variant: str = "small", extra_fields: str | None = None) -> bytes:
    before, after = BODY_VARIANTS[variant]
    extra = json.loads("{" + extra_fields.rstrip(",") + "}") if extra_fields else {}
    body = {"model": MODEL, **extra, "messages": [*before, {"role": "user", "content": user_text(n) + after}]}
    return json.dumps(body).encode()


def write_body_parts(workdir: Path) -> dict[str, tuple[str, str]]:
    """The files the wrk script reads per body variant: (before the user message, after its varying text)."""
    parts = {}
    for variant, (before, after) in BODY_VARIANTS.items():
        files = []
        for name, text in ((f"{variant}-before.json", "".join(json.dumps(m) + "," for m in before)),
                           (f"{variant}-after.txt", json.dumps(after)[1:-1])):
            if text:
                (workdir / name).write_text(text)
                files.append(str(workdir / name))
            else:
                files.append("-")
        parts[variant] = (files[0], files[1])
    return parts


# --------------------------------------------------------------------------------------------- processes


@dataclass
class Servers:
    workdir: Path
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed right after the fork
        # Own process group: at the end the whole group (e.g. `up` and its Envoy) is stopped by its id. The work
        # directory as cwd: an older tree's supervisor starts its workers with `python -m`, which imports from
        # the cwd first, so started from a checkout a --baseline gateway's workers would run that checkout.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=self.workdir)
        log.close()
        self.procs.append((name, proc))
        return proc

    def pid(self, name: str) -> int:
        return next(proc.pid for n, proc in self.procs if n == name)

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


def baseline_tag(args: argparse.Namespace) -> str:
    """What the -base gateways differ in, for the table and the goals."""
    return " ".join([*(["baseline tree"] if args.baseline else []),
                     *([f"observability.responses: {args.baseline_observe}"] if args.baseline_observe else []),
                     *([f"--workers {args.baseline_workers}"] if args.baseline_workers is not None else [])])


def up_help(cli: str, env: dict[str, str] | None) -> str:
    return subprocess.run([cli, "up", "--help"], capture_output=True, text=True, timeout=60, check=False, env=env).stdout


def start_gateways(
    servers: Servers,
    names: list[str],
    env: dict[str, str] | None,
    baseline: str | None = None,
    baseline_observe: str | None = None,
    workers: int | None = None,
    baseline_workers: int | None = None,
) -> dict[str, bool]:
    """`up` per gateway name; a name ending in -base runs the `baseline` source tree and/or its config with
    `observability.responses: baseline_observe`, and `up --workers baseline_workers` when that is given. With
    `workers`, `--workers N` is passed to every other `up` whose --help mentions it. Returns, per gateway,
    whether --workers was passed."""
    cli = plano_cli()
    started, passed = [], {}
    helps: dict[bool, str] = {}
    for name in names:
        config = servers.workdir / f"{name}.yaml"
        base = name.endswith(BASELINE_SUFFIX)
        gateway_config(BENCH_DIR / "configs" / f"proxy-{name.removesuffix(BASELINE_SUFFIX)}.yaml", servers.ports["nginx"], config,
                       baseline_observe if base else None)
        gw_env = env
        if base and baseline:
            gw_env = dict(env or os.environ)
            gw_env["PYTHONPATH"] = baseline + os.pathsep + gw_env.get("PYTHONPATH", "")
        tree = bool(base and baseline)
        if tree not in helps:
            helps[tree] = up_help(cli, gw_env)
        helptext = helps[tree]
        port = free_port()
        cmd = [cli, "up", "--config", str(config), "--port", str(port)]
        if "--metrics-port" in helptext:  # two gateways run side by side: never the fixed default port
            cmd += ["--metrics-port", str(free_port())]
        n = baseline_workers if base and baseline_workers is not None else workers
        if n is not None:
            passed[name] = "--workers" in helptext
            if passed[name]:
                cmd += ["--workers", str(n)]
            else:
                print(f"  note: `up --help` of {name} has no --workers; started without it", flush=True)
        proc = servers.spawn(name, cmd, env=gw_env)
        started.append((name, port, proc))
    for name, port, proc in started:  # both start in parallel
        wait_log_line(servers, name, proc, "plano gateway ready on", 120)
        servers.ports[name] = port
    return passed


# ------------------------------------------------------------------------------------------------ LiteLLM

LITELLM_VENV = BENCH_DIR / ".venv-litellm"
# 1.106 is the version measured in shared/DESIGN.md. The range is kept narrow on purpose: releases 1.82.7,
# 1.82.8 and 1.107.0 were reported compromised and were withdrawn from PyPI; override with --litellm-spec.
LITELLM_SPEC = "litellm[proxy]>=1.106,<1.107"


def ensure_litellm(spec: str) -> Path:
    """bench/.venv-litellm/bin/litellm, creating the virtualenv and installing `spec` into it when missing."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    python = shutil.which("python3") or sys.executable
    print(f"  creating {LITELLM_VENV.relative_to(ROOT)} ({python} -m venv; pip install {spec!r}), a few minutes the "
          "first time ...", flush=True)
    if not (LITELLM_VENV / "bin" / "python").exists():
        subprocess.run([python, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=300)
    log = LITELLM_VENV / "pip-install.log"
    with log.open("wb") as out:
        done = subprocess.run([str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                               spec], stdout=out, stderr=subprocess.STDOUT, timeout=1800, check=False)
    if done.returncode != 0 or not exe.exists():
        raise RuntimeError(f"pip install {spec!r} failed ({done.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
    return exe


def litellm_version() -> str:
    out = subprocess.run([str(LITELLM_VENV / "bin" / "python"), "-c",
                          "import importlib.metadata as m; print(m.version('litellm'))"],
                         capture_output=True, text=True, timeout=60, check=False)
    return out.stdout.strip() or "?"


def litellm_environment() -> dict[str, str]:
    """LiteLLM's environment: no database, no callbacks or telemetry, the bundled model cost map (no fetch at
    start-up), quiet logs, nothing but localhost."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LITELLM_", "OPENAI_", "ANTHROPIC_", "DATABASE_", "REDIS_")) and k.lower() not in (
               "http_proxy", "https_proxy", "all_proxy")}
    env.update({
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # the map bundled in the package, not the one on GitHub
        "LITELLM_LOG": "ERROR",
        "DISABLE_ADMIN_UI": "True",
        "NO_DOCS": "True",
        "NO_PROXY": "127.0.0.1,localhost",
    })
    return env


def start_litellm(servers: Servers, exe: Path) -> None:
    config = {
        "model_list": [{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{MODEL}", "api_base": f"http://127.0.0.1:{servers.ports['nginx']}/v1",
            "api_key": "bench-key"}}],
        "litellm_settings": {"telemetry": False, "drop_params": True, "turn_off_message_logging": True,
                             "request_timeout": 30, "callbacks": [], "success_callback": [], "failure_callback": []},
        # No client key, like the plano gateways here (their bench configs have no client_auth); LiteLLM only
        # listens on 127.0.0.1. Without a database there are no spend or error logs to write anyway.
        "general_settings": {"disable_spend_logs": True, "disable_error_logs": True,
                             "dangerously_permit_weak_or_unset_master_key": True},
    }
    path = servers.workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    proc = servers.spawn("litellm", [str(exe), "--config", str(path), "--host", "127.0.0.1", "--port", str(port),
                                     "--num_workers", "1"], env=litellm_environment())
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/health/liveliness", proc, 180)
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"litellm: {exc}\n{servers.log_tail('litellm')}") from None
    servers.ports["litellm"] = port


# ------------------------------------------------------------------------------------------------ CPU time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CPU_CLASSES = ("python", "envoy", "other")


def _proc_stats() -> dict[int, tuple[int, str, int, float]]:
    """Every process on the machine: pid -> (ppid, comm, start time in ticks, utime + stime in seconds). A
    process's utime/stime in /proc/<pid>/stat are the sums over all its threads."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        comm = raw[raw.index("(") + 1: raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2:].split()  # rest[0] is field 3 (state) of proc(5)
        out[int(entry.name)] = (int(rest[1]), comm, int(rest[19]), (int(rest[11]) + int(rest[12])) / CLOCK_TICKS)
    return out


def cpu_class(pid: int, comm: str) -> str:
    """envoy | python (the ext_proc, `plano-extproc up` itself, or LiteLLM) | other, by comm, else argv[0]."""
    try:
        argv0 = Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")).name
    except (OSError, IndexError):
        argv0 = ""
    if comm == "envoy" or argv0 == "envoy":
        return "envoy"
    if comm.startswith("python") or argv0.startswith("python") or comm in ("plano-extproc", "litellm"):
        return "python"
    return "other"


@dataclass
class CpuSnapshot:
    """CPU seconds of a process tree (a root pid and all its descendants), per process."""
    procs: dict[tuple[int, int], tuple[str, str, float]]  # (pid, start time) -> (class, comm, seconds)

    @classmethod
    def take(cls, roots: list[int]) -> CpuSnapshot:
        stats = _proc_stats()
        children: dict[int, list[int]] = {}
        for pid, (ppid, *_rest) in stats.items():
            children.setdefault(ppid, []).append(pid)
        procs, todo = {}, [r for r in roots if r in stats]
        while todo:
            pid = todo.pop()
            _, comm, start, seconds = stats[pid]
            procs[(pid, start)] = (cpu_class(pid, comm), comm, seconds)
            todo += children.get(pid, [])
        return cls(procs)

    def since(self, before: CpuSnapshot) -> dict[str, Any]:
        """CPU seconds per class between two snapshots. A process that started in between counts from 0; one that
        ended in between is lost (its time goes to its parent's cutime, not read here)."""
        per_class = dict.fromkeys(CPU_CLASSES, 0.0)
        present = dict.fromkeys(CPU_CLASSES, 0)
        for key, (klass, _comm, seconds) in self.procs.items():
            per_class[klass] += seconds - (before.procs[key][2] if key in before.procs else 0.0)
            present[klass] += 1
        return {"seconds": per_class, "processes": present,
                "vanished": sum(1 for key in before.procs if key not in self.procs)}


def cpu_per_request(delta: dict[str, Any], requests: int, seconds: float) -> dict[str, Any]:
    """ms of CPU per completed request and cores used, per class; None for a class with no process."""
    out: dict[str, Any] = {"processes": delta["processes"], "vanished": delta["vanished"]}
    for klass in CPU_CLASSES:
        secs = delta["seconds"][klass]
        has = delta["processes"][klass] > 0
        out[f"{klass}_ms_per_req"] = secs * 1000 / requests if has and requests else None
        out[f"{klass}_cores"] = secs / seconds if has and seconds else None
    return out



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
        conn.request("POST", target.path, body=body_for(n, target.body, target.extra_fields), headers={"Content-Type": "application/json"})
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


def run_wrk(wrk: str, lua: Path, target: Target, port: int, connections: int, seconds: float, first: int,
            body_files: tuple[str, str]) -> dict[str, Any]:
    name, value = target.expect_header or ("-", "-")
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(lua),
           f"http://127.0.0.1:{port}", "--", target.path, str(first), name, value, target.expect_body or "-", *body_files,
           target.extra_fields or "-"]
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
    body_file = body_file.with_name(f"body-{target.body}.json")
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

    def med_cpu(key: str) -> float | None:
        values = [r["cpu"][key] for r in runs if r.get("cpu") and r["cpu"][key] is not None]
        return statistics.median(values) if values else None

    cpu = {f"{k}_{unit}": med_cpu(f"{k}_{unit}") for k in CPU_CLASSES for unit in ("ms_per_req", "cores")}
    return {
        "p50_ms": med("p50_ms"), "p95_ms": med("p95_ms"), "p99_ms": med("p99_ms"), "rps": med("rps"), "cpu": cpu,
        # the longest wait of any round: a pause (a full garbage collection, say) shows here, not in a median
        "max_ms": max(r["max_ms"] for r in runs),
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
    """The markdown table (medians over rounds; CPU columns from the c=`concurrency` runs)."""
    c = concurrency
    lines = [
        f"| target | c=1 p50 ms | c=1 p95 ms | c={c} req/s | c={c} p50 ms | c={c} p99 / max ms | ext_proc CPU ms/req | "
        "Envoy CPU ms/req | added p50 vs Envoy ms | throughput vs Envoy | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in targets:
        r = results.get(t.key)
        if r is None:
            continue
        c1, c32 = r["c1"], r["c32"]
        base = results.get(t.envoy_key) or results.get("envoy")
        added = share = None
        if base and t.key not in ("nginx", "envoy", t.envoy_key):
            added = c1["p50_ms"] - base["c1"]["p50_ms"]
            share = c32["rps"] / base["c32"]["rps"] if base["c32"]["rps"] else None
        bad = c1["errors"] + c32["errors"] + c1["mismatches"] + c32["mismatches"]
        lines.append(
            f"| {t.label} | {fmt(c1['p50_ms'])} | {fmt(c1['p95_ms'])} | {c32['rps']:,.0f} | {fmt(c32['p50_ms'], 1)} | "
            f"{fmt(c32['p99_ms'], 1)} / {fmt(c32.get('max_ms'), 1)} | "
            f"{fmt(c32['cpu']['python_ms_per_req'], 3)} | {fmt(c32['cpu']['envoy_ms_per_req'], 3)} | "
            f"{'—' if added is None else f'{added:+.2f}'} | {'—' if share is None else f'{share:.1%}'} | {bad} |"
        )
    return "\n".join(lines)


def judge(results: dict[str, dict[str, Any]], suffix: str = "", observe: str | None = None) -> list[dict[str, Any]]:
    """Issue 13's goals on the gateway targets whose keys end in `suffix` ("" or -base); Envoy alone and
    LiteLLM are shared. `observe`: the gateways' observability.responses when not the default (bodies). Each
    goal: name, measured value (None: not measured), bar, ok, and a markdown line."""
    envoy, litellm = results.get("envoy"), results.get(LITELLM_KEY)
    proxy, routed = results.get("proxy-noroutes" + suffix), results.get("proxy-routes-1k" + suffix)
    routed_text = "routed path (3b, ~1 KB prompt)"
    if routed is None and results.get("proxy-routes" + suffix):  # indicative only: the goal is for a 1 KB prompt
        routed, routed_text = results["proxy-routes" + suffix], "routed path (3b, ~0.1 KB prompt, not the goal's 1 KB)"
    goals: list[dict[str, Any]] = []

    def goal(name: str, text: str, value: float | None, bar: float, at_most: bool, unit: str, missing: str) -> None:
        ok = None if value is None else (value <= bar if at_most else value >= bar)
        bar_text = f"{'≤' if at_most else '≥'} {unit.format(bar)}"
        verdict = f"not measured ({missing})" if value is None else (
            f"{unit.format(value)} — **{'MEETS' if ok else 'MISSES'}** (goal {bar_text})")
        goals.append({"goal": name, "value": value, "bar": bar, "at_most": at_most, "ok": ok,
                      "line": f"- {text}: {verdict}"})

    def get(r: dict[str, Any] | None, *path: str) -> Any:
        for key in path:
            r = None if r is None else r.get(key)
        return r

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def diff(a: float | None, b: float | None) -> float | None:
        return a - b if a is not None and b is not None else None

    observed = "response observation on" if observe in (None, "bodies") else (
        f"observability.responses: {observe}, not the goal's observation on")
    goal("extproc_cpu_ms", f"ext_proc CPU per proxied request ((3a), {observed}, at high concurrency)",
         get(proxy, "c32", "cpu", "python_ms_per_req"), GOAL_EXTPROC_CPU_MS, True, "{:.3f} ms", "run target proxy-noroutes")
    goal("throughput_share", "proxy path (3a) throughput as a share of Envoy alone",
         ratio(get(proxy, "c32", "rps"), get(envoy, "c32", "rps")), GOAL_THROUGHPUT_SHARE, False, "{:.1%}",
         "run target proxy-noroutes")
    goal("vs_litellm", "proxy path (3a) throughput as a multiple of LiteLLM's",
         ratio(get(proxy, "c32", "rps"), get(litellm, "c32", "rps")), GOAL_VS_LITELLM, False, "{:.1f}×",
         "run with --litellm")
    goal("added_p50_ms", "proxy path (3a) added p50 at c=1 over Envoy alone",
         diff(get(proxy, "c1", "p50_ms"), get(envoy, "c1", "p50_ms")), GOAL_ADDED_P50_MS, True, "{:+.3f} ms",
         "run target proxy-noroutes")
    goal("routed_added_p50_ms", f"{routed_text} added p50 at c=1 over Envoy alone",
         diff(get(routed, "c1", "p50_ms"), get(envoy, "c1", "p50_ms")), GOAL_ROUTED_ADDED_P50_MS, True, "{:+.3f} ms",
         "run target proxy-routes-1k")
    goal("routed_share_of_proxy", f"{routed_text} throughput as a share of the proxy path (3a)",
         ratio(get(routed, "c32", "rps"), get(proxy, "c32", "rps")), GOAL_ROUTED_SHARE_OF_PROXY, False, "{:.1%}",
         "run targets proxy-routes-1k and proxy-noroutes")
    return goals


def comparisons(results: dict[str, dict[str, Any]], concurrency: int, suffix: str = "") -> list[str]:
    """Lines beyond the goals: LiteLLM's numbers and CPU per request against the plano proxy path, and what the
    16 KB system prompt costs."""
    out = []
    proxy, litellm = results.get("proxy-noroutes" + suffix), results.get(LITELLM_KEY)
    if proxy and litellm:
        lp, pp = litellm["c32"], proxy["c32"]
        lcpu = lp["cpu"]["python_ms_per_req"]
        pcpu = (pp["cpu"]["python_ms_per_req"] or 0) + (pp["cpu"]["envoy_ms_per_req"] or 0)
        line = (f"- LiteLLM proxy: {lp['rps']:,.0f} req/s at c={concurrency}, c=1 p50 "
                f"{litellm['c1']['p50_ms']:.2f} ms; plano (3a): {pp['rps']:,.0f} req/s = "
                f"{pp['rps'] / lp['rps']:.1f}× LiteLLM" if lp["rps"] else "- LiteLLM proxy: 0 req/s")
        if lcpu is not None and pcpu:
            line += (f". CPU per request: LiteLLM {lcpu:.2f} ms (its Python process) vs plano (3a) ext_proc "
                     f"{pp['cpu']['python_ms_per_req'] or 0:.3f} + Envoy {pp['cpu']['envoy_ms_per_req'] or 0:.3f} = "
                     f"{pcpu:.3f} ms (LiteLLM spends {lcpu / pcpu:.1f}× as much)")
        out.append(line)
    big_envoy = results.get("envoy-16k")
    for key in ("proxy-noroutes", "proxy-routes"):
        small, big = results.get(key + suffix), results.get(f"{key}-16k{suffix}")
        if not (small and big):
            continue
        line = f"- 16 KB system prompt, {key}: c=1 p50 {big['c1']['p50_ms']:.2f} ms ({small['c1']['p50_ms']:.2f} small)"
        if big_envoy:
            line += (f", added p50 {big['c1']['p50_ms'] - big_envoy['c1']['p50_ms']:+.2f} ms and "
                     f"{big['c32']['rps'] / big_envoy['c32']['rps']:.1%} of the throughput of Envoy alone with the same body")
        line += f"; {big['c32']['rps']:,.0f} req/s ({small['c32']['rps']:,.0f} small)"
        bc, sc = big["c32"]["cpu"]["python_ms_per_req"], small["c32"]["cpu"]["python_ms_per_req"]
        if bc is not None and sc is not None:
            line += f"; ext_proc CPU {bc:.3f} ms/req ({sc:.3f} small)"
        out.append(line)
    return out


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
    ap.add_argument("--targets", help=f"comma-separated subset of: {', '.join(t.key for t in TARGETS)} (Envoy alone, "
                                      "and with a 16k target Envoy alone with the same body, are always measured)")
    ap.add_argument("--litellm", action="store_true",
                    help=f"also measure LiteLLM's proxy ({LITELLM_KEY}); installs it into bench/.venv-litellm when missing")
    ap.add_argument("--litellm-spec", default=LITELLM_SPEC,
                    help=f"pip requirement installed into a new bench/.venv-litellm (default {LITELLM_SPEC!r})")
    ap.add_argument("--workers", type=int, default=None,
                    help="pass --workers N to `plano-extproc up` (only if its --help mentions --workers; default: not passed)")
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
    ap.add_argument("--baseline-workers", type=int, default=None, metavar="N",
                    help="also measure the proxy targets with `up --workers N` (e.g. --workers 1 --baseline-workers 2: "
                         "one and two ext_proc worker processes side by side); combines with --baseline")
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
        if any(TARGETS_BY_KEY[k].body == "16k" for k in wanted):
            wanted.add("envoy-16k")
        if LITELLM_KEY in wanted:
            args.litellm = True
        targets = [t for t in TARGETS if t.key in wanted or t.key == "envoy"]
    if not args.litellm:
        targets = [t for t in targets if t.key != LITELLM_KEY]
    if args.baseline or args.baseline_observe or args.baseline_workers is not None:
        if args.baseline:
            args.baseline = str(Path(args.baseline).resolve())
        tag = baseline_tag(args)
        base = [
            dataclasses.replace(t, key=t.key + BASELINE_SUFFIX, label=f"{t.label} @ {tag}", server=t.server + BASELINE_SUFFIX)
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
    litellm_exe = None
    if args.litellm:
        litellm_exe = ensure_litellm(args.litellm_spec)
        info["litellm"] = litellm_version()
    workdir = Path(tempfile.mkdtemp(prefix="plano-bench-"))
    servers = Servers(workdir)
    results: dict[str, dict[str, Any]] = {}
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {t.key: {"c1": [], "c32": []} for t in targets}
    lua = workdir / "post.lua"
    lua.write_text(WRK_LUA)
    body_parts = write_body_parts(workdir)
    body_file = workdir / "body.json"  # for hey: body-<variant>.json beside it
    for variant in BODY_VARIANTS:
        body_file.with_name(f"body-{variant}.json").write_bytes(body_for(0, variant))
    counter = 0  # every request of the whole run gets its own number (no router cache hits)

    def next_block() -> int:
        nonlocal counter
        counter = (counter + 200_000) % VARIANTS
        return counter

    workers_passed: dict[str, bool] = {}
    started = time.monotonic()
    try:
        print("starting nginx, Envoy alone and the gateways ...", flush=True)
        start_nginx(servers)
        start_envoy_alone(servers)
        gateways = sorted({t.server for t in targets} - {"nginx", "envoy", "litellm"})
        workers_passed = start_gateways(servers, gateways, env, args.baseline, args.baseline_observe, args.workers,
                                        args.baseline_workers)
        if litellm_exe is not None:
            start_litellm(servers, litellm_exe)
        print(f"  ready in {time.monotonic() - started:.1f} s: ports {servers.ports}", flush=True)
        print("  bodies: " + ", ".join(f"{v} {len(body_for(0, v)):,} B" for v in BODY_VARIANTS), flush=True)

        for t in targets:
            ms = warm_up(t, servers.ports[t.server], args.warmup, next_block())
            print(f"  warm-up {t.key}: {args.warmup} requests ok, sequential median {ms:.2f} ms", flush=True)

        for rnd in range(args.rounds):
            order = targets[rnd % len(targets):] + targets[: rnd % len(targets)]
            for phase, conns, seconds in (("c1", 1, args.c1_seconds), ("c32", args.concurrency, args.c32_seconds)):
                for t in order:
                    port = servers.ports[t.server]
                    roots = [servers.pid(t.server)]
                    before = CpuSnapshot.take(roots)
                    if args.tool == "hey":
                        r = run_hey(tool, body_file, t, port, conns, seconds)
                    else:
                        r = run_wrk(tool, lua, t, port, conns, seconds, next_block(), body_parts[t.body])
                    r["cpu"] = cpu_per_request(CpuSnapshot.take(roots).since(before), r["requests"], r["seconds"])
                    raw[t.key][phase].append(r)
                    cpu = r["cpu"]
                    print(f"  round {rnd + 1}/{args.rounds} {phase:>3} {t.key:<22} p50 {r['p50_ms']:7.3f} ms  "
                          f"p95 {r['p95_ms']:7.3f} ms  {r['rps']:8.0f} req/s  CPU ms/req: python "
                          f"{fmt(cpu['python_ms_per_req'], 3)} envoy {fmt(cpu['envoy_ms_per_req'], 3)}  errors "
                          f"{r['errors']}  mismatches {r['mismatches']}", flush=True)
                    time.sleep(0.3)
        for t in targets:
            results[t.key] = {"label": t.label, "path": t.path, "body": t.body, "c1": summarize(raw[t.key]["c1"]),
                              "c32": summarize(raw[t.key]["c32"]), "runs": raw[t.key]}
    except CheckFailed as exc:
        print(f"check failed: {exc}", file=sys.stderr)
        return 1
    finally:
        servers.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)

    elapsed = time.monotonic() - started
    info["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    if args.workers is None:
        workers = "`up` started without --workers"
    elif workers_passed and all(workers_passed.values()):
        workers = f"`up --workers {args.workers}`"
    else:
        workers = (f"--workers {args.workers} asked for; passed to: "
                   f"{', '.join(k for k, v in workers_passed.items() if v) or 'none (no `up` has it)'}")
    print()
    print(f"{args.rounds} round(s); c=1: {args.c1_seconds:g} s, c={args.concurrency}: {args.c32_seconds:g} s per target "
          f"and round; load average before {info['loadavg_before'][0]:.2f}, after {info['loadavg_after'][0]:.2f}; "
          f"medians over rounds; {'wrk -t1, a new body every request' if args.tool == 'wrk' else 'hey, one fixed body'}; "
          f"{workers}; total {elapsed:.0f} s")
    print(f"CPU ms/req: utime+stime of the target's processes over the c={args.concurrency} run / requests completed; "
          "ext_proc = the Python processes of the `up` tree (for LiteLLM: its own), Envoy = its Envoy")
    print()
    print(report(results, targets, args.concurrency))
    goal_sets = {"": judge(results)}
    if any(k.endswith(BASELINE_SUFFIX) for k in results):
        goal_sets[BASELINE_SUFFIX] = judge(results, BASELINE_SUFFIX, args.baseline_observe)
    for suffix, goals in goal_sets.items():
        tag = ""
        if suffix:
            tag = " — " + baseline_tag(args)
        print(f"\nGoals (issue 13){tag}:")
        print("\n".join(g["line"] for g in goals))
        print("\n".join(comparisons(results, args.concurrency, suffix)))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": info,
             "settings": {**{k: v for k, v in vars(args).items() if k != "json"}, "workers_passed": workers_passed,
                          "bodies_bytes": {v: len(body_for(0, v)) for v in BODY_VARIANTS}},
             "goals": {"bars": {"extproc_cpu_ms": GOAL_EXTPROC_CPU_MS, "throughput_share": GOAL_THROUGHPUT_SHARE,
                                "vs_litellm": GOAL_VS_LITELLM, "added_p50_ms": GOAL_ADDED_P50_MS,
                                "routed_added_p50_ms": GOAL_ROUTED_ADDED_P50_MS,
                                "routed_share_of_proxy": GOAL_ROUTED_SHARE_OF_PROXY},
                       **{suffix or "current": goals for suffix, goals in goal_sets.items()}},
             "results": results}, indent=2))
        print(f"\nwrote {args.json}")
    bad = sum(r[p]["errors"] + r[p]["mismatches"] for r in results.values() for p in ("c1", "c32"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
