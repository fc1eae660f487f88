"""A real `tritonserver` on the CPU, from the `nvidia-pytriton` wheel, serving `triton_models/arch_router_cpu`.

The wheel ships `pytriton/tritonserver/` (the server binary, the Python backend `backends/python/` and
one `python_backend_stubs/<X.Y>/triton_python_backend_stub` per Python) and its shared libraries in
`nvidia_pytriton.libs/`. To serve a Python-backend model (triton_models/README.md):

1. a backend directory with `python/` = `libtriton_python.so` + `triton_python_backend_utils.py` + the
   stub built for *this* interpreter's Python (3.11 for our venv) copied beside them;
2. `LD_LIBRARY_PATH` = `nvidia_pytriton.libs` (the copied backend loses its relative rpath) plus the
   directory of this interpreter's `libpython3.X.so` (the stub links it dynamically);
3. `PLANO_TRITON_SYS_PATH` = this venv's site-packages + the repo root: the stub embeds the base
   interpreter's libpython in *isolated* mode (PYTHONPATH is ignored, the venv is unknown to it), so
   `arch_router_cpu/1/model.py` puts these first on sys.path itself to import plano_extproc, numpy...

Two things cannot live in our venv: `nvidia-pytriton` pins numpy<2 and (via tritonclient[grpc])
protobuf<7, and the 3.11 stub is built with an old pybind11 that misreads numpy 2 arrays (BYTES tensors
arrive as garbage). So `prepare()` installs, once, `nvidia-pytriton` (no deps: we only use its files) and
numpy 1.26 into `<venv>/plano-triton/` with `pip install --target`; that directory goes first on the
stub's sys.path, so the model runs plano_extproc on numpy 1.26 while the gateway keeps numpy 2.

    python -m plano_devtools.triton_local --prepare            # install only (what `make setup` can run)
    python -m plano_devtools.triton_local --port-grpc 8001     # (prepare if needed and) run in the foreground

`LocalTriton` is the same thing as an object (start / stop / wait_ready / metric), used by `plano-extproc
up --local-triton`, the tests and the benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plano_devtools.processes import die_with_parent as pdeathsig_prefix

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = REPO_ROOT / "triton_models"
CPU_MODEL = "arch_router_cpu"
#: what `prepare()` installs into TRITON_HOME (pinned: the stub/pybind11/numpy combination is tested)
TRITON_PACKAGES = ("nvidia-pytriton==0.7.0", "numpy==1.26.4")
#: <venv>/plano-triton: the tritonserver wheel's files + the stub's numpy (override: PLANO_TRITON_HOME)
TRITON_HOME = Path(os.environ.get("PLANO_TRITON_HOME") or Path(sys.prefix) / "plano-triton")
INSTALL_HINT = "python -m plano_devtools.triton_local --prepare  (installs tritonserver; see triton_models/README.md)"


class TritonNotInstalled(RuntimeError):
    pass


@dataclass(frozen=True)
class TritonDist:
    """Where the pieces of the `nvidia-pytriton` wheel are."""

    root: Path  # .../site-packages/pytriton/tritonserver
    libs: Path  # .../site-packages/nvidia_pytriton.libs

    @property
    def server(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.root / "backends" / "python"

    def stub(self, version: str | None = None) -> Path:
        version = version or f"{sys.version_info.major}.{sys.version_info.minor}"
        return self.root / "python_backend_stubs" / version / "triton_python_backend_stub"


def find_triton(home: Path | None = None) -> TritonDist:
    """The wheel's files in TRITON_HOME (never imports pytriton: its Python code wants numpy<2)."""
    home = home or TRITON_HOME
    dist = TritonDist(home / "pytriton" / "tritonserver", home / "nvidia_pytriton.libs")
    for need in (dist.server, dist.python_backend / "libtriton_python.so", dist.stub(), dist.libs, home / "numpy"):
        if not need.exists():
            raise TritonNotInstalled(f"{need} not found: {INSTALL_HINT}")
    return dist


def triton_available() -> bool:
    try:
        find_triton()
    except TritonNotInstalled:
        return False
    return True


