#!/usr/bin/env python3
"""Soak: mixed traffic through a real gateway for minutes, at the highest rate the machine sustains.

    PYTHONPATH=$PWD .venv/bin/python bench/soak.py                  # ramp (~2-3 min), then 10 minutes
    PYTHONPATH=$PWD .venv/bin/python bench/soak.py --minutes 1      # a short run
    PYTHONPATH=$PWD .venv/bin/python bench/soak.py --rate 60        # no ramp: 10 minutes at 60 req/s
    ... --json soak.json                                            # every number as JSON too

The gateway runs in a child process (this script with `--serve-gateway`): a `LocalGateway` — real Envoy
(`--concurrency 1`) + the ext_proc service with the embedded router + the local mock providers (which live
in the ext_proc's process, as in `plano-extproc up --mock-providers`) — on the demo config. Streams are
paced (`--chunk-delay`, 20 ms between events) so a client can really walk away from one mid-way. The load
comes from this process: an open-loop arrival schedule at a fixed rate (a request starts every 1/rate s
whatever the others do) over a small hand-written asyncio HTTP/1.1 client with keep-alive connections.

Request kinds and what each must get (anything else is an *unexpected* outcome, and so is a client-side
timeout (`--timeout`, 30 s), a reset or a malformed answer):

* ``decision_chat`` / ``decision_messages`` / ``decision_responses``: ``POST /routing/v1/...`` → 200 and a
  decision (``models``, ``model``); some carry an ``X-Model-Affinity`` id from a pool of sessions;
* ``chat`` / ``messages`` / ``responses``: proxied, non-streamed → 200 and a mock's answer;
* ``chat_stream`` / ``messages_stream`` / ``responses_stream``: proxied, ``stream: true`` → 200 and a whole
  SSE stream (``[DONE]`` / ``message_stop`` / ``response.completed``);
* ``fallover_429`` / ``fallover_503``: the Claude mock is told (``POST /__mock/fail``) to fail once, then a
  code-generation prompt (ranked Claude → gpt-4o) → 200 (served by gpt-4o when that request met the
  failure, by Claude when concurrent Claude traffic consumed it first);
* ``retry_same``: gpt-4o-mini (used by nothing else) fails once → 200 from gpt-4o-mini (the one
  same-provider retry); ``exhausted``: gpt-4o-mini fails twice → the provider's 429 in OpenAI's error shape;
  these four run one at a time in their own loop (a failure rule must not meet another request's);
* ``bad_input``: malformed JSON, wrong types, missing fields, JSON nested 5000 deep, a bad inline route, a
  GET, an unknown path, a 300-character affinity id, an empty body → the 4xx listed in ``BAD_INPUTS``, in
  the error shape of the path's API;
* ``abort_connect`` (connect, close), ``abort_half_request`` (headers and half the body, close),
  ``abort_before_reply`` (a whole request, close before the answer), ``abort_half_stream`` (read the head
  and the first bytes of a stream, close): expected to get nothing; only a failed connect counts.

Ramp (without ``--rate``): 20 s steps from ``--start-rate``, ×1.4 each, until a step has an unexpected
outcome, a p99 over ``--max-p99`` or falls behind its schedule; the soak then runs at ``--backoff`` (0.8) ×
the last good step (the machine is shared: leave headroom). Reported: requests and unexpected outcomes by
kind, p50/p99 latency by kind, ext_proc (and Envoy) RSS and open fds before the traffic, after the first
minute and at the end (after the traffic drained), in-flight request records, CPU used by the gateway, by
this load generator and by everything else on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEMO = ROOT / "plano_extproc" / "demo" / "config.yaml"
CLAUDE = "claude-sonnet-4-20250514"
CODE = "Write a Python function that implements binary search"
REASONING = "Solve this step by step: a train leaves at 3pm at 60 mph and another at 4pm at 80 mph; when does the second catch up, and why?"
FRANCE = "What is the capital of France?"
TOPICS = ["the history of Lisbon", "how tides work", "a good name for a cat", "the rules of chess", "why the sky is blue",
          "a recipe for pancakes", "the plot of Hamlet", "how to tie a bowline knot"]
SESSIONS = 500
FAILURE_KINDS = ("fallover_429", "retry_same", "fallover_503", "exhausted")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------ the gateway child


def serve_gateway(args: argparse.Namespace) -> int:
    """Child process: the gateway; one JSON line on stdout when ready; status file every 2 s; SIGTERM stops."""
    import logging

    from plano_devtools.local import LocalGateway

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(8)

    async def run() -> None:
        gateway = LocalGateway(DEMO.read_text(), env={}, mock_providers=True, listener_port=args.port, metrics_port=args.metrics_port,
                               quiet=True, workers=args.workers, worker_max_rss_mib=args.worker_max_rss_mib)
        await gateway.start()
        for mock in gateway.mocks.values():
            mock.chunk_delay = args.chunk_delay
        assert gateway.envoy is not None and (gateway.server is not None or gateway.pool is not None)
        print(json.dumps({
            "url": gateway.url, "pid": os.getpid(), "envoy_pid": gateway.envoy.pid, "metrics_port": gateway.metrics_port,
            "worker_pids": gateway.pool.pids() if gateway.pool is not None else [],
            "openai": gateway.mocks["openai"].base_url, "anthropic": gateway.mocks["anthropic"].base_url,
            "envoy_log": str(gateway.workdir / "envoy.log"),
        }), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        if args.tracemalloc:
            loop.add_signal_handler(signal.SIGUSR1, lambda: _tracemalloc_mark(Path(args.status_file).with_name("tracemalloc.txt")))
        server = gateway.server
        while not stop.is_set():
            # with worker processes the in-flight records live in the workers (not read from here)
            status: dict[str, Any] = {"mock_requests": sum(len(m.requests) for m in gateway.mocks.values())}
            if server is not None:
                status |= {"inflight_records": len(server.inflight), "inflight_bytes": server.inflight.bytes}
            if gateway.pool is not None:
                status["worker_pids"] = gateway.pool.pids()
            Path(args.status_file).write_text(json.dumps(status))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
        await gateway.stop()

    asyncio.run(run())
    return 0


_baseline: list[Any] = []


def _tracemalloc_mark(out: Path) -> None:
    """SIGUSR1 with --tracemalloc: the first takes a baseline, each later one writes the biggest growths since."""
    import gc
    import tracemalloc

    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    if not _baseline:
        _baseline.append(snapshot)
        return
    stats = snapshot.compare_to(_baseline[0], "traceback")
    lines = [f"growth since the baseline: {sum(s.size_diff for s in stats) / 2**20:.2f} MiB in {sum(s.count_diff for s in stats)} blocks"]
    for stat in stats[:15]:
        lines.append(f"{stat.size_diff / 1024:+.1f} KiB, {stat.count_diff:+d} blocks")
        lines += [f"    {frame}" for frame in stat.traceback.format()[-8:]]
    out.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------ HTTP client


class ClientError(Exception):
    pass


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_reply(reader: asyncio.StreamReader) -> tuple[Reply, bool]:
    """One HTTP/1.1 response; (reply, connection reusable)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise ClientError(f"connection closed before the response head ({len(exc.partial)} bytes)") from None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    try:
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", ""):
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(parts)
        else:
            return Reply(status, headers, await reader.read()), False
    except asyncio.IncompleteReadError as exc:
        raise ClientError(f"connection closed mid-body (status {status}, {len(exc.partial)} bytes of a part)") from None
    return Reply(status, headers, body), headers.get("connection", "").lower() != "close"


