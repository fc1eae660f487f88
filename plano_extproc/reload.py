"""Config reload without a restart: the config file is polled; a new version is parsed and validated, then
applied (`ExtProcServer.reload` swaps it in for new requests; requests running finish on theirs).

* Polling: the file's (mtime, size, inode) every `interval` seconds, then its content hash; a rewrite with
  the same content (a `touch`, a ConfigMap resync) changes nothing. No dependency, and it follows a
  symlink swap (how Kubernetes updates a mounted ConfigMap).
* An invalid version keeps the config being served: every error is logged with its path, once per
  version of the file, and counted (`plano_config_reloads_total{result="invalid"}`).
* What applying means is the caller's: `serve` swaps the config in the ext_proc and reports a change
  that needs a new Envoy bootstrap (`serve_reloader`); `up` also hot-restarts its Envoy
  (plano_devtools/local.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import yaml

from plano_extproc.config import ConfigError, PlanoConfig
from plano_extproc.contract import config_fingerprint

if TYPE_CHECKING:
    from plano_extproc.extproc.server import ExtProcServer

log = logging.getLogger(__name__)

#: the default polling interval of `serve` and `up`
DEFAULT_INTERVAL = 2.0

Stamp = tuple[int, int, int]


class ReloadRecorder(Protocol):
    """Where reload outcomes are counted (`metrics.Metrics`, or a worker supervisor's own metrics)."""

    def record_reload(self, result: str) -> None: ...


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()  # = the file's bytes' digest


class ConfigWatcher:
    """Polls `path`; each new valid version goes to `apply`, which returns the outcome counted
    (applied, restarted, bootstrap_mismatch) or raises (failed; ConfigError: invalid)."""

    def __init__(
        self,
        path: str | Path,
        parse: Callable[[str], PlanoConfig],
        apply: Callable[[PlanoConfig], Awaitable[str]],
        metrics: ReloadRecorder,
        interval: float = DEFAULT_INTERVAL,
        initial_text: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.parse = parse
        self.apply = apply
        self.metrics = metrics
        self.interval = interval
        self._stamp = self._stat()
        if initial_text is None:
            try:
                initial_text = self.path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                initial_text = ""
        self._digest = _digest(initial_text)
        self._missing_logged = False
        self._task: asyncio.Task[None] | None = None
        #: the text of the version being parsed and applied (appliers that hand the text on read it)
        self.text = initial_text

    def _stat(self) -> Stamp | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    async def check(self) -> str | None:
        """One poll: the outcome when the file holds a new version, else None."""
        stamp = self._stat()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        if stamp is None:
            if not self._missing_logged:  # e.g. between an editor's delete and write: wait for it
                self._missing_logged = True
                log.warning("%s: the config file is gone; still serving the config read before", self.path)
            return None
        self._missing_logged = False
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            log.warning("%s: cannot read the config file (%s); still serving the config read before", self.path, exc.strerror)
            self._stamp = None  # try again at the next poll
            return None
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._digest:
            return None
        self._digest = digest
        try:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise ConfigError(["(top level): the config file is not UTF-8 text"]) from None
            self.text = text
            config = self.parse(text)
            outcome = await self.apply(config)
        except ConfigError as exc:
            log.error(
                "%s: invalid config, still serving the previous one (%d error(s)): %s",
                self.path,
                len(exc.errors),
                "; ".join(exc.errors),
            )
            self.metrics.record_reload("invalid")
            return "invalid"
        except Exception as exc:
            log.exception("%s: the new config could not be applied (%s); still serving the previous one", self.path, exc)
            self.metrics.record_reload("failed")
            return "failed"
        self.metrics.record_reload(outcome)
        return outcome

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # the watcher must outlive any surprise
                log.exception("%s: config watch failed", self.path)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _canonical(value: Any) -> Any:
    """`value` with every list sorted: two bootstraps that differ only in the order of their clusters or
    composite routes (routes or providers reordered in the config) mean the same to Envoy, since each
    composite route matches one exact cluster header value."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_canonical(v) for v in value]
        return sorted(items, key=lambda v: orjson.dumps(v, option=orjson.OPT_SORT_KEYS))
    return value


def bootstrap_digest(bootstrap_yaml: str) -> str:
    """A digest of what a rendered bootstrap means (`_canonical`)."""
    data = yaml.safe_load(bootstrap_yaml)
    return hashlib.sha256(orjson.dumps(_canonical(data), option=orjson.OPT_SORT_KEYS)).hexdigest()


def config_bootstrap_digest(config: PlanoConfig) -> str:
    """`bootstrap_digest` of `config` rendered with fixed addresses: what of it Envoy holds."""
    from plano_extproc.bootstrap import render_bootstrap_yaml

    return bootstrap_digest(render_bootstrap_yaml(config, extproc_address="unix:/plano-extproc.sock"))


def describe(config: PlanoConfig) -> str:
    routes = ", ".join(p.name for p in config.routing_preferences) or "none"
    return f"{len(config.providers)} model(s), routes: {routes}"


def serve_reloader(server: ExtProcServer, path: str | Path) -> Callable[[PlanoConfig], Awaitable[str]]:
    """`serve`'s apply: swap the config in; a change Envoy's bootstrap must follow is reported, since
    serve cannot restart someone else's Envoy (its streams keep the previous config until it runs the
    re-rendered bootstrap, `server.Generations`)."""
    return reporting_reloader(server.reload, lambda: server.config, lambda: server.generations.current.number, path)


def reporting_reloader(
    reload: Callable[[PlanoConfig], Awaitable[str]],
    current: Callable[[], PlanoConfig],
    generation: Callable[[], int],
    path: str | Path,
) -> Callable[[PlanoConfig], Awaitable[str]]:
    """`reload` (one server's, or every worker's) with `serve`'s reporting around it: what the running
    Envoy's bootstrap cannot follow is logged with the fix."""

    async def apply(config: PlanoConfig) -> str:
        before = current()
        outcome = await reload(config)
        number = generation()
        if outcome == "bootstrap_mismatch":
            log.error(
                "%s: reloaded (generation %d: %s), but this config needs a new Envoy bootstrap (models, endpoints or "
                "ranked model lists changed: fingerprint %s -> %s). Requests from the running Envoy are served with the "
                "previous config until it runs the new bootstrap: re-render it with `plano-extproc render-envoy --config %s "
                "...` and restart or hot-restart Envoy with it",
                path,
                number,
                describe(config),
                config_fingerprint(before),
                config_fingerprint(config),
                path,
            )
        else:
            log.info("%s: config reloaded (generation %d: %s)", path, number, describe(config))
            if config_bootstrap_digest(before) != config_bootstrap_digest(config):
                log.warning(
                    "%s: this change also touches settings Envoy holds (listener, timeouts, retries, observability "
                    "or tracing): they take effect when Envoy runs a re-rendered bootstrap (`plano-extproc "
                    "render-envoy`); the routing changes apply now",
                    path,
                )
        return outcome

    return apply