def prepare(home: Path | None = None, quiet: bool = False) -> TritonDist:
    """Install tritonserver (nvidia-pytriton) and the stub's numpy into `home` unless already there."""
    home = home or TRITON_HOME
    try:
        return find_triton(home)
    except TritonNotInstalled:
        pass
    if not quiet:
        print(f"installing {' '.join(TRITON_PACKAGES)} into {home} (once) ...", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--upgrade", "--target", str(home), "--disable-pip-version-check"]
    if quiet:
        cmd.append("-q")
    subprocess.run([*cmd, *TRITON_PACKAGES], check=True, stdout=subprocess.DEVNULL if quiet else None)
    return find_triton(home)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _python_paths(home: Path) -> list[str]:
    """The stub's sys.path head: numpy 1.26 (TRITON_HOME), this venv's site-packages, the repo."""
    paths: list[str] = []
    for p in (str(home), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], str(REPO_ROOT)):
        if p not in paths:
            paths.append(p)
    return paths


def _libpython_dir() -> str | None:
    libdir = sysconfig.get_config_var("LIBDIR")
    ldlib = sysconfig.get_config_var("LDLIBRARY")  # e.g. libpython3.11.so
    if libdir and ldlib and (Path(libdir) / ldlib).exists():
        return str(libdir)
    return None


class LocalTriton:
    """One tritonserver process on free (or given) loopback ports. Not thread-safe; sync API."""

    def __init__(
        self,
        model_repository: str | os.PathLike[str] = MODEL_REPOSITORY,
        models: tuple[str, ...] = (CPU_MODEL,),
        *,
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        host: str = "127.0.0.1",
        log_verbose: int = 0,
        log_file: str | os.PathLike[str] | None = None,
        install: bool = False,
    ) -> None:
        """Raises TritonNotInstalled when tritonserver is not installed (`make setup` runs `--prepare`);
        `install=True` installs it instead (pip, network)."""
        self.dist = prepare(quiet=True) if install else find_triton()
        self.model_repository = Path(model_repository).resolve()
        self.models = tuple(models)
        self.host = host
        self.grpc_port = grpc_port or _free_port()
        self.http_port = http_port or _free_port()
        self.metrics_port = metrics_port or _free_port()
        self.log_verbose = log_verbose
        self.workdir = Path(tempfile.mkdtemp(prefix="plano-triton-"))
        self.log_path = Path(log_file) if log_file else self.workdir / "tritonserver.log"
        self.shm_prefix = f"plano_triton_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        self.process: subprocess.Popen[bytes] | None = None
        self._backends = self._prepare_backends()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def grpc_url(self) -> str:
        """`host:port`, what `routing.router.url` takes for `backend: triton`."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    # -- process -----------------------------------------------------------------------------

    def _prepare_backends(self) -> Path:
        """backends/python/ with the backend library, its utils and the stub for this Python."""
        target = self.workdir / "backends" / "python"
        target.mkdir(parents=True)
        for item in self.dist.python_backend.iterdir():
            if item.is_file():
                shutil.copy2(item, target / item.name)
        stub = target / "triton_python_backend_stub"
        shutil.copy2(self.dist.stub(), stub)
        stub.chmod(0o755)
        return self.workdir / "backends"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = [str(self.dist.libs)]
        if (pylib := _libpython_dir()) is not None:
            libs.append(pylib)
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        paths = _python_paths(self.dist.root.parent.parent)
        if env.get("PLANO_TRITON_SYS_PATH"):  # the caller's own entries come first
            paths.insert(0, env["PLANO_TRITON_SYS_PATH"])
        env["PLANO_TRITON_SYS_PATH"] = os.pathsep.join(paths)
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def command(self) -> list[str]:
        return [
            str(self.dist.server),
            f"--model-repository={self.model_repository}",
            "--model-control-mode=explicit",
            *[f"--load-model={m}" for m in self.models],
            f"--backend-directory={self._backends}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--exit-timeout-secs=5",
            "--pinned-memory-pool-byte-size=0",
            "--cuda-memory-pool-byte-size=0:0",
            f"--log-verbose={self.log_verbose}",
        ]

    def start(self, timeout: float = 90.0, *, die_with_parent: bool = True) -> LocalTriton:
        """Start tritonserver and wait until the server and every model are ready.

        `die_with_parent` starts Triton under PR_SET_PDEATHSIG (so even a SIGKILL of us stops it; see
        plano_devtools.processes).
        """
        if self.process is not None and self.process.poll() is None:
            return self
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                [*(pdeathsig_prefix() if die_with_parent else []), *self.command()],
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        urls = [f"{self.http_url}/v2/health/ready"] + [f"{self.http_url}/v2/models/{m}/ready" for m in self.models]
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"tritonserver exited with status {code}:\n{self.log()[-3000:]}")
            if all(_http_ok(u) for u in urls):
                return
            time.sleep(0.1)
        raise TimeoutError(f"tritonserver not ready after {timeout}s:\n{self.log()[-3000:]}")

    def ready(self) -> bool:
        return self.process is not None and self.process.poll() is None and _http_ok(f"{self.http_url}/v2/health/ready")

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._cleanup_shm()

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._cleanup_shm()

    def close(self) -> None:
        """Stop and remove the work directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _cleanup_shm(self) -> None:
        """A killed server leaves its Python-backend shared-memory regions behind."""
        shm = Path("/dev/shm")
        if shm.is_dir():
            for leftover in shm.glob(f"{self.shm_prefix}*"):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- metrics -----------------------------------------------------------------------------

    def metric(self, name: str, model: str | None = CPU_MODEL) -> float:
        """Sum of a Prometheus metric (e.g. nv_inference_request_success) for `model` (None = all)."""
        with urllib.request.urlopen(self.metrics_url, timeout=2) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, labels = head.partition("{")
            if metric != name:
                continue
            if model is not None and f'model="{model}"' not in labels:
                continue
            total += float(value)
        return total

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


