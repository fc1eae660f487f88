"""plano compatibility on the real Envoy: ranking by cost and latency (a static table, a catalog fetched
from a local server, the gateway's own measurements, a real Prometheus scraping the gateway), the
response headers that say which model answered, vendor/* wildcards, unknown models, listener retries,
Azure's api-version, passthrough credentials and plano's tracing block.

Waits are bounded polls for an event (a refresh, a scrape), never sleeps that hope."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import grpc
import openai
import pytest
import yaml

from plano_devtools.local import MOCK_KEY, LocalGateway, free_port
from plano_devtools.mock_providers import MockProvider
from tests.conftest import DEMO_CONFIG
from tests.harness import CLAUDE, CODE, FRANCE, RunningGateway, claude, oai, post, user

pytestmark = pytest.mark.integration

CLAUDE_FULL = "anthropic/claude-sonnet-4-20250514"
GPT4O = "openai/gpt-4o"


def demo_with(*, policy: str | None = None, sources: list[dict] | None = None, **top: Any) -> str:
    """The demo config, its code route ranked by `policy`, with these metrics sources and top-level keys."""
    data = yaml.safe_load(DEMO_CONFIG.read_text())
    for pref in data["routing_preferences"]:
        if pref["name"] == "code_generation" and policy:
            pref["selection_policy"] = {"prefer": policy}
    if sources is not None:
        data["model_metrics_sources"] = sources
    data.update(top)
    return yaml.safe_dump(data)


def until(check: Callable[[], Any], timeout: float = 30.0, every: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` with the last value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout}s (last: {value!r})")


def code_decision(gw: RunningGateway) -> list[str]:
    status, _, decision = post(gw, "/routing/v1/chat/completions", {"messages": user(CODE)})
    assert status == 200 and decision["route"] == "code_generation", decision
    return decision["models"]


def plano_headers(headers: dict) -> dict:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-plano-")}


# ================================================================== response headers: who answered, why


def test_proxied_answers_say_which_model_answered_and_why(gw):
    status, headers, _ = post(gw, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": user(CODE)})
    assert status == 200
    assert plano_headers(headers) == {
        "x-plano-model": CLAUDE_FULL, "x-plano-route": "code_generation", "x-plano-source": "router", "x-plano-attempts": "1",
    }
    gw.anthropic_mock.fail_next(status=429)
    status, headers, body = post(gw, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": user(CODE)})
    assert status == 200 and "gpt-4o" in body["choices"][0]["message"]["content"]
    assert plano_headers(headers) == {
        "x-plano-model": GPT4O, "x-plano-route": "code_generation", "x-plano-source": "router", "x-plano-attempts": "2",
    }
    # no route: no x-plano-route; an alias says so
    status, headers, _ = post(gw, "/v1/chat/completions", {"model": "fast-model", "messages": user(FRANCE)})
    assert plano_headers(headers) == {"x-plano-model": "openai/gpt-4o-mini", "x-plano-source": "alias", "x-plano-attempts": "1"}
    # a same-model retry, through the Anthropic SDK
    gw.anthropic_mock.fail_next(status=503)
    raw = claude(gw).messages.with_raw_response.create(model=CLAUDE, max_tokens=64, messages=user(FRANCE))
    assert plano_headers(dict(raw.headers)) == {"x-plano-model": CLAUDE_FULL, "x-plano-source": "direct", "x-plano-attempts": "2"}
    # a streamed answer carries them too (they are response headers, sent before the first chunk)
    with oai(gw).chat.completions.with_streaming_response.create(model="gpt-4o", messages=user(FRANCE), stream=True) as streamed:
        assert plano_headers(dict(streamed.headers)) == {"x-plano-model": GPT4O, "x-plano-source": "direct", "x-plano-attempts": "1"}
        assert "".join(streamed.iter_lines())
    # the provider's answer never decides these headers, and decision-only answers carry the JSON instead
    status, headers, _ = post(gw, "/routing/v1/chat/completions", {"messages": user(CODE)})
    assert status == 200 and plano_headers(headers) == {}


# ================================================================== ranking by cost


def test_a_static_price_table_ranks_the_route_and_the_fall_over_follows_the_ranking():
    prices = {
        CLAUDE_FULL: {"input_per_million": 3.0, "output_per_million": 15.0},
        "gpt-4o": {"input_per_million": 2.5, "output_per_million": 10.0},
    }
    gw = RunningGateway(demo_with(policy="cheapest", sources=[{"type": "cost", "provider": "static", "prices": prices}]))
    try:
        assert code_decision(gw) == [GPT4O, CLAUDE_FULL]
        gw.openai_mock.fail_next(status=429)
        answer = oai(gw).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=user(CODE))
        tried = [r["body"]["model"] for r in gw.openai_mock.requests_snapshot()]
        assert tried == ["gpt-4o"]  # attempt 1: the cheapest model, which answered 429
        assert [r["body"]["model"] for r in gw.anthropic_mock.requests_snapshot()] == ["claude-sonnet-4-20250514"]
        assert answer.headers["x-plano-model"] == CLAUDE_FULL and answer.headers["x-plano-attempts"] == "2"
    finally:
        gw.close()


class CatalogServer:
    """Serves a model catalog file the test rewrites (DigitalOcean's shape), and remembers who asked."""

    def __init__(self, document: dict) -> None:
        self.document = document
        self.seen: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.seen.append({"path": self.path, "authorization": self.headers.get("authorization")})
                body = json.dumps(server.document).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/v2/gen-ai/models/catalog"

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def _catalog(claude_price: float, gpt_price: float) -> dict:
    return {"data": [
        {"model_id": "anthropic-claude-sonnet-4", "pricing": {"input_price_per_million": claude_price, "output_price_per_million": 0}},
        {"model_id": "openai-gpt-4o", "pricing": {"input_price_per_million": gpt_price, "output_price_per_million": 0}},
        {"model_id": "some-other-model", "pricing": {"input_price_per_million": 0.01}},
    ]}


def test_a_fetched_catalog_ranks_the_route_and_its_refresh_changes_the_ranking():
    catalog = CatalogServer(_catalog(claude_price=1.0, gpt_price=5.0))
    source = {
        "type": "cost", "provider": "digitalocean", "url": catalog.url, "refresh_interval": 1, "access_key": "$DO_TOKEN",
        "model_aliases": {"anthropic-claude-sonnet-4": CLAUDE_FULL, "openai-gpt-4o": "gpt-4o"},
    }
    text = demo_with(policy="cheapest", sources=[source])
    loop_env = {"DO_TOKEN": "do-token"}
    gw = _gateway(text, env=loop_env)
    try:
        assert code_decision(gw) == [CLAUDE_FULL, GPT4O]  # fetched at start-up
        assert catalog.seen[0] == {"path": "/v2/gen-ai/models/catalog", "authorization": "Bearer do-token"}
        catalog.document = _catalog(claude_price=9.0, gpt_price=5.0)
        until(lambda: code_decision(gw) == [GPT4O, CLAUDE_FULL])  # the next refresh
        oai(gw).chat.completions.create(model="gpt-4o-mini", messages=user(CODE))
        assert [r["body"]["model"] for r in gw.openai_mock.requests_snapshot()] == ["gpt-4o"]
    finally:
        gw.close()
        catalog.close()


def _gateway(text: str, env: dict[str, str] | None = None, **options: Any) -> RunningGateway:
    """A RunningGateway whose config may name environment variables (the provider keys are mocked)."""
    gw = RunningGateway.__new__(RunningGateway)
    gw.loop = asyncio.new_event_loop()
    gw.thread = threading.Thread(target=gw.loop.run_forever, daemon=True)
    gw.thread.start()
    gw.gateway = LocalGateway(text, env=env or {}, mock_providers=True, listener_port=free_port(), **options)
    asyncio.run_coroutine_threadsafe(gw.gateway.start(), gw.loop).result(120)
    return gw


# ================================================================== ranking by latency


def _measure(gw: RunningGateway, rounds: int = 3) -> None:
    """Direct (unrouted) answers of both models: what a latency source learns from."""
    client = oai(gw)
    for _ in range(rounds):
        client.chat.completions.create(model="gpt-4o", messages=user(FRANCE))
        client.chat.completions.create(model=CLAUDE, messages=user(FRANCE))


def test_the_gateways_own_latency_ranks_the_route_fastest_first():
    source = {"type": "latency", "provider": "gateway", "refresh_interval": 1, "measure": "time_to_first_token"}
    gw = RunningGateway(demo_with(policy="fastest", sources=[source]))
    try:
        assert code_decision(gw) == [CLAUDE_FULL, GPT4O]  # nothing measured yet: the route's order
        gw.anthropic_mock.answer_delay = 0.3
        _measure(gw)
        until(lambda: code_decision(gw) == [GPT4O, CLAUDE_FULL])
        gw.anthropic_mock.answer_delay = 0.0
        gw.openai_mock.answer_delay = 0.6
        _measure(gw, rounds=4)  # the latest answers count (median of the last samples)
        until(lambda: code_decision(gw) == [CLAUDE_FULL, GPT4O])
    finally:
        gw.close()


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip("no prometheus binary: `make test` installs Debian's prometheus package (.ci/install-test-services)")
    return found


class Prometheus:
    """A real Prometheus server scraping one target every second."""

    def __init__(self, binary: str, target: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="plano-prom-"))
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": "plano-extproc", "static_configs": [{"targets": [target]}]}]}
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.dir / "prometheus.log", "wb")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            [binary, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        until(self._ready, timeout=60)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError((self.dir / "prometheus.log").read_text()[-2000:])
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def query(self, promql: str) -> list[dict]:
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())["data"]["result"]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


