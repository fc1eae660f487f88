"""The numbers `selection_policy` ranks by, kept fresh in the background (``model_metrics_sources``).

Sources (config.CostSource / config.LatencySource):

* cost, ``digitalocean``: a model catalog fetched from ``url`` (DigitalOcean's Gradient catalog by default)
  at start-up and every ``refresh_interval`` seconds: ``{"data": [{"model_id", "pricing":
  {"input_price_per_million", "output_price_per_million"}}]}``; a model's cost is input + output (plano's
  rule), its name the catalog's ``model_id`` mapped through ``model_aliases``.
* cost, ``static``: the config's own price table.
* latency, ``prometheus``: an instant query (``{url}/api/v1/query``) at start-up and every
  ``refresh_interval`` seconds; one series per model, named by its ``model_name`` label (plano's) or
  ``model`` (this gateway's metrics).
* latency, ``gateway``: what the response observer measured for each model here (time to first token or
  the whole answer, successful answers only): the median of its latest ``samples`` answers within
  ``window_seconds``, recomputed every ``refresh_interval`` seconds.

Names are resolved through the config (bare ids, aliases) to full model names. A fetch that fails keeps
the numbers of the last one that worked (and is counted and logged); the request path only ever reads
`ModelMetrics.snapshot`, an immutable value that a refresh replaces whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import threading
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from plano_extproc.config import PlanoConfig
from plano_extproc.ranking import EMPTY_SNAPSHOT, MetricsSnapshot

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 5.0
#: bound on a fetched document (a catalog of a few thousand models is well under this)
MAX_FETCH_BYTES = 16 * 1024 * 1024


class LiveLatency:
    """Per-model latencies the gateway measured itself, fed by the response observer. Bounded: a fixed
    number of samples per model, models from the config (others are not kept)."""

    MEASURES = ("time_to_first_token", "total")

    def __init__(self, samples: int = 20, clock: Callable[[], float] = time.monotonic) -> None:
        self.samples = samples
        self._clock = clock
        self._lock = threading.Lock()
        self._data: dict[tuple[str, str], deque[tuple[float, float]]] = {}

    def add(self, model: str, measure: str, seconds: float) -> None:
        if seconds < 0 or len(self._data) >= 4096:
            return
        with self._lock:
            found = self._data.get((measure, model))
            if found is None:
                found = self._data[(measure, model)] = deque(maxlen=self.samples)
            found.append((self._clock(), seconds))

    def medians(self, measure: str, window_seconds: float, samples: int | None = None) -> dict[str, float]:
        """Model -> median of its latest `samples` values of `measure` younger than `window_seconds`."""
        oldest = self._clock() - window_seconds
        out: dict[str, float] = {}
        with self._lock:
            items = [(model, list(values)) for (kind, model), values in self._data.items() if kind == measure]
        for model, values in items:
            recent = [v for t, v in values if t >= oldest][-(samples or self.samples) :]
            if recent:
                out[model] = statistics.median(recent)
        return out


def _get_json(url: str, headers: Mapping[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers={"accept": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:
        return orjson.loads(response.read(MAX_FETCH_BYTES + 1)[:MAX_FETCH_BYTES])


def parse_catalog(document: Any, aliases: Mapping[str, str]) -> dict[str, float]:
    """A DigitalOcean-shaped catalog -> catalog name (after `aliases`) -> input + output price per million."""
    items = document.get("data") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise ValueError("the catalog has no 'data' list")
    out: dict[str, float] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("model_id"), str):
            continue
        pricing = item.get("pricing")
        if not isinstance(pricing, dict):
            continue
        parts = [pricing.get("input_price_per_million"), pricing.get("output_price_per_million")]
        if all(p is None for p in parts) or not all(p is None or (isinstance(p, (int, float)) and not isinstance(p, bool)) for p in parts):
            continue
        name = aliases.get(item["model_id"], item["model_id"])
        out[name] = float(sum(p for p in parts if p is not None))
    return out


def parse_prometheus(document: Any) -> dict[str, float]:
    """An instant-query answer -> model (its model_name label, else model) -> value."""
    if not isinstance(document, dict) or document.get("status") != "success":
        raise ValueError(f"the query failed: {document.get('error') if isinstance(document, dict) else 'not JSON'}")
    result = document.get("data", {}).get("result")
    if not isinstance(result, list):
        raise ValueError("the answer has no result list")
    out: dict[str, float] = {}
    for series in result:
        labels = series.get("metric", {}) if isinstance(series, dict) else {}
        name = labels.get("model_name") or labels.get("model")
        value = series.get("value") if isinstance(series, dict) else None
        if not isinstance(name, str) or not isinstance(value, list) or len(value) != 2:
            continue
        try:
            out[name] = float(value[1])
        except (TypeError, ValueError):
            continue
    return out


class ModelMetrics:
    """The current `MetricsSnapshot` and the background tasks that replace it."""

    def __init__(
        self,
        config: PlanoConfig,
        live: LiveLatency | None = None,
        on_refresh: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.config = config
        self.cost_source = config.cost_source
        self.latency_source = config.latency_source
        self.live = live
        #: (source kind, ok) after every refresh attempt (metrics)
        self.on_refresh = on_refresh
        self._cost: Mapping[str, float] = {}
        self._latency: Mapping[str, float] = {}
        if self.cost_source is not None and self.cost_source.provider == "static":
            self._cost = self._resolve({m: p.rank_value for m, p in self.cost_source.prices.items()})
        self.snapshot: MetricsSnapshot = EMPTY_SNAPSHOT
        self._publish()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def enabled(self) -> bool:
        return self.cost_source is not None or self.latency_source is not None

    def _resolve(self, values: Mapping[str, float]) -> dict[str, float]:
        """Names as sources write them -> full model names (unknown names are kept as written)."""
        return {self.config.resolve_model(name) or name: value for name, value in values.items()}

    def _publish(self) -> None:
        self.snapshot = MetricsSnapshot(cost=dict(self._cost), latency=dict(self._latency))

    # ------------------------------------------------------------------------------ one refresh each

    async def refresh_cost(self) -> bool:
        source = self.cost_source
        if source is None or source.provider == "static":
            return True
        headers = {"authorization": f"Bearer {source.access_key.get_secret_value()}"} if source.access_key else {}
        try:
            document = await asyncio.to_thread(_get_json, source.catalog_url, headers)
            values = parse_catalog(document, source.model_aliases)
        except Exception as exc:  # a source that fails keeps the last numbers
            log.warning("cost catalog %s: %s (keeping the last prices)", source.catalog_url, exc)
            self._report("cost", False)
            return False
        self._cost = self._resolve(values)
        self._publish()
        self._report("cost", True)
        return True

    async def refresh_latency(self) -> bool:
        source = self.latency_source
        if source is None:
            return True
        if source.provider == "gateway":
            values = self.live.medians(source.measure, source.window_seconds, source.samples) if self.live is not None else {}
            self._latency = self._resolve(values)
            self._publish()
            return True
        assert source.url is not None and source.query is not None
        url = source.url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": source.query})
        try:
            document = await asyncio.to_thread(_get_json, url)
            values = parse_prometheus(document)
        except Exception as exc:
            log.warning("latency query at %s: %s (keeping the last latencies)", source.url, exc)
            self._report("latency", False)
            return False
        self._latency = self._resolve(values)
        self._publish()
        self._report("latency", True)
        return True

    def _report(self, kind: str, ok: bool) -> None:
        if self.on_refresh is not None:
            self.on_refresh(kind, ok)

    async def refresh(self) -> None:
        """Every source once, now."""
        await asyncio.gather(self.refresh_cost(), self.refresh_latency())

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Fetch every source once (a source that is down is logged, not fatal: plano's behaviour), then
        keep refreshing in the background."""
        if not self.enabled:
            return
        await self.refresh()
        cost, latency = self.cost_source, self.latency_source
        if cost is not None and cost.provider != "static" and cost.refresh_interval:
            self._tasks.append(asyncio.create_task(self._every(float(cost.refresh_interval), self.refresh_cost)))
        if latency is not None and latency.interval_seconds:
            self._tasks.append(asyncio.create_task(self._every(latency.interval_seconds, self.refresh_latency)))

    async def _every(self, seconds: float, refresh: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await refresh()
            except Exception:  # never let a refresh loop die
                log.exception("model metrics refresh failed")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