async def start_for_config(config: Any, **kwargs: Any) -> tuple[LocalTriton, Any]:
    """For `plano-extproc up --local-triton`: start a LocalTriton serving `routing.router.model`
    (default arch_router_cpu) and return it with the config whose `routing.router.url` points at it."""
    import asyncio
    import dataclasses

    router = config.routing.router
    if router.backend != "triton":
        raise RuntimeError(
            f"--local-triton needs routing.router.backend: triton (model: {CPU_MODEL}); the config says {router.backend!r}"
        )
    model = router.model or CPU_MODEL
    try:
        server = LocalTriton(models=(model,), **kwargs)
    except TritonNotInstalled as exc:
        raise RuntimeError(f"tritonserver is not installed: {INSTALL_HINT}") from exc
    try:
        await asyncio.to_thread(server.start)
    except BaseException:
        server.close()
        raise
    routing = config.routing.model_copy(update={"router": router.model_copy(update={"url": server.grpc_url, "model": model})})
    return server, dataclasses.replace(config, routing=routing)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m plano_devtools.triton_local",
        description="Run tritonserver on the CPU (nvidia-pytriton wheel) serving triton_models/arch_router_cpu, in the foreground.",
    )
    parser.add_argument("--port-grpc", type=int, default=8001, help="gRPC port (routing.router.url = 127.0.0.1:PORT); 0 = a free one")
    parser.add_argument("--port-http", type=int, default=8000, help="HTTP port (/v2/health/ready); 0 = a free one")
    parser.add_argument("--port-metrics", type=int, default=8002, help="Prometheus metrics port; 0 = a free one")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    parser.add_argument("--model-repository", default=str(MODEL_REPOSITORY))
    parser.add_argument("--model", action="append", dest="models", help=f"model to load (repeatable; default {CPU_MODEL})")
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument("--prepare", action="store_true", help=f"only install tritonserver + the stub's numpy into {TRITON_HOME}, then exit")
    args = parser.parse_args(argv)
    if args.prepare:
        try:
            dist = prepare()
        except subprocess.CalledProcessError as exc:
            print(f"triton_local: pip failed ({exc.returncode})", file=sys.stderr)
            return 1
        print(f"tritonserver ready to run: {dist.server}")
        return 0
    try:
        server = LocalTriton(
            args.model_repository,
            tuple(args.models or (CPU_MODEL,)),
            grpc_port=args.port_grpc or None,
            http_port=args.port_http or None,
            metrics_port=args.port_metrics or None,
            host=args.host,
            log_verbose=args.log_verbose,
        )
    except (TritonNotInstalled, subprocess.CalledProcessError) as exc:
        print(f"triton_local: {exc}", file=sys.stderr)
        return 1
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.start()
    except (RuntimeError, TimeoutError) as exc:
        print(f"triton_local: {exc}", file=sys.stderr)
        server.close()
        return 1
    print(
        f"tritonserver ready (models: {', '.join(server.models)})\n"
        f"  gRPC:    {server.grpc_url}   -> routing.router: {{backend: triton, url: {server.grpc_url}, model: {server.models[0]}}}\n"
        f"  HTTP:    {server.http_url}/v2/health/ready\n"
        f"  metrics: {server.metrics_url}\n"
        f"  log:     {server.log_path}\nCtrl-C stops it.",
        flush=True,
    )
    status = 0
    while not stop["now"]:
        if server.process is not None and server.process.poll() is not None:
            print(f"tritonserver exited ({server.process.returncode}):\n{server.log()[-2000:]}", file=sys.stderr)
            status = 1
            break
        time.sleep(0.2)
    server.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