#: mean time to first token per model, from the gateway's own histogram (labelled `model`)
TTFT_QUERY = (
    "sum by (model) (plano_gen_ai_time_to_first_token_seconds_sum) / sum by (model) (plano_gen_ai_time_to_first_token_seconds_count)"
)


def test_a_prometheus_query_over_the_gateways_metrics_ranks_the_route(prometheus_binary):
    metrics_port = free_port()
    prometheus = Prometheus(prometheus_binary, f"127.0.0.1:{metrics_port}")
    source = {"type": "latency", "provider": "prometheus", "url": prometheus.url, "query": TTFT_QUERY, "refresh_interval": 1}
    gw = RunningGateway(demo_with(policy="fastest", sources=[source]), metrics_port=metrics_port)
    try:
        assert code_decision(gw) == [CLAUDE_FULL, GPT4O]
        gw.anthropic_mock.answer_delay = 0.3
        _measure(gw)
        series = until(lambda: (r := prometheus.query(TTFT_QUERY)) and len(r) == 2 and r)
        latency = {s["metric"]["model"]: float(s["value"][1]) for s in series}
        assert latency[CLAUDE_FULL] > latency[GPT4O]
        until(lambda: code_decision(gw) == [GPT4O, CLAUDE_FULL])
        refreshes = gw.gateway.server.metrics.registry.get_sample_value(
            "plano_model_metrics_refreshes_total", {"source": "latency", "result": "ok"}
        )
        assert refreshes and refreshes >= 1
    finally:
        gw.close()
        prometheus.close()


