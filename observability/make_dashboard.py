"""Writes observability/grafana-dashboard.json (run after changing panels; a test checks it is current
and that every metric it queries exists)."""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).with_name("grafana-dashboard.json")

PANELS = [
    # (title, unit, [(expr, legend)])
    ("Requests by outcome", "reqps", [("sum by (endpoint, outcome) (rate(plano_requests_total[$__rate_interval]))", "{{endpoint}} {{outcome}}")]),
    ("Decisions by route", "reqps", [("sum by (route) (rate(plano_decisions_total[$__rate_interval]))", "{{route}}")]),
    ("Decisions by model", "reqps", [("sum by (model) (rate(plano_decisions_total[$__rate_interval]))", "{{model}}")]),
    ("Decision source (router, affinity, fallback...)", "reqps", [("sum by (source) (rate(plano_decisions_total[$__rate_interval]))", "{{source}}")]),
    (
        "Router latency",
        "s",
        [
            ("histogram_quantile(0.5, sum by (le, backend) (rate(plano_router_duration_seconds_bucket[$__rate_interval])))", "p50 {{backend}}"),
            ("histogram_quantile(0.95, sum by (le, backend) (rate(plano_router_duration_seconds_bucket[$__rate_interval])))", "p95 {{backend}}"),
        ],
    ),
    ("Router failures and fallbacks", "reqps", [("sum by (backend, kind) (rate(plano_router_failures_total[$__rate_interval]))", "{{backend}} {{kind}}")]),
    ("Router breaker (0 closed, 1 half-open, 2 open)", "none", [("max by (backend) (plano_router_breaker_state)", "{{backend}}")]),
    ("Upstream responses by model and status", "reqps", [("sum by (model, status_class) (rate(plano_upstream_responses_total[$__rate_interval]))", "{{model}} {{status_class}}")]),
    ("Cross-model fall-overs", "reqps", [("sum by (model) (rate(plano_upstream_fallovers_total[$__rate_interval]))", "served by {{model}}")]),
    ("Tokens by model", "short", [("sum by (model, type) (rate(plano_tokens_total[$__rate_interval]))", "{{model}} {{type}}")]),
    (
        "Time to first token",
        "s",
        [("histogram_quantile(0.5, sum by (le, model) (rate(plano_gen_ai_time_to_first_token_seconds_bucket[$__rate_interval])))", "p50 {{model}}")],
    ),
    (
        "ext_proc time per message",
        "s",
        [("histogram_quantile(0.95, sum by (le, processor, phase) (rate(plano_extproc_phase_duration_seconds_bucket[$__rate_interval])))", "p95 {{processor}} {{phase}}")],
    ),
    ("In-flight ext_proc streams", "none", [("sum by (processor) (plano_extproc_inflight_streams)", "{{processor}}")]),
    (
        "Affinity cache",
        "none",
        [
            ("plano_affinity_entries", "pinned sessions"),
            ("sum(rate(plano_affinity_lookups_total{result=\"hit\"}[$__rate_interval])) / clamp_min(sum(rate(plano_affinity_lookups_total[$__rate_interval])), 1e-9)", "hit ratio"),
        ],
    ),
]


def build() -> dict:
    panels = []
    for i, (title, unit, targets) in enumerate(PANELS):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [{"expr": expr, "legendFormat": legend, "refId": chr(65 + j)} for j, (expr, legend) in enumerate(targets)],
            }
        )
    return {
        "title": "plano-extproc",
        "uid": "plano-extproc",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=1) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
