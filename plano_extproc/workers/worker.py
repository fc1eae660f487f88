"""One ext_proc worker process: ``python -m plano_extproc.workers.worker SPEC.json``, started by the
supervisor (supervisor.py), never by hand.

It serves the ext_proc (and the Decide API and gRPC health) on its own address like `serve` does, as
worker `index` of `workers` (extproc.server.ExtProcServer), and the control channel on its Unix socket
(control.py): metrics, status, and the two-phase config reload the supervisor drives. It dies with the
supervisor (PR_SET_PDEATHSIG), stops on SIGTERM, and ignores SIGINT (a terminal's Ctrl-C is the
supervisor's to handle: it stops the workers itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from plano_extproc.config import ConfigError, PlanoConfig, parse_config
from plano_extproc.workers.control import PID_HEADER, ControlServer, Reply, json_reply

if TYPE_CHECKING:
    from plano_extproc.extproc.server import ExtProcServer, Generation

log = logging.getLogger(__name__)

#: Linux prctl(2) option: the signal a process gets when its parent dies
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What the supervisor tells a worker (written as JSON into the work directory)."""

    index: int
    workers: int
    #: the config file to serve (the supervisor's copy of the latest version applied)
    config_path: str
    #: the ext_proc address (contract.worker_address) and the control socket
    listen: str
    control: str
    #: the shared session file of a `memory` session cache (None: this process's own map)
    session_file: str | None
    #: the number of the config version in `config_path` (the same in every worker)
    generation: int
    parent_pid: int
    log_level: str = "warning"
    log_format: str = "json"
    log_prompts: bool = False
    envoy_managed: bool = False
    #: seconds `stop` lets running streams finish
    grace_s: float = 2.0

    def write(self, path: Path) -> None:
        path.write_bytes(orjson.dumps(asdict(self)))

    @classmethod
    def read(cls, path: str | Path) -> WorkerSpec:
        return cls(**orjson.loads(Path(path).read_bytes()))


def die_with_parent(parent_pid: int) -> None:
    """SIGTERM when the supervisor dies, even by SIGKILL (Linux; elsewhere the supervisor's own stop has
    to do). A supervisor that is already gone (it died while this process started) means exit now."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent_pid:
        raise SystemExit(f"plano-extproc worker: the supervisor (pid {parent_pid}) is gone")


def read_config(path: str) -> PlanoConfig:
    """A version of the config as the supervisor wrote it; `$VAR` references resolved from this process's
    environment (the supervisor's)."""
    return parse_config(Path(path).read_text(encoding="utf-8"), os.environ)


class Control:
    """The worker side of the control channel."""

    def __init__(self, server: ExtProcServer) -> None:
        self.server = server
        #: prepared, not yet committed config generations, by number
        self.pending: dict[int, Generation] = {}

    def _status(self) -> dict[str, object]:
        current = self.server.generations.current
        return {
            "pid": os.getpid(),
            "generation": current.number,
            "fingerprint": current.fingerprint,
            "fingerprints": [g.fingerprint for g in self.server.generations.live()],
            "inflight": len(self.server.inflight),
            "streams": self.server.processor.streams,
        }

    async def handle(self, method: str, path: str, body: bytes) -> Reply:
        if method == "GET" and path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return Reply(200, generate_latest(self.server.metrics.registry), CONTENT_TYPE_LATEST, {PID_HEADER: str(os.getpid())})
        if method == "GET" and path == "/status":
            return json_reply(200, self._status())
        if method != "POST":
            return json_reply(404, {"error": f"no {method} {path}"})
        args = orjson.loads(body) if body else {}
        if not isinstance(args, dict):
            return json_reply(400, {"error": "a JSON object, please"})
        if path == "/prepare":
            return await self._prepare(str(args["path"]), int(args["generation"]))
        if path == "/commit":
            generation = self.pending.pop(int(args["generation"]), None)
            if generation is None:
                return json_reply(409, {"error": f"generation {args['generation']} is not prepared here"})
            return json_reply(200, {"outcome": self.server.commit(generation), **self._status()})
        if path == "/abort":
            generation = self.pending.pop(int(args["generation"]), None)
            if generation is not None:
                self.server.discard(generation)
            return json_reply(200, self._status())
        if path == "/revert":
            self.server.revert()
            return json_reply(200, self._status())
        if path == "/drain":
            await self.server.drain()
            return json_reply(200, self._status())
        if path == "/forget":
            self.server.generations.forget(str(args["fingerprint"]))
            return json_reply(200, self._status())
        return json_reply(404, {"error": f"no POST {path}"})

    async def _prepare(self, path: str, number: int) -> Reply:
        try:
            config = read_config(path)
        except ConfigError as exc:
            return json_reply(422, {"errors": exc.errors})
        except OSError as exc:
            return json_reply(500, {"error": f"cannot read {path}: {exc.strerror}"})
        for old in [n for n in self.pending if n != number]:  # a reload the supervisor gave up on
            self.server.discard(self.pending.pop(old))
        generation = await self.server.prepare(config, number)
        self.pending[number] = generation
        outcome = "applied" if generation.fingerprint == self.server.fingerprint else "bootstrap_mismatch"
        return json_reply(200, {"outcome": outcome, "fingerprint": generation.fingerprint})


async def serve(spec: WorkerSpec) -> int:
    from plano_extproc.extproc.server import ExtProcServer

    try:
        config = read_config(spec.config_path)
        server = ExtProcServer(
            config,
            spec.listen,
            None,
            spec.log_prompts,
            envoy_managed=spec.envoy_managed,
            worker=spec.index,
            workers=spec.workers,
            session_file=spec.session_file,
            generation=spec.generation,
        )
    except ConfigError as exc:
        log.error("invalid config %s: %s", spec.config_path, "; ".join(exc.errors))
        return 1
    except (OSError, RuntimeError) as exc:
        log.error("cannot listen on %s: %s", spec.listen, exc)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    control = ControlServer(spec.control, Control(server).handle)
    try:
        await server.start()
        await control.start()  # answering it is what "ready" means to the supervisor
        await stop.wait()
    finally:
        await control.stop()
        await server.stop(spec.grace_s)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m plano_extproc.workers.worker SPEC.json (started by `plano-extproc serve --workers N`)", file=sys.stderr)
        return 2
    spec = WorkerSpec.read(args[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(spec.parent_pid)
    from plano_extproc.logs import configure_logging

    configure_logging(spec.log_level, spec.log_format == "json", {"worker": spec.index})
    from plano_extproc.extproc.server import run_event_loop

    return run_event_loop(serve(spec))


if __name__ == "__main__":
    sys.exit(main())