# ================================================================== model names


def test_wildcard_providers_pass_the_requested_model_through_and_unknown_models_get_400():
    data = yaml.safe_load(DEMO_CONFIG.read_text())
    data["model_providers"] += [{"model": "openai/*", "access_key": "$OPENAI_API_KEY"}]
    gw = RunningGateway(yaml.safe_dump(data))
    try:
        answer = oai(gw).chat.completions.with_raw_response.create(model="openai/gpt-5-preview", messages=user(FRANCE))
        (seen,) = gw.openai_mock.requests_snapshot()
        assert seen["body"]["model"] == "gpt-5-preview" and seen["headers"]["authorization"] == f"Bearer {MOCK_KEY}"
        assert answer.headers["x-plano-model"] == "openai/gpt-5-preview" and answer.headers["x-plano-source"] == "direct"
        # a declared model is still its own entry
        oai(gw).chat.completions.create(model="openai/gpt-4o", messages=user(FRANCE))
        # bare unknown ids: 400 in each client API's shape, nothing upstream
        gw.openai_mock.reset()
        with pytest.raises(openai.BadRequestError) as chat_error:
            oai(gw).chat.completions.create(model="gpt-5-preview", messages=user(FRANCE))
        assert chat_error.value.body["param"] == "model" and "openai/gpt-5-preview" in chat_error.value.body["message"]
        with pytest.raises(anthropic.BadRequestError) as messages_error:
            claude(gw).messages.create(model="claude-9", max_tokens=16, messages=user(FRANCE))
        assert messages_error.value.body["type"] == "error" and "claude-9" in messages_error.value.body["error"]["message"]
        assert gw.openai_mock.requests_snapshot() == [] and gw.anthropic_mock.requests_snapshot() == []
        # an unknown model is not read when a route decides (clients send placeholders): the route's model
        # answers; the decision endpoint reports the route, or the default model where no route fits
        routed = oai(gw).chat.completions.with_raw_response.create(model="auto", messages=user(CODE))
        assert routed.headers["x-plano-source"] == "router" and routed.headers["x-plano-model"] == code_decision(gw)[0]
        gw.openai_mock.reset()
        gw.anthropic_mock.reset()
        status, _, decision = post(gw, "/routing/v1/chat/completions", {"model": "mistral/large", "messages": user(CODE)})
        assert status == 200 and decision["route"] == "code_generation" and decision["models"] == code_decision(gw)
        status, _, decision = post(gw, "/routing/v1/chat/completions", {"model": "mistral/large", "messages": user(FRANCE)})
        assert status == 200 and decision["route"] is None and decision["models"] == ["openai/gpt-4o-mini"] and decision["source"] == "default"
        # what the shared route_eval.py sends: a placeholder model, one pseudo-model per inline route
        inline = [{"name": "coding", "description": "writing code", "models": ["model-coding"]},
                  {"name": "travel", "description": "booking flights and hotels", "models": ["model-travel"]}]
        status, _, decision = post(gw, "/routing/v1/chat/completions", {"model": "default-model", "messages": user(CODE), "routing_preferences": inline})
        assert status == 200 and decision["route"] == "coding" and decision["models"] == ["model-coding"], decision
        # no model at all: routed, and the default when no route matches
        status, _, decision = post(gw, "/routing/v1/chat/completions", {"messages": user(FRANCE)})
        assert status == 200 and decision["models"] == ["openai/gpt-4o-mini"] and decision["source"] == "default"
        assert gw.openai_mock.requests_snapshot() == [] and gw.anthropic_mock.requests_snapshot() == []
    finally:
        gw.close()