def request_bytes(method: str, path: str, host: str, body: bytes | None, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}"]
    hdrs = {"content-type": "application/json", **(headers or {})}
    if body is not None:
        hdrs["content-length"] = str(len(body))
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class Client:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None = None) -> Reply:
        conn = self.idle.pop() if self.idle else await self.connect()
        reader, writer = conn
        reusable = False
        try:
            writer.write(request_bytes(method, path, f"{self.host}:{self.port}", body, headers))
            await writer.drain()
            reply, reusable = await read_reply(reader)
            return reply
        except (ConnectionError, OSError) as exc:
            raise ClientError(f"{type(exc).__name__}: {exc}") from None
        finally:
            if reusable and len(self.idle) < 512:
                self.idle.append(conn)
            else:
                writer.close()

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


# ----------------------------------------------------------------------------------------- the traffic


def openai_error(reply: Reply) -> str | None:
    try:
        err = json.loads(reply.body)["error"]
        if isinstance(err["message"], str) and isinstance(err["type"], str):
            return None
    except (ValueError, KeyError, TypeError):
        pass
    return f"not an OpenAI error body: {reply.body[:200]!r}"


def anthropic_error(reply: Reply) -> str | None:
    try:
        data = json.loads(reply.body)
        if data["type"] == "error" and isinstance(data["error"]["type"], str) and isinstance(data["error"]["message"], str):
            return None
    except (ValueError, KeyError, TypeError):
        pass
    return f"not an Anthropic error body: {reply.body[:200]!r}"


def nested(depth: int) -> bytes:
    return b'{"messages": ' + b"[" * depth + b"]" * depth + b"}"


