"""The Grafana dashboard is current and queries only metrics the service exports."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from plano_extproc.config import load_config
from plano_extproc.metrics import Metrics
from tests.conftest import DEMO_CONFIG, DEMO_ENV

ROOT = Path(__file__).resolve().parent.parent


def _dashboard_module():
    spec = importlib.util.spec_from_file_location("make_dashboard", ROOT / "observability" / "make_dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboard_json_is_current():
    module = _dashboard_module()
    assert (ROOT / "observability" / "grafana-dashboard.json").read_text() == module.render()


def test_every_queried_metric_is_exported():
    metrics = Metrics(load_config(DEMO_CONFIG, DEMO_ENV))
    from plano_extproc.affinity import AffinityCache

    metrics.watch_affinity(AffinityCache(60, 10))
    exported = set()
    for family in metrics.registry.collect():
        exported.add(family.name)
        exported.update(s.name for s in family.samples)
    for family_name in list(exported):
        for suffix in ("_total", "_bucket", "_count", "_sum", "_created"):
            exported.add(family_name + suffix)
    queried = set()
    for _, _, targets in _dashboard_module().PANELS:
        for expr, _ in targets:
            queried.update(re.findall(r"\b(plano_[a-z_]+)", expr))
    assert queried and queried <= exported, sorted(queried - exported)