# ================================================================== listener retries


def test_listener_max_retries_caps_the_fall_overs():
    data = yaml.safe_load(DEMO_CONFIG.read_text())
    data["listeners"][0]["max_retries"] = 0
    gw = RunningGateway(yaml.safe_dump(data))
    try:
        gw.anthropic_mock.fail_next(status=429)
        status, headers, _ = post(gw, "/v1/chat/completions", {"messages": user(CODE)})
        assert status == 429 and headers.get("x-plano-attempts") == "1"
        assert gw.openai_mock.requests_snapshot() == []  # no fall-over to gpt-4o
    finally:
        gw.close()


# ================================================================== providers: Azure, passthrough


class OwnProviders:
    """A gateway whose providers point at mocks by the config's own base_url (no --mock-providers
    rewriting, so the provider's own paths and auth are what the mock sees)."""

    def __init__(self, config_for: Callable[[str, str], str]) -> None:
        self.openai, self.anthropic = MockProvider("own-openai"), MockProvider("own-anthropic")
        self.openai.start(0)
        self.anthropic.start(0)
        text = config_for(f"http://127.0.0.1:{self.openai.port}", f"http://127.0.0.1:{self.anthropic.port}")
        self.gw = RunningGateway.__new__(RunningGateway)
        self.gw.loop = asyncio.new_event_loop()
        self.gw.thread = threading.Thread(target=self.gw.loop.run_forever, daemon=True)
        self.gw.thread.start()
        self.gw.gateway = LocalGateway(text, env={"AZURE_KEY": "azure-key"}, mock_providers=False, listener_port=free_port())
        asyncio.run_coroutine_threadsafe(self.gw.gateway.start(), self.gw.loop).result(120)

    def close(self) -> None:
        self.gw.close()
        self.openai.stop()
        self.anthropic.stop()