#: (label, method, path, headers, body, expected status); the error shape follows from the path
BAD_INPUTS: list[tuple[str, str, str, dict[str, str], bytes, int]] = [
    ("not_json", "POST", "/v1/chat/completions", {}, b"{not json", 400),
    ("array_body", "POST", "/v1/chat/completions", {}, b"[]", 400),
    ("model_number", "POST", "/v1/messages", {}, b'{"model": 5, "max_tokens": 5, "messages": []}', 400),
    ("messages_string", "POST", "/v1/chat/completions", {}, b'{"model": "gpt-4o", "messages": "hi"}', 400),
    ("no_input", "POST", "/v1/responses", {}, b'{"model": "gpt-4o"}', 400),
    ("stream_string", "POST", "/v1/chat/completions", {}, b'{"stream": "yes", "messages": [{"role": "user", "content": "hi"}]}', 400),
    ("deep_5000", "POST", "/v1/chat/completions", {}, nested(5000), 400),
    ("bad_inline_route", "POST", "/routing/v1/chat/completions", {},
     b'{"messages": [{"role": "user", "content": "hi"}], "routing_preferences": [{"name": "x"}]}', 400),
    ("get", "GET", "/v1/chat/completions", {}, b"", 405),
    ("unknown_path", "POST", "/v1/nope", {}, b"{}", 404),
    ("long_affinity", "POST", "/v1/messages", {"x-model-affinity": "s" * 300},
     json.dumps({"model": CLAUDE, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).encode(), 400),
    ("empty_body", "POST", "/v1/responses", {}, b"", 400),
]


@dataclass
class Stats:
    counts: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    notes: Counter[str] = field(default_factory=Counter)

    def ok(self, kind: str, seconds: float | None) -> None:
        self.counts[kind] += 1
        if seconds is not None:
            self.latency[kind].append(seconds)

    def bad(self, kind: str, reason: str, seconds: float | None = None) -> None:
        self.counts[kind] += 1
        self.unexpected[kind] += 1
        if seconds is not None:
            self.latency[kind].append(seconds)
        if len(self.samples[kind]) < 5:
            self.samples[kind].append(reason[:300])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Traffic:
    def __init__(self, url: str, openai_url: str, anthropic_url: str, timeout: float, only: frozenset[str] | None = None) -> None:
        hostport = url.split("//", 1)[1]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        self.client = Client(self.host, self.port)
        self.mock_urls = {"openai": openai_url, "anthropic": anthropic_url}
        self.timeout = timeout
        self.only = only
        self.stats = Stats()
        self.seq = 0
        self.inflight = 0

    # ------------------------------------------------------------------------------------ bodies

    def prompt(self) -> str:
        self.seq += 1
        r = random.random()
        if r < 0.2:
            return CODE
        if r < 0.35:
            return REASONING
        if r < 0.55:
            return FRANCE
        # a running number: the router's caches miss, the embedded router really runs
        return f"Tell me about {random.choice(TOPICS)} (question {self.seq})"

    def headers(self) -> dict[str, str]:
        if random.random() < 0.3:
            return {"x-model-affinity": f"soak-session-{random.randrange(SESSIONS)}"}
        return {}

    def chat_body(self, stream: bool = False, prompt: str | None = None, model: str = "gpt-4o") -> bytes:
        return json.dumps({"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt or self.prompt()}]}).encode()

    def messages_body(self, stream: bool = False) -> bytes:
        return json.dumps({"model": CLAUDE, "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": self.prompt()}]}).encode()

    def responses_body(self, stream: bool = False) -> bytes:
        return json.dumps({"model": "gpt-4o", "stream": stream, "input": self.prompt()}).encode()

    # ---------------------------------------------------------------------------------- one request

    async def timed(self, kind: str, call: Callable[[], Awaitable[str | None]]) -> None:
        self.inflight += 1
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                problem = await call()
        except TimeoutError:
            problem = f"no complete answer within {self.timeout:g} s"
        except ClientError as exc:
            problem = str(exc)
        except Exception as exc:  # every failure is a finding, never a crash of the soak
            problem = f"{type(exc).__name__}: {exc}"
        finally:
            self.inflight -= 1
        seconds = None if kind.startswith("abort_") else time.monotonic() - started
        if problem is None:
            self.stats.ok(kind, seconds)
        else:
            self.stats.bad(kind, problem, seconds)

    async def proxied(self, path: str, body: bytes, check: Callable[[Reply], str | None], headers: dict[str, str] | None = None) -> str | None:
        reply = await self.client.request("POST", path, body, headers)
        if reply.status != 200:
            return f"status {reply.status}: {reply.body[:200]!r}"
        return check(reply)

    @staticmethod
    def check_decision(reply: Reply) -> str | None:
        data = json.loads(reply.body)
        return None if isinstance(data.get("models"), list) and data["models"] and isinstance(data.get("model"), str) else f"not a decision: {reply.body[:200]!r}"

    @staticmethod
    def check_chat(reply: Reply) -> str | None:
        text = json.loads(reply.body)["choices"][0]["message"]["content"]
        return None if "answered as" in text else f"unexpected answer {text!r}"

    @staticmethod
    def check_messages(reply: Reply) -> str | None:
        text = json.loads(reply.body)["content"][0]["text"]
        return None if "answered as" in text else f"unexpected answer {text!r}"

    @staticmethod
    def check_responses(reply: Reply) -> str | None:
        text = json.loads(reply.body)["output"][0]["content"][0]["text"]
        return None if "answered as" in text else f"unexpected answer {text!r}"

    @staticmethod
    def check_stream(last: bytes) -> Callable[[Reply], str | None]:
        def check(reply: Reply) -> str | None:
            if not reply.headers.get("content-type", "").startswith("text/event-stream"):
                return f"not a stream: {reply.headers.get('content-type')} {reply.body[:200]!r}"
            tail = reply.body[-4096:]
            return None if last in tail else f"stream ended without {last!r}: ...{reply.body[-200:]!r}"

        return check

    async def bad_input(self) -> str | None:
        label, method, path, headers, body, expected = random.choice(BAD_INPUTS)
        reply = await self.client.request(method, path, body if method == "POST" else None, headers)
        if reply.status != expected:
            return f"{label}: status {reply.status}, expected {expected}: {reply.body[:200]!r}"
        problem = anthropic_error(reply) if path.endswith("/messages") else openai_error(reply)
        return f"{label}: {problem}" if problem else None

    # ------------------------------------------------------------------------------------- aborts

    async def abort_connect(self) -> str | None:
        try:
            _, writer = await self.client.connect()
        except OSError as exc:
            return f"connect failed: {exc}"
        writer.close()
        return None

    async def abort_half_request(self) -> str | None:
        body = self.chat_body()
        data = request_bytes("POST", "/v1/chat/completions", self.host, body)
        try:
            _, writer = await self.client.connect()
        except OSError as exc:
            return f"connect failed: {exc}"
        writer.write(data[: len(data) - len(body) // 2])
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()
        return None

    async def abort_before_reply(self) -> str | None:
        try:
            _, writer = await self.client.connect()
        except OSError as exc:
            return f"connect failed: {exc}"
        writer.write(request_bytes("POST", "/v1/chat/completions", self.host, self.chat_body()))
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()
        return None

    async def abort_half_stream(self) -> str | None:
        try:
            reader, writer = await self.client.connect()
        except OSError as exc:
            return f"connect failed: {exc}"
        writer.write(request_bytes("POST", "/v1/chat/completions", self.host, self.chat_body(stream=True)))
        try:
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                return f"stream answered {head[:60]!r}"
            await reader.read(200)  # some of the stream, then walk away
        except (OSError, asyncio.IncompleteReadError) as exc:
            return f"stream broke before the client left: {exc!r}"
        finally:
            writer.close()
        return None

    # ---------------------------------------------------------------------------------- the mix

    def kinds(self) -> list[tuple[str, float, Callable[[], Awaitable[str | None]]]]:
        oc, om, orr = "/v1/chat/completions", "/v1/messages", "/v1/responses"
        return [
            ("decision_chat", 12, lambda: self.proxied("/routing" + oc, self.chat_body(), self.check_decision, self.headers())),
            ("decision_messages", 6, lambda: self.proxied("/routing" + om, self.messages_body(), self.check_decision, self.headers())),
            ("decision_responses", 5, lambda: self.proxied("/routing" + orr, self.responses_body(), self.check_decision, self.headers())),
            ("chat", 14, lambda: self.proxied(oc, self.chat_body(), self.check_chat, self.headers())),
            ("messages", 8, lambda: self.proxied(om, self.messages_body(), self.check_messages, self.headers())),
            ("responses", 6, lambda: self.proxied(orr, self.responses_body(), self.check_responses, self.headers())),
            ("chat_stream", 9, lambda: self.proxied(oc, self.chat_body(stream=True), self.check_stream(b"data: [DONE]"), self.headers())),
            ("messages_stream", 6, lambda: self.proxied(om, self.messages_body(stream=True), self.check_stream(b"event: message_stop"))),
            ("responses_stream", 5, lambda: self.proxied(orr, self.responses_body(stream=True), self.check_stream(b"response.completed"))),
            ("bad_input", 9, self.bad_input),
            ("abort_connect", 1.5, self.abort_connect),
            ("abort_half_request", 1.5, self.abort_half_request),
            ("abort_before_reply", 1.5, self.abort_before_reply),
            ("abort_half_stream", 1.5, self.abort_half_stream),
        ]

    # ------------------------------------------------------------------------ failure injection

    def mock_control(self, which: str, path: str, payload: dict[str, Any]) -> None:
        req = urllib.request.Request(self.mock_urls[which] + path, data=json.dumps(payload).encode(), method="POST",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()

    async def failures(self, stop: asyncio.Event) -> None:
        """One failure-injected request at a time, and the mocks' request logs emptied now and then."""
        cycle = [k for k in FAILURE_KINDS if self.only is None or k in self.only]
        n = 0
        while not stop.is_set():
            n += 1
            if n % 10 == 0:  # no rule is pending here: nothing is lost
                for which in self.mock_urls:
                    await asyncio.to_thread(self.mock_control, which, "/__mock/reset", {})
            if cycle:
                kind = cycle[(n - 1) % len(cycle)]
                await self.timed(kind, lambda kind=kind: self.failure(kind))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    async def failure(self, kind: str) -> str | None:
        oc = "/v1/chat/completions"
        if kind in ("fallover_429", "fallover_503"):
            status = 429 if kind == "fallover_429" else 503
            await asyncio.to_thread(self.mock_control, "anthropic", "/__mock/fail", {"model": CLAUDE, "status": status, "times": 1})
            reply = await self.client.request("POST", oc, self.chat_body(prompt=CODE))
            if reply.status != 200:
                return f"status {reply.status}: {reply.body[:200]!r}"
            text = json.loads(reply.body)["choices"][0]["message"]["content"]
            self.stats.notes[f"{kind} served by {text.rsplit(' ', 1)[-1]}"] += 1
            return None if "answered as" in text else f"unexpected answer {text!r}"
        times = 1 if kind == "retry_same" else 2
        await asyncio.to_thread(self.mock_control, "openai", "/__mock/fail", {"model": "gpt-4o-mini", "status": 429, "times": times})
        reply = await self.client.request("POST", oc, self.chat_body(prompt=FRANCE, model="gpt-4o-mini"))
        if kind == "retry_same":
            if reply.status != 200:
                return f"status {reply.status}: {reply.body[:200]!r}"
            text = json.loads(reply.body)["choices"][0]["message"]["content"]
            return None if text == "mock-openai answered as gpt-4o-mini" else f"unexpected answer {text!r}"
        if reply.status != 429:
            return f"status {reply.status}, expected the provider's 429: {reply.body[:200]!r}"
        return openai_error(reply)

    # ------------------------------------------------------------------------------------ a phase

    async def run(self, rate: float, seconds: float, on_tick: Callable[[float], None] | None = None) -> dict[str, Any]:
        """Open-loop arrivals at `rate` for `seconds`; waits for the stragglers. Returns this phase's stats."""
        self.stats = Stats()
        kinds = [k for k in self.kinds() if self.only is None or k[0] in self.only]
        names = [k[0] for k in kinds]
        weights = [k[1] for k in kinds]
        calls = {k[0]: k[2] for k in kinds}
        stop = asyncio.Event()
        injector = asyncio.create_task(self.failures(stop))
        tasks: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        lag_max = 0.0
        next_tick = started + 30
        i = 0
        while True:
            due = started + i / rate
            now = time.monotonic()
            if due - started >= seconds:
                break
            if due > now:
                await asyncio.sleep(due - now)
            else:
                lag_max = max(lag_max, now - due)
            kind = random.choices(names, weights)[0]
            task = asyncio.create_task(self.timed(kind, calls[kind]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
            if on_tick is not None and time.monotonic() >= next_tick:
                on_tick(time.monotonic() - started)
                next_tick += 30
        sent_for = time.monotonic() - started
        stop.set()
        await asyncio.gather(injector, *tasks)
        return {"rate": rate, "seconds": sent_for, "arrivals": i, "lag_max": lag_max, "stats": self.stats}


# ------------------------------------------------------------------------------------------ observing


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    info: dict[str, Any]
    status_file: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return int(self.info["pid"])

    @property
    def envoy_pid(self) -> int:
        return int(self.info["envoy_pid"])

    def sample(self) -> dict[str, Any]:
        out = {"extproc_rss_mib": proc_rss_mib(self.pid), "extproc_fds": proc_fds(self.pid),
               "envoy_rss_mib": proc_rss_mib(self.envoy_pid), "envoy_fds": proc_fds(self.envoy_pid)}
        with contextlib.suppress(OSError, ValueError):
            out.update(json.loads(self.status_file.read_text()))
        pids = out.get("worker_pids") or self.info.get("worker_pids") or []
        if pids:
            # the gateway process then holds the mock providers and the supervisor; the ext_proc is the workers
            sizes = [proc_rss_mib(p) for p in pids if p]
            out["worker_rss_mib"] = sum(sizes)
            out["largest_worker_rss_mib"] = max(sizes, default=0.0)
            out["worker_fds"] = sum(proc_fds(p) for p in pids if p)
        return out

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.info['metrics_port']}/metrics", timeout=5) as resp:
            return str(resp.read().decode())


def start_gateway(workdir: Path, chunk_delay: float, tracemalloc: bool = False, workers: int = 0, worker_max_rss_mib: float | None = None) -> Gateway:
    from plano_devtools.local import free_port

    status_file = workdir / "status.json"
    stderr_path = workdir / "gateway.stderr"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-gateway", "--port", str(free_port()), "--metrics-port", str(free_port()),
         "--chunk-delay", str(chunk_delay), "--status-file", str(status_file), "--workers", str(workers),
         *(["--tracemalloc"] if tracemalloc else []),
         *(["--worker-max-rss-mib", str(worker_max_rss_mib)] if worker_max_rss_mib else [])],
        stdout=subprocess.PIPE, stderr=open(stderr_path, "wb"), env={**os.environ, "PYTHONPATH": str(ROOT)},  # noqa: SIM115
        # not the caller's cwd: an older tree's workers (`python -m`) would import a checkout found there
        cwd=workdir,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"the gateway did not start:\n{stderr_path.read_text()[-3000:]}")
    return Gateway(proc, json.loads(line), status_file, stderr_path)


def stop_gateway(gateway: Gateway) -> None:
    if gateway.proc.poll() is None:
        gateway.proc.send_signal(signal.SIGTERM)
        try:
            gateway.proc.wait(60)
        except subprocess.TimeoutExpired:
            gateway.proc.kill()
            gateway.proc.wait()


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{", 1)[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


# ------------------------------------------------------------------------------------------- reporting


def log_summary(text: str) -> dict[str, int]:
    """The gateway process's stderr: log lines at warning and above by level and logger, and the mock servers'
    tracebacks (a client that walked away from a stream leaves the mock writing into a closed socket:
    BrokenPipe/ConnectionReset). The ext_proc workers log JSON lines (``"level"``, ``"logger"``); the
    supervisor's own process may log plain ``LEVEL:logger:message`` lines."""
    out: Counter[str] = Counter()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            level = str(record.get("level", "")).upper() if isinstance(record, dict) else ""
            if level in ("WARNING", "ERROR", "CRITICAL"):
                out[f"{level} {record.get('logger', '?')}"] += 1
            continue
        level = line.split(":", 1)[0]
        if level in ("WARNING", "ERROR", "CRITICAL"):
            out[f"{level} {line.split(':', 2)[1]}"] += 1
        elif line.startswith("Traceback"):
            tail = next((x for x in lines[i + 1 :] if x and not x.startswith(" ")), "?")
            out[f"traceback {tail.split(':', 1)[0]}"] += 1
    return dict(out)


def phase_line(result: dict[str, Any]) -> str:
    stats: Stats = result["stats"]
    lat = [v for k, vs in stats.latency.items() if not k.startswith(("abort_", "fallover", "retry", "exhausted")) for v in vs]
    return (f"{result['rate']:7.1f} req/s for {result['seconds']:5.1f} s: {sum(stats.counts.values()):6d} requests, "
            f"{sum(stats.unexpected.values())} unexpected, p50 {pct(lat, 0.5) * 1000:6.1f} ms, p99 {pct(lat, 0.99) * 1000:7.1f} ms, "
            f"schedule lag max {result['lag_max'] * 1000:.0f} ms")


def step_passes(result: dict[str, Any], max_p99: float) -> bool:
    stats: Stats = result["stats"]
    lat = [v for k, vs in stats.latency.items() if not k.startswith(("abort_", "fallover", "retry", "exhausted")) for v in vs]
    return sum(stats.unexpected.values()) == 0 and pct(lat, 0.99) <= max_p99 and result["lag_max"] < 0.5


async def soak(args: argparse.Namespace, gateway: Gateway) -> dict[str, Any]:
    only = frozenset(args.kinds.split(",")) if args.kinds else None
    traffic = Traffic(gateway.info["url"], gateway.info["openai"], gateway.info["anthropic"], args.timeout, only)
    if only is not None:
        arrivals = {k[0] for k in traffic.kinds()}
        if unknown := only - arrivals - set(FAILURE_KINDS):
            raise SystemExit(f"--kinds: unknown {', '.join(sorted(unknown))}; known: {', '.join(sorted(arrivals | set(FAILURE_KINDS)))}")
        if not only & arrivals:
            raise SystemExit(f"--kinds: name at least one of {', '.join(sorted(arrivals))} (the failure kinds run beside them)")
    report: dict[str, Any] = {"ramp": []}
    idle = gateway.sample()
    report["before_traffic"] = idle
    print(f"gateway up (ext_proc pid {gateway.pid}, envoy pid {gateway.envoy_pid}): {idle}", flush=True)

    # warm: the router's first calls and the mocks' first connections
    warm = await traffic.run(5, 5)
    print("warm-up  " + phase_line(warm), flush=True)

    rate = args.rate
    if rate is None:
        good = None
        step = args.start_rate
        while True:
            result = await traffic.run(step, args.step_seconds)
            passed = step_passes(result, args.max_p99)
            print(("ramp ok  " if passed else "ramp FAIL ") + phase_line(result), flush=True)
            report["ramp"].append({"rate": step, "passed": passed, "unexpected": dict(result["stats"].unexpected),
                                   "samples": dict(result["stats"].samples)})
            if not passed:
                break
            good = step
            step = round(step * 1.4, 1)
            if step > args.max_rate:
                break
            await asyncio.sleep(3)  # let the previous step drain
        if good is None:
            raise SystemExit(f"even {args.start_rate} req/s failed: lower --start-rate")
        rate = round(good * args.backoff, 1)
        print(f"highest good step {good} req/s; soaking at {rate} req/s ({args.backoff:g} x)", flush=True)
        await asyncio.sleep(5)

    report["start"] = gateway.sample()
    baseline_sent = False
    cpu0 = {"gateway": proc_cpu_s(gateway.pid), "envoy": proc_cpu_s(gateway.envoy_pid), "loadgen": proc_cpu_s(os.getpid())}
    busy0, total0 = machine_cpu()
    load0 = Path("/proc/loadavg").read_text().split()[:3]
    wall0 = time.monotonic()
    timeline: list[dict[str, Any]] = []

    def tick(elapsed: float) -> None:
        nonlocal baseline_sent
        if args.tracemalloc and not baseline_sent and elapsed >= 120:
            gateway.proc.send_signal(signal.SIGUSR1)  # the baseline: two minutes in, the caches are warm
            baseline_sent = True
        sample = gateway.sample()
        sample.update(t=round(elapsed), inflight_client=traffic.inflight, unexpected=sum(traffic.stats.unexpected.values()),
                      requests=sum(traffic.stats.counts.values()))
        timeline.append(sample)
        print(f"  t={sample['t']:4d}s  requests {sample['requests']:7d}  unexpected {sample['unexpected']}  client in-flight "
              f"{sample['inflight_client']:3d}  ext_proc RSS {sample['extproc_rss_mib']:.1f} MiB fds {sample['extproc_fds']}  "
              f"envoy RSS {sample['envoy_rss_mib']:.1f} MiB fds {sample['envoy_fds']}  in-flight records {sample.get('inflight_records')}"
              + (f"  workers RSS {sample['worker_rss_mib']:.1f} MiB (largest {sample['largest_worker_rss_mib']:.1f}) fds {sample['worker_fds']}"
                 if "worker_rss_mib" in sample else ""),
              flush=True)

    result = await traffic.run(rate, args.minutes * 60, tick)
    wall = time.monotonic() - wall0
    cpu = {k: proc_cpu_s(pid) - cpu0[k] for k, pid in (("gateway", gateway.pid), ("envoy", gateway.envoy_pid), ("loadgen", os.getpid()))}
    busy1, total1 = machine_cpu()
    traffic.client.close()
    await asyncio.sleep(args.settle)  # connections close, the observers' streams end (deferred close)
    report["end"] = gateway.sample()
    if args.tracemalloc:
        gateway.proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(5)
        with contextlib.suppress(OSError):
            print((gateway.status_file.with_name("tracemalloc.txt")).read_text(), flush=True)
    report["timeline"] = timeline
    stats: Stats = result["stats"]
    metrics = gateway.metrics()
    report.update(
        rate=rate, minutes=args.minutes, seconds=result["seconds"], arrivals=result["arrivals"], lag_max=result["lag_max"],
        counts=dict(stats.counts), unexpected=dict(stats.unexpected), samples=dict(stats.samples), notes=dict(stats.notes),
        latency={k: {"n": len(v), "p50_ms": pct(v, 0.5) * 1000, "p99_ms": pct(v, 0.99) * 1000} for k, v in sorted(stats.latency.items())},
        cpu_cores={k: v / wall for k, v in cpu.items()},
        machine_busy_cores=(busy1 - busy0) / (total1 - total0) * os.cpu_count() if total1 > total0 else None,
        cpus=os.cpu_count(), loadavg_start=load0, loadavg_end=Path("/proc/loadavg").read_text().split()[:3],
        extproc_requests={o: metric_sum(metrics, "plano_requests_total", outcome=o) for o in ("ok", "client_error", "server_error")},
        fallovers=metric_sum(metrics, "plano_upstream_fallovers_total"),
        worker_recycles=metric_sum(metrics, "plano_extproc_worker_recycles_total"),
        worker_restarts=metric_sum(metrics, "plano_extproc_worker_restarts_total"),
        gateway_log=log_summary(gateway.stderr_path.read_text(errors="replace")),
    )
    plain = [v for k, vs in stats.latency.items() if not k.startswith(("abort_", "fallover", "retry", "exhausted")) for v in vs]
    report["overall"] = {"p50_ms": pct(plain, 0.5) * 1000, "p99_ms": pct(plain, 0.99) * 1000}
    return report


def print_report(r: dict[str, Any]) -> None:
    print(f"\n## soak: {r['minutes']:g} min at {r['rate']} req/s ({r['arrivals']} arrivals in {r['seconds']:.0f} s, "
          f"schedule lag max {r['lag_max'] * 1000:.0f} ms)")
    total = sum(r["counts"].values())
    print(f"requests: {total}, unexpected: {sum(r['unexpected'].values())}")
    print("\n| kind | requests | unexpected | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for kind in sorted(r["counts"]):
        lat = r["latency"].get(kind)
        p50 = f"{lat['p50_ms']:.1f}" if lat else "-"
        p99 = f"{lat['p99_ms']:.1f}" if lat else "-"
        print(f"| {kind} | {r['counts'][kind]} | {r['unexpected'].get(kind, 0)} | {p50} | {p99} |")
    print(f"| all except aborts and failure injection | | | {r['overall']['p50_ms']:.1f} | {r['overall']['p99_ms']:.1f} |")
    for kind, samples in r["samples"].items():
        print(f"unexpected {kind}: {samples}")
    b, s, e = r["before_traffic"], r["start"], r["end"]
    print(f"\next_proc RSS MiB: before traffic {b['extproc_rss_mib']:.1f}, soak start {s['extproc_rss_mib']:.1f}, "
          f"end {e['extproc_rss_mib']:.1f} (max during {max([t['extproc_rss_mib'] for t in r['timeline']] or [float('nan')]):.1f})")
    print(f"ext_proc open fds: before {b['extproc_fds']}, start {s['extproc_fds']}, end {e['extproc_fds']}")
    if "worker_rss_mib" in e:
        print(f"ext_proc workers RSS MiB: before traffic {b.get('worker_rss_mib', float('nan')):.1f}, soak start "
              f"{s.get('worker_rss_mib', float('nan')):.1f}, end {e['worker_rss_mib']:.1f}; fds end {e['worker_fds']} (the RSS "
              "above is then the process of the mock providers and the supervisor)")
    print(f"envoy RSS MiB: before {b['envoy_rss_mib']:.1f}, start {s['envoy_rss_mib']:.1f}, end {e['envoy_rss_mib']:.1f}; "
          f"fds before {b['envoy_fds']}, start {s['envoy_fds']}, end {e['envoy_fds']}")
    print(f"in-flight request records: start {s.get('inflight_records')}, end {e.get('inflight_records')} ({e.get('inflight_bytes')} bytes)")
    print(f"ext_proc counted: {r['extproc_requests']}, fall-overs {r['fallovers']:.0f}; notes {r['notes']}")
    if "worker_rss_mib" in e:
        largest = [t["largest_worker_rss_mib"] for t in r["timeline"] if "largest_worker_rss_mib" in t]
        print(f"ext_proc workers: replaced (memory limit) {r['worker_recycles']:.0f}, restarted after a crash {r['worker_restarts']:.0f}; "
              f"largest worker RSS during the soak {max(largest, default=float('nan')):.1f} MiB")
    print(f"CPU (cores, of {r['cpus']}): gateway process {r['cpu_cores']['gateway']:.2f}, envoy {r['cpu_cores']['envoy']:.2f}, "
          f"load generator {r['cpu_cores']['loadgen']:.2f}, whole machine {r['machine_busy_cores']:.2f} "
          f"(so everything else: {r['machine_busy_cores'] - sum(r['cpu_cores'].values()):.2f}); "
          f"loadavg start {r['loadavg_start']} end {r['loadavg_end']}")
    print(f"gateway process stderr: {r['gateway_log']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mixed-traffic soak through a real gateway.")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=None, help="req/s; without it, ramp to find the highest good rate")
    parser.add_argument("--start-rate", type=float, default=20.0)
    parser.add_argument("--max-rate", type=float, default=2000.0)
    parser.add_argument("--step-seconds", type=float, default=20.0)
    parser.add_argument("--max-p99", type=float, default=1.0, help="a ramp step fails above this p99 (s)")
    parser.add_argument("--backoff", type=float, default=0.8, help="soak at this fraction of the highest good ramp step")
    parser.add_argument("--timeout", type=float, default=30.0, help="client timeout per request (s)")
    parser.add_argument("--chunk-delay", type=float, default=0.02, help="seconds between a mock stream's events")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds between the last request and the end sample")
    parser.add_argument("--json", help="write the report here too")
    parser.add_argument("--tracemalloc", action="store_true", help="trace the gateway's Python allocations (slow: use a low --rate) and print what grew from minute 2 to the end")
    parser.add_argument("--workers", type=int, default=0,
                        help="the ext_proc as N supervised worker processes, as `up` runs it (default 0: in the gateway process, "
                        "beside the mock providers)")
    parser.add_argument("--worker-max-rss-mib", type=float, default=None,
                        help="with --workers 2 or more: replace a worker past this RSS (up --worker-max-rss-mib)")
    parser.add_argument("--kinds", help="comma-separated request kinds: only these (to tell which path a trend comes from)")
    parser.add_argument("--serve-gateway", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--metrics-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--status-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_gateway:
        return serve_gateway(args)

    workdir = Path(tempfile.mkdtemp(prefix="plano-soak-"))
    gateway = start_gateway(workdir, args.chunk_delay, args.tracemalloc, args.workers, args.worker_max_rss_mib)
    try:
        report = asyncio.run(soak(args, gateway))
    finally:
        stop_gateway(gateway)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    print(f"(work dir {workdir}: gateway stderr)")
    return 0 if not report["unexpected"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
