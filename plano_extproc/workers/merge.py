"""One /metrics for the whole gateway: the workers' registries (scraped over their control sockets) and the
supervisor's own, merged by metric name and labels.

* **Counters, histograms, summaries** (every ``_total``, ``_bucket``, ``_sum``, ``_count`` sample) are
  summed over the workers. They stay monotonic across a worker restart: the last values scraped from a
  worker process are kept when it dies (a worker that does not answer counts with its last values) and
  added to every later merge once another process serves in its place, so Prometheus never sees a
  counter go down. What a crashed worker counted after its last scrape is lost (the supervisor scrapes
  every few seconds, and at every request for /metrics).
* **Gauges** are taken from the workers that answer: summed (open streams, decision-cache entries),
  except the ones that describe one shared thing or a state, which are maxed (the breaker state — the
  worst breaker —, the config generation, the shared session file's entries, build info) or minimized
  (the session store being up: 0 when any worker's store is down). ``*_created`` samples take the
  earliest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

#: gauges merged as the maximum over the workers (the others are summed)
MAX_GAUGES = frozenset({
    "plano_router_breaker_state",  # the worst breaker of any worker
    "plano_config_generation",  # the same in every worker (the supervisor numbers them)
    "plano_affinity_entries",  # with workers, the shared session file: every worker counts the same rows
    "plano_build_info",
})
#: gauges merged as the minimum
MIN_GAUGES = frozenset({"plano_affinity_store_up"})
_ACCUMULATING = frozenset({"counter", "histogram", "summary", "gaugehistogram"})

Key = tuple[str, str, tuple[tuple[str, str], ...]]  # family, sample name, labels


@dataclass
class _Family:
    name: str
    type: str
    documentation: str
    #: sample keys in the order first seen
    order: list[Key] = field(default_factory=list)


@dataclass
class _Slot:
    """What the merger remembers of one worker: the process it last scraped and its accumulating samples."""

    pid: str = ""
    accumulated: dict[Key, float] = field(default_factory=dict)


class MetricsMerger(Collector):
    """A prometheus_client collector: each collect() scrapes the sources and yields the merged families.

    `workers()` returns, per worker slot, its scraped exposition text and process id (None for a worker
    that does not answer now); `own()` the supervisor's own exposition text."""

    def __init__(self, workers: Callable[[], list[tuple[str, str] | None]], own: Callable[[], str] | None = None) -> None:
        self._workers = workers
        self._own = own
        self._slots: dict[int, _Slot] = {}
        #: what dead worker processes counted (added to every merge)
        self._retired: dict[Key, float] = {}
        self._families: dict[str, _Family] = {}
        self._known: set[Key] = set()
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Scrape now (the supervisor calls it periodically, so a crash loses little)."""
        list(self.collect())

    def collect(self) -> Iterable[Metric]:
        scraped = self._workers()
        own = self._own() if self._own is not None else ""
        with self._lock:
            return self._merge(scraped, own)

    def _parse(self, text: str) -> tuple[dict[Key, float], dict[Key, float]]:
        """(accumulating samples, gauge samples) of one exposition; families noted."""
        accumulated: dict[Key, float] = {}
        gauges: dict[Key, float] = {}
        for metric in text_string_to_metric_families(text):
            family = self._families.get(metric.name)
            if family is None:
                family = self._families[metric.name] = _Family(metric.name, metric.type, metric.documentation)
            target = accumulated if metric.type in _ACCUMULATING else gauges
            for sample in metric.samples:
                key = (metric.name, sample.name, tuple(sorted(sample.labels.items())))
                if key not in self._known:
                    self._known.add(key)
                    family.order.append(key)
                target[key] = target.get(key, 0.0) + sample.value
        return accumulated, gauges

    def _merge(self, scraped: list[tuple[str, str] | None], own: str) -> list[Metric]:
        totals: dict[Key, float] = dict(self._retired)
        gauge_values: dict[Key, list[float]] = {}
        for index, got in enumerate(scraped):
            slot = self._slots.setdefault(index, _Slot())
            if got is not None:
                text, pid = got
                accumulated, gauges = self._parse(text)
                if slot.pid and slot.pid != pid:  # another process serves this slot now: keep what the dead one counted
                    for key, value in slot.accumulated.items():
                        self._retired[key] = self._retired.get(key, 0.0) + value
                        totals[key] = totals.get(key, 0.0) + value
                slot.pid, slot.accumulated = pid, accumulated
                for key, value in gauges.items():
                    gauge_values.setdefault(key, []).append(value)
            for key, value in slot.accumulated.items():  # a worker that does not answer counts with its last values
                totals[key] = totals.get(key, 0.0) + value
        if own:
            accumulated, gauges = self._parse(own)
            for key, value in accumulated.items():
                totals[key] = totals.get(key, 0.0) + value
            for key, value in gauges.items():
                gauge_values.setdefault(key, []).append(value)
        out: list[Metric] = []
        for family in self._families.values():
            metric = Metric(family.name, family.documentation, family.type)
            for key in family.order:
                _, sample, labels = key
                if key in totals:
                    value = totals[key]
                elif key in gauge_values:
                    value = _gauge(family.name, gauge_values[key])
                else:
                    continue
                metric.add_sample(sample, dict(labels), value)
            if metric.samples:
                out.append(metric)
        return out


def _gauge(name: str, values: list[float]) -> float:
    if name.endswith("_created") or name in MIN_GAUGES:
        return min(values)
    if name in MAX_GAUGES:
        return max(values)
    return sum(values)