def test_azure_calls_carry_an_api_version_and_passthrough_keys_fit_each_provider():
    def config_for(openai_url: str, anthropic_url: str) -> str:
        return f"""
version: v0.4.0
model_providers:
  - model: azure_openai/my-gpt4o
    base_url: {openai_url}
    access_key: $AZURE_KEY
    default: true
  - model: openai/gpt-4o-proxy
    base_url: {openai_url}/v1
    passthrough_auth: true
  - model: anthropic/claude-sonnet-4-20250514
    base_url: {anthropic_url}
    passthrough_auth: true
"""

    own = OwnProviders(config_for)
    try:
        client = openai.OpenAI(base_url=own.gw.url + "/v1", api_key="unused", max_retries=0)
        client.chat.completions.create(model="my-gpt4o", messages=user(FRANCE))
        (azure,) = own.openai.requests_snapshot()
        assert azure["path"] == "/openai/deployments/my-gpt4o/chat/completions?api-version=2025-01-01-preview"
        assert azure["headers"]["api-key"] == "azure-key" and "authorization" not in azure["headers"]
        own.openai.reset()
        # an Anthropic SDK client (x-api-key) reaching an OpenAI-style passthrough provider: Bearer
        anthropic.Anthropic(base_url=own.gw.url, api_key="sk-client-1", max_retries=0).messages.create(
            model="gpt-4o-proxy", max_tokens=16, messages=user(FRANCE)
        )
        (proxied,) = own.openai.requests_snapshot()
        assert proxied["headers"]["authorization"] == "Bearer sk-client-1" and "x-api-key" not in proxied["headers"]
        # an OpenAI SDK client (Bearer) reaching Anthropic: x-api-key, and anthropic-version kept
        openai.OpenAI(base_url=own.gw.url + "/v1", api_key="sk-client-2", max_retries=0).chat.completions.create(
            model="claude-sonnet-4-20250514", messages=user(FRANCE)
        )
        (native,) = own.anthropic.requests_snapshot()
        assert native["headers"]["x-api-key"] == "sk-client-2" and native["headers"]["anthropic-version"] == "2023-06-01"
        assert "authorization" not in native["headers"]
    finally:
        own.close()


# ================================================================== plano's tracing block


class GrpcCollector:
    """A minimal OTLP/gRPC trace receiver: what plano's opentracing_grpc_endpoint points at."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        self.spans: list[tuple[str, Any]] = []  # (service.name, span)
        collector = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                for resource in request.resource_spans:
                    service = next((a.value.string_value for a in resource.resource.attributes if a.key == "service.name"), "")
                    for scope in resource.scope_spans:
                        collector.spans.extend((service, s) for s in scope.spans)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    def find(self, predicate: Callable[[str, Any], bool]) -> list[tuple[str, Any]]:
        return [(svc, span) for svc, span in self.spans if predicate(svc, span)]


def test_plano_tracing_block_exports_both_envoys_and_the_ext_procs_spans_over_grpc():
    collector = GrpcCollector()
    tracing = {
        "random_sampling": 100,
        "trace_arch_internal": False,
        "opentracing_grpc_endpoint": f"http://127.0.0.1:{collector.port}",
        "span_attributes": {"header_prefixes": ["x-user-"], "static": {"environment": "test"}},
    }
    gw = RunningGateway(demo_with(tracing=tracing))
    trace = "5bf92f3577b34da6a3ce929d0e0e4737"
    try:
        headers = {"traceparent": f"00-{trace}-00f067aa0ba902b7-01", "x-user-id": "u-42"}
        status, _, _ = post(gw, "/v1/chat/completions", {"messages": user(CODE)}, headers)
        assert status == 200
        ours = until(lambda: collector.find(lambda svc, s: s.name == "plano.route" and s.trace_id.hex() == trace))
        attributes = {a.key: a.value.string_value for a in ours[0][1].attributes}
        assert attributes["environment"] == "test" and attributes["id"] == "u-42" and attributes["plano.route"] == "code_generation"
        # Envoy's request span (its gRPC calls to the ext_proc are spans of their own, without the tags)
        envoy = until(lambda: collector.find(
            lambda svc, s: svc == "plano-envoy" and s.trace_id.hex() == trace
            and {a.key: a.value.string_value for a in s.attributes}.get("upstream_cluster", "").startswith("ranked.")
        ))
        assert {a.key: a.value.string_value for a in envoy[0][1].attributes}.get("environment") == "test"
        # trace_arch_internal: false -> no span for the router call
        assert collector.find(lambda svc, s: s.name == "plano.router") == []
    finally:
        gw.close()
        collector.server.stop(0)
