"""Ranking a route's models by cost or latency (``selection_policy``). Pure.

The numbers come from ``model_metrics_sources`` (plano_extproc.model_metrics fetches and measures them in
the background); a decision reads one `MetricsSnapshot` and ranks with it, so the same snapshot always
gives the same order. Lower is better for both cost and latency. Models without a number keep the
route's order after those with one (plano's rule; plano also logs a warning, and so do we, once per
model and policy until it has data).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

log = logging.getLogger(__name__)

Prefer = Literal["cheapest", "fastest", "none"]

_UNSUPPORTED_PREFER = {
    "random": "the ranked list is the fall-over order, a shuffled one would make fall-overs unpredictable",
    "long_context_quality": "plano's internal long-context benchmark scores are not available here",
}


class SelectionPolicy(BaseModel):
    """plano's ``selection_policy``: how a matched route's models are ordered. ``cheapest`` and ``fastest``
    rank them by the cost / latency source of ``model_metrics_sources``; ``none`` keeps the route's order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefer: Prefer

    @field_validator("prefer", mode="before")
    @classmethod
    def _unsupported(cls, value: object) -> object:
        if isinstance(value, str) and value in _UNSUPPORTED_PREFER:
            raise ValueError(f"'{value}' is not supported by plano-extproc ({_UNSUPPORTED_PREFER[value]}); use cheapest, fastest or none")
        return value


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Per-model numbers at one moment, keyed by full model name ("openai/gpt-4o")."""

    #: cost for ranking (USD per million input + output tokens)
    cost: Mapping[str, float] = field(default_factory=dict)
    #: latency in seconds
    latency: Mapping[str, float] = field(default_factory=dict)

    def values_for(self, prefer: str) -> Mapping[str, float]:
        if prefer == "cheapest":
            return self.cost
        if prefer == "fastest":
            return self.latency
        return {}


EMPTY_SNAPSHOT = MetricsSnapshot()


def rank(models: Iterable[str], prefer: str, snapshot: MetricsSnapshot) -> tuple[str, ...]:
    """`models` in preference order: by ascending cost or latency (ties keep the route's order), then the
    models without a number (or with NaN) in the route's order. ``none`` keeps the route's order."""
    models = tuple(models)
    if prefer not in ("cheapest", "fastest"):
        return models
    values = snapshot.values_for(prefer)
    known = [(values[m], i, m) for i, m in enumerate(models) if m in values and not math.isnan(values[m])]
    unknown = [m for m in models if m not in values or math.isnan(values[m])]
    if unknown:
        _warn_missing(prefer, unknown)
    return tuple(m for _, _, m in sorted(known)) + tuple(unknown)


_warned: set[tuple[str, str]] = set()


def _warn_missing(prefer: str, models: Iterable[str]) -> None:
    for model in models:
        if (prefer, model) not in _warned and len(_warned) < 10_000:
            _warned.add((prefer, model))
            log.warning("no %s data for model %s: ranked last (prefer: %s)", "cost" if prefer == "cheapest" else "latency", model, prefer)
