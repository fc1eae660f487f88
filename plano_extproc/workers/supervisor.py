"""The supervisor of `serve --workers N` and `up --workers N`: starts N ext_proc worker processes, restarts
one that dies, applies config versions to all of them at once, serves their merged metrics, and stops
them (SIGTERM, then SIGKILL after the grace period).

It runs no gRPC itself. Its private work directory (mode 0700) holds each worker's spec and control
socket, the config version the workers serve, and the session file of a ``memory`` session cache shared
by the workers (session_sqlite.py; with one worker, that worker's own map).

* **Addresses.** Worker k listens on `contract.worker_address` (``unix:/d/x.sock`` → ``unix:/d/x-k.sock``,
  ``host:port`` → ``host:(port + k)``); `render-envoy --workers N` renders the bootstrap for the same
  scheme.
* **Restarts.** A worker that exits while the supervisor runs is logged (error), counted
  (``plano_extproc_worker_restarts_total{worker}``) and started again on the same address, with the config
  version the others serve; quickly after a previous crash, after a back-off (0.25 s doubling to 10 s).
  While it is down Envoy's health check of the ext_proc cluster fails, so Envoy sends new requests to the
  others (`/ready` turns 503 only when two are down, or the only one), and the requests whose streams
  were on it fail closed (their in-flight state died with it).
* **Recycling** (``max_rss_mib``, `--worker-max-rss-mib`; needs 2 or more workers). A worker whose
  resident memory passes the limit is replaced without failing a request: it is told to drain (its gRPC
  health answers NOT_SERVING to Envoy's check, so within ~5 s Envoy balances new requests onto the others),
  serves what it has to the end — until no stream is in progress and no in-flight record is open, at most
  ``drain_timeout_s`` — then is stopped (SIGTERM) and started again on its address. One worker at a time,
  only while every other one runs. Logged (warning), counted (``plano_extproc_worker_recycles_total``).
  Why: grpc.aio leaks ~100 bytes per stream Envoy resets before the handler is done with it
  (grpc/grpc#43360, no release has the fix; docs/envoy.md (z)). With the rendered bootstrap's graceful
  close (ac) that is left for clients that leave mid-request and abandoned attempts, and other growth is
  slow but unbounded too, so a worker under constant load still grows.
* **Config versions.** `reload` writes the new text to the work directory and has every worker build and
  warm it up (``prepare``); only when all have, every worker serves it (``commit``), so the workers never
  serve different versions for longer than the few milliseconds between the commits. A version any worker
  refuses is refused by all (``abort``). `revert` and `forget` follow an Envoy hot restart (up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server

from plano_extproc.config import ConfigError, PlanoConfig
from plano_extproc.contract import worker_address
from plano_extproc.metrics import config_reloads_counter
from plano_extproc.session_sqlite import prepare_session_file
from plano_extproc.workers.control import PID_HEADER, Reply, call
from plano_extproc.workers.merge import MetricsMerger
from plano_extproc.workers.worker import WorkerSpec

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger(__name__)

#: restart back-off after a crash that follows another within STABLE_S (doubling from the first value)
RESTART_BACKOFF_S = (0.25, 10.0)
STABLE_S = 30.0
#: how often the merged metrics are refreshed in the background (so a crash loses at most this much)
SCRAPE_INTERVAL_S = 5.0
#: how often worker memory is compared with max_rss_mib
RECYCLE_CHECK_S = 2.0
#: a worker over the memory limit this soon after it replaced one: the limit is too low (reported once)
FRESH_S = 60.0
#: a worker told to drain keeps serving at least this long: Envoy's health check of the ext_proc cluster
#: (bootstrap/clusters.py: every 2 s, 1 s timeout, unhealthy after 2 failures) must have noticed before
#: "nothing in progress" means "nothing more will come"
DRAIN_NOTICE_S = 6.0
#: the longest a drain waits for the requests in progress (a record nobody closes, e.g. with response
#: observation off, would otherwise hold it for its whole TTL)
DRAIN_TIMEOUT_S = 600.0


def drain_timeout_s(config: PlanoConfig) -> float:
    """How long a drain may wait: the listener timeout bounds every request (plus the access-log entry
    that closes its record, a second or so later); without one, DRAIN_TIMEOUT_S."""
    timeout = config.listener.timeout_seconds
    return timeout + 5.0 if timeout else DRAIN_TIMEOUT_S


def next_to_recycle(rss_mib: list[float | None], started_at: list[float], limit_mib: float) -> tuple[int, float] | None:
    """The worker to replace next and its size: of those over the limit, the longest-running.

    Not the largest: a worker replaced a moment ago can be the largest (a limit near a fresh worker's
    size), and largest-first then replaced that one again and again while the others never were."""
    over = [(started_at[k], k, rss) for k, rss in enumerate(rss_mib) if rss is not None and rss > limit_mib]
    if not over:
        return None
    _, worker, rss = min(over)
    return worker, rss


class WorkerExited(RuntimeError):
    pass


class SupervisorMetrics:
    """The supervisor's own metrics, merged into the workers'."""

    def __init__(self, pool: WorkerPool) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.restarts = Counter(
            "plano_extproc_worker_restarts", "ext_proc worker processes restarted after they exited", ["worker"], registry=self.registry
        )
        self.workers = Gauge("plano_extproc_workers", "ext_proc worker processes configured", registry=self.registry)
        self.workers.set(pool.workers)
        self.workers_up = Gauge("plano_extproc_workers_up", "ext_proc worker processes running", registry=self.registry)
        self.workers_up.set_function(pool.running)
        self.recycles = Counter(
            "plano_extproc_worker_recycles",
            "ext_proc worker processes replaced (drained, then restarted) because their memory passed --worker-max-rss-mib",
            ["worker"],
            registry=self.registry,
        )
        self.config_reloads = config_reloads_counter(self.registry)

    def record_reload(self, result: str) -> None:
        self.config_reloads.labels(result).inc()


class WorkerPool:
    def __init__(
        self,
        workers: int,
        listen: str,
        *,
        workdir: str | Path | None = None,
        work_parent: str | None = None,
        log_level: str = "warning",
        log_format: str = "json",
        log_prompts: bool = False,
        envoy_managed: bool = False,
        env: Mapping[str, str] | None = None,
        grace_s: float = 2.0,
        metrics_address: str | None = None,
        max_rss_mib: float | None = None,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if max_rss_mib is not None and workers < 2:
            raise ValueError("a worker memory limit needs 2 or more workers: a worker is replaced only while another serves")
        self.max_rss_mib = max_rss_mib
        self.drain_timeout_s = drain_timeout_s
        #: workers being replaced on purpose: their exit is not a crash
        self._recycling: set[int] = set()
        #: workers whose process replaced one over the memory limit, and whether a too-low limit was reported
        self._replaced_for_memory: set[int] = set()
        self._limit_warned = False
        self.workers = workers
        self.listen = listen
        for k in range(workers):
            worker_address(listen, k, workers)  # a bad address fails here, not in a worker
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="plano-extproc-", dir=work_parent))
        self.log_level, self.log_format, self.log_prompts = log_level, log_format, log_prompts
        self.envoy_managed = envoy_managed
        self.env = dict(os.environ if env is None else env)
        self.grace_s = grace_s
        self.metrics_address = metrics_address
        #: a `memory` session cache shared by the workers (with one worker: its own map)
        self.session_file = str(self.workdir / "sessions.db") if workers > 1 else None
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * workers
        self._started_at = [0.0] * workers
        self._crashes = [0] * workers
        self.generation = 0
        self.config_path: Path | None = None
        self._previous: tuple[int, Path] | None = None
        self.metrics = SupervisorMetrics(self)
        self.merger = MetricsMerger(self._scrape_all, lambda: generate_latest(self.metrics.registry).decode())
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.merger)
        self._metrics_http: WSGIServer | None = None
        self._lock = asyncio.Lock()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------------------------- places

    def address(self, worker: int) -> str:
        return worker_address(self.listen, worker, self.workers)

    def control_path(self, worker: int) -> str:
        return str(self.workdir / f"control-{worker}.sock")

    def running(self) -> int:
        return sum(1 for p in self.procs if p is not None and p.poll() is None)

    def pids(self) -> list[int | None]:
        return [p.pid if p is not None and p.poll() is None else None for p in self.procs]

    # ------------------------------------------------------------------------------------- start

    async def start(self, config_text: str, timeout: float = 120.0) -> None:
        """Start every worker with `config_text` and wait until all serve. Raises (the workers started are
        left to `stop`) when one exits or is not ready within `timeout`."""
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.generation = 1
        self.config_path = self._write_config(1, config_text)
        if self.session_file is not None:
            prepare_session_file(self.session_file)  # one process sets the file up, not every worker at once
        if self.metrics_address:
            host, _, port = self.metrics_address.rpartition(":")
            try:
                self._metrics_http, _ = start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
            except OSError as exc:
                raise OSError(f"cannot serve /metrics on {self.metrics_address} ({exc.strerror})") from None
        for k in range(self.workers):
            self.procs[k] = self._spawn(k)
        await asyncio.gather(*(self._wait_ready(k, timeout) for k in range(self.workers)))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._supervise(k)) for k in range(self.workers)]
        self._tasks.append(loop.create_task(self._scrape_loop()))
        if self.max_rss_mib is not None:
            self._tasks.append(loop.create_task(self._recycle_loop(self.max_rss_mib)))

    def _write_config(self, number: int, text: str) -> Path:
        path = self.workdir / f"config-{number}.yaml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def _spawn(self, worker: int) -> subprocess.Popen[bytes]:
        assert self.config_path is not None
        spec = WorkerSpec(
            index=worker,
            workers=self.workers,
            config_path=str(self.config_path),
            listen=self.address(worker),
            control=self.control_path(worker),
            session_file=self.session_file,
            generation=self.generation,
            parent_pid=os.getpid(),
            log_level=self.log_level,
            log_format=self.log_format,
            log_prompts=self.log_prompts,
            envoy_managed=self.envoy_managed,
            grace_s=self.grace_s,
        )
        path = self.workdir / f"worker-{worker}.json"
        spec.write(path)
        self._started_at[worker] = time.monotonic()
        # its own session: a terminal's Ctrl-C reaches only us (we stop the workers); stdout and stderr are ours
        # -P: `-m` would put the working directory first on sys.path, so a plano_extproc folder there (another
        # checkout) would be what the workers run; they import what this process imported, as PYTHONPATH says
        return subprocess.Popen(
            [sys.executable, "-P", "-m", "plano_extproc.workers.worker", str(path)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    async def _wait_ready(self, worker: int, timeout: float) -> None:
        proc = self.procs[worker]
        assert proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise WorkerExited(f"ext_proc worker {worker} exited during start-up ({_status(proc.returncode)}); its log is above")
            try:
                reply = await asyncio.to_thread(call, self.control_path(worker), "GET", "/status", None, 1.0)
                body = reply.json()
                if reply.status == 200 and isinstance(body, dict) and body.get("pid") == proc.pid:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"ext_proc worker {worker} not ready after {timeout:.0f} s")
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------------------------- supervision

    async def _supervise(self, worker: int) -> None:
        while not self._stopping:
            proc = self.procs[worker]
            assert proc is not None
            code = await wait_exit(proc)
            if self._stopping:
                return
            uptime = time.monotonic() - self._started_at[worker]
            if worker in self._recycling:
                self.metrics.recycles.labels(str(worker)).inc()
                self._replaced_for_memory.add(worker)
            else:
                self._replaced_for_memory.discard(worker)
                self._crashes[worker] = 0 if uptime >= STABLE_S else self._crashes[worker] + 1
                self.metrics.restarts.labels(str(worker)).inc()
                log.error("ext_proc worker %d (pid %d) exited (%s) after %.1f s; restarting it", worker, proc.pid, _status(code), uptime)
            async with self._lock:  # never while a config version is being applied
                while not self._stopping:
                    crashes = self._crashes[worker]
                    if crashes:
                        await asyncio.sleep(min(RESTART_BACKOFF_S[0] * 2 ** (crashes - 1), RESTART_BACKOFF_S[1]))
                        if self._stopping:
                            return
                    new = self.procs[worker] = self._spawn(worker)
                    try:
                        await self._wait_ready(worker, 120.0)
                    except (WorkerExited, TimeoutError) as exc:
                        if new.poll() is None:
                            new.kill()
                            await asyncio.to_thread(new.wait)
                        if self._stopping:
                            return
                        self._crashes[worker] += 1
                        self.metrics.restarts.labels(str(worker)).inc()
                        log.error("%s; trying again", exc)
                        continue
                    log.warning("ext_proc worker %d %s (pid %d)", worker, "replaced" if worker in self._recycling else "restarted", new.pid)
                    break
            self._recycling.discard(worker)

    # ------------------------------------------------------------------------------------- recycling

    def rss_mib(self, worker: int) -> float | None:
        """The worker's resident memory (Linux /proc), None when it is not running."""
        proc = self.procs[worker]
        if proc is None or proc.poll() is not None:
            return None
        try:
            with open(f"/proc/{proc.pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmRSS:"):
                        return int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            pass
        return None

    async def _recycle_loop(self, limit_mib: float) -> None:
        while not self._stopping:
            await asyncio.sleep(RECYCLE_CHECK_S)
            if self._recycling or self.running() < self.workers:
                continue  # one at a time, and only while every other worker serves
            sizes = [self.rss_mib(k) for k in range(self.workers)]
            self._warn_if_limit_too_low(sizes, limit_mib)
            chosen = next_to_recycle(sizes, self._started_at, limit_mib)
            if chosen is not None:
                worker, rss = chosen
                try:
                    await self._recycle(worker, rss, limit_mib)
                except OSError as exc:  # its control socket failed: it is exiting; _supervise takes over
                    log.warning("ext_proc worker %d: recycling abandoned (%s)", worker, exc)

    def _warn_if_limit_too_low(self, sizes: list[float | None], limit_mib: float) -> None:
        """Once: a worker that replaced one over the limit is over it again within FRESH_S of starting, so
        the limit is below what a worker needs, and every worker will be replaced again and again."""
        if self._limit_warned:
            return
        now = time.monotonic()
        for k, rss in enumerate(sizes):
            if k in self._replaced_for_memory and rss is not None and rss > limit_mib and now - self._started_at[k] < FRESH_S:
                self._limit_warned = True
                log.error(
                    "ext_proc worker %d holds %.0f MiB %.0f s after it replaced one over --worker-max-rss-mib %.0f: "
                    "the limit is below what a worker needs, so workers are replaced again and again; "
                    "set it well above %.0f MiB",
                    k, rss, now - self._started_at[k], limit_mib, rss,
                )
                return

    async def _recycle(self, worker: int, rss: float, limit_mib: float) -> None:
        proc = self.procs[worker]
        assert proc is not None
        log.warning(
            "ext_proc worker %d (pid %d) holds %.0f MiB, over --worker-max-rss-mib %.0f: draining it, then replacing it",
            worker, proc.pid, rss, limit_mib,
        )
        await asyncio.to_thread(call, self.control_path(worker), "POST", "/drain", {}, 5.0)
        started = time.monotonic()
        await asyncio.sleep(DRAIN_NOTICE_S)
        left: object = None
        while not self._stopping and proc.poll() is None:
            body = (await asyncio.to_thread(call, self.control_path(worker), "GET", "/status", None, 5.0)).json()
            left = (body.get("streams"), body.get("inflight")) if isinstance(body, dict) else None
            if left == (0, 0):
                break
            if time.monotonic() - started >= self.drain_timeout_s:
                log.warning(
                    "ext_proc worker %d: drain timed out after %.0f s with (streams, in-flight records) %s left; replacing it",
                    worker, self.drain_timeout_s, left,
                )
                break
            await asyncio.sleep(0.5)
        if self._stopping or proc.poll() is not None:
            return  # stopping anyway, or it died draining (a crash: _supervise restarts it)
        log.info("ext_proc worker %d drained in %.1f s", worker, time.monotonic() - started)
        async with self._lock:  # never while a config version is being applied
            self._recycling.add(worker)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        # _supervise sees it exit and starts the new one; the next check waits until that one serves
        while worker in self._recycling and not self._stopping:
            await asyncio.sleep(0.1)
        # and until Envoy's health check has found it healthy, so two workers never drain at once
        await asyncio.sleep(DRAIN_NOTICE_S)

    async def _scrape_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(SCRAPE_INTERVAL_S)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.merger.refresh)

    def _scrape_all(self) -> list[tuple[str, str] | None]:
        out: list[tuple[str, str] | None] = []
        for worker in range(self.workers):
            try:
                reply = call(self.control_path(worker), "GET", "/metrics", None, 2.0)
            except OSError:
                out.append(None)
                continue
            out.append((reply.body.decode("utf-8", "replace"), reply.headers.get(PID_HEADER, "")) if reply.status == 200 else None)
        return out

    def scrape(self, worker: int) -> str | None:
        """One worker's own metrics (tests; the merged ones are at `metrics_address`)."""
        try:
            reply = call(self.control_path(worker), "GET", "/metrics", None, 2.0)
        except OSError:
            return None
        return reply.body.decode() if reply.status == 200 else None

    def merged_metrics(self) -> str:
        return generate_latest(self.registry).decode()

    # ------------------------------------------------------------------------------------- config

    async def _call_all(self, target: str, payload: dict[str, object], timeout: float) -> dict[int, Reply | OSError]:
        live = [k for k, p in enumerate(self.procs) if p is not None and p.poll() is None]

        async def one(worker: int) -> Reply | OSError:
            try:
                return await asyncio.to_thread(call, self.control_path(worker), "POST", target, payload, timeout)
            except OSError as exc:
                return exc

        replies = await asyncio.gather(*(one(k) for k in live))
        return dict(zip(live, replies, strict=True))

    async def reload(self, config_text: str, timeout: float = 120.0) -> str:
        """Serve `config_text` (validated by the caller) in every worker: "applied" or "bootstrap_mismatch"
        (extproc.server.ExtProcServer.reload). Raises, every worker keeping the version it serves, when a
        worker refuses it (ConfigError when it is invalid there)."""
        async with self._lock:
            number = self.generation + 1
            path = self._write_config(number, config_text)
            prepared = await self._call_all("/prepare", {"path": str(path), "generation": number}, timeout)
            problems: list[str] = []
            invalid: list[str] = []
            outcomes: list[str] = []
            for worker, reply in sorted(prepared.items()):
                if isinstance(reply, OSError):
                    continue  # it died meanwhile: restarted after this, with whichever version is current then
                body = reply.json()
                if reply.status == 200 and isinstance(body, dict):
                    outcomes.append(str(body["outcome"]))
                elif reply.status == 422 and isinstance(body, dict):
                    invalid += [str(e) for e in body.get("errors", [])]
                else:
                    problems.append(f"worker {worker}: {body.get('error') if isinstance(body, dict) else reply.status}")
            if invalid or problems or not outcomes:
                await self._call_all("/abort", {"generation": number}, 10.0)
                path.unlink(missing_ok=True)
                if invalid:
                    raise ConfigError(sorted(set(invalid)))
                raise RuntimeError("; ".join(problems) or "no ext_proc worker is running")
            await self._call_all("/commit", {"generation": number}, 10.0)
            if self._previous is not None and self._previous[1] != self.config_path:
                self._previous[1].unlink(missing_ok=True)
            assert self.config_path is not None
            self._previous = (self.generation, self.config_path)
            self.generation, self.config_path = number, path
            return outcomes[0]

    async def revert(self) -> None:
        """Serve again the version before the latest `reload` (up: the hot-restarted Envoy did not start)."""
        async with self._lock:
            await self._call_all("/revert", {}, 10.0)
            if self._previous is not None:
                self.generation, self.config_path = self._previous
                self._previous = None

    async def forget(self, fingerprint: str) -> None:
        """No Envoy runs the bootstrap of `fingerprint` any more (up: the old Envoy drained)."""
        await self._call_all("/forget", {"fingerprint": fingerprint}, 10.0)

    async def status(self) -> list[dict[str, object] | None]:
        out: list[dict[str, object] | None] = []
        for worker in range(self.workers):
            try:
                reply = await asyncio.to_thread(call, self.control_path(worker), "GET", "/status", None, 2.0)
                body = reply.json()
                out.append(body if isinstance(body, dict) else None)
            except OSError:
                out.append(None)
        return out

    # ------------------------------------------------------------------------------------- stop

    async def wait(self) -> None:
        """Until `stop` (the supervision tasks end only then)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        self._stopping = True
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s + 5.0
        for proc in self.procs:
            if proc is None:
                continue
            try:
                await asyncio.to_thread(proc.wait, max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
            self._metrics_http = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


async def wait_exit(proc: subprocess.Popen[bytes]) -> int:
    """Until `proc` exits, without a thread: a pidfd the event loop watches (Linux), else polling."""
    if proc.poll() is not None:
        return proc.returncode
    fd = -1
    with contextlib.suppress(AttributeError, OSError):
        fd = os.pidfd_open(proc.pid)
    if fd < 0:
        while proc.poll() is None:
            await asyncio.sleep(0.1)
        return proc.returncode
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(fd, readable)
    try:
        if proc.poll() is None:
            await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return proc.wait()


def _status(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
