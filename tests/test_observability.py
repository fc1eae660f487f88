"""Observability end to end: real traffic through Envoy, then the ext_proc's /metrics, parsed.

The response path is observed by ext_proc filters in observability_mode (docs/envoy.md findings (e)-(j)):
the numbers arrive asynchronously, so every check polls /metrics (bounded) until the value shows up.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from plano_extproc.bootstrap import render_bootstrap
from plano_extproc.config import load_config, parse_config
from plano_extproc.contract import OBSERVE_ATTRIBUTES, OBSERVE_FILTER, Processor
from tests.conftest import DEMO_CONFIG
from tests.harness import CLAUDE, CODE, FRANCE, RunningGateway, SilentServer, claude, hung_router_config, oai, post, user

GPT4O = "openai/gpt-4o"
GPT4O_MINI = "openai/gpt-4o-mini"
SONNET = f"anthropic/{CLAUDE}"
SESSION = "session-secret-1f2e3d"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ---------------------------------------------------------------------------------------- rendering


def _filters(bootstrap: dict[str, Any]) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    upstream = [
        c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"]
        for c in bootstrap["static_resources"]["clusters"]
        if c["name"].startswith("ranked.")
    ]
    return hcm["http_filters"], upstream


def _phase(f: dict[str, Any]) -> str:
    return f["typed_config"]["grpc_service"]["initial_metadata"][0]["value"]


def _with_responses(mode: str):
    return parse_config(DEMO_CONFIG.read_text() + f"\nobservability:\n  responses: {mode}\n", {}, resolve_secrets=False)


def test_observers_are_rendered_in_observability_mode() -> None:
    config = load_config(DEMO_CONFIG, env={}, resolve_secrets=False)
    downstream, upstream = _filters(render_bootstrap(config, extproc_address="127.0.0.1:1"))
    # routing processor, response translator (behind its matcher), observer, router
    downstream = [f for f in downstream if f["name"] != "plano.translate"]
    assert [_phase(f) for f in downstream[:2]] == ["downstream", Processor.OBSERVE.value]
    observe = downstream[1]["typed_config"]
    assert downstream[1]["name"] == OBSERVE_FILTER
    assert observe["observability_mode"] is True and observe["failure_mode_allow"] is True
    assert observe["processing_mode"]["request_header_mode"] == "SKIP"
    assert observe["processing_mode"]["response_header_mode"] == "SEND"
    assert observe["processing_mode"]["response_body_mode"] == "STREAMED"
    assert observe["response_attributes"] == list(OBSERVE_ATTRIBUTES)
    assert "metadata_options" not in observe  # would be sent with every body chunk (finding (g))
    for chain in upstream:
        # both upstream processors sit behind a matcher (attempt count / response status)
        inner = [f["typed_config"]["extension_config"] for f in chain if "extension_config" in f["typed_config"]]
        assert [_phase(f) for f in inner] == ["upstream", Processor.UPSTREAM_OBSERVE.value]
        wrapped = chain[1]["typed_config"]
        attempt = wrapped["extension_config"]["typed_config"]
        assert attempt["observability_mode"] is True and _phase(wrapped["extension_config"]) == Processor.UPSTREAM_OBSERVE.value
        assert "response_body_mode" not in attempt["processing_mode"]  # NONE, the default
        # 2xx attempts skip the filter: no stream for a successful attempt (finding (j))
        assert list(wrapped["xds_matcher"]["matcher_tree"]["prefix_match_map"]["map"]) == ["2"]
        assert chain[-1]["name"] == "envoy.filters.http.upstream_codec"

    headers_only, _ = _filters(render_bootstrap(_with_responses("headers"), extproc_address="127.0.0.1:1"))
    assert "response_body_mode" not in headers_only[2]["typed_config"]["processing_mode"]  # NONE
    off_down, off_up = _filters(render_bootstrap(_with_responses("off"), extproc_address="127.0.0.1:1"))
    assert [f["name"] for f in off_down] == ["plano.routing", "plano.translate", "envoy.filters.http.router"]
    assert all(len(chain) == 3 for chain in off_up)
    # the config alone decides: the renderer reads no environment
    assert render_bootstrap(config, extproc_address="127.0.0.1:1") == render_bootstrap(_with_responses("bodies"), extproc_address="127.0.0.1:1")


# ------------------------------------------------------------------------------------------ scraping


def scrape(gw: RunningGateway) -> Samples:
    url = f"http://127.0.0.1:{gw.gateway.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def wait_for(gw: RunningGateway, check: Callable[[Samples], bool], timeout: float = 60.0) -> Samples:
    """Scrape until `check` holds. The observers report asynchronously (Envoy never waits for them), so
    this waits for the event; the timeout only bounds a failure, it is not a guess at how long it takes."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(gw)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"the metrics did not move within {timeout:.0f}s")
        time.sleep(0.05)


def moved(before: Samples, name: str, by: float = 1, **labels: str) -> Callable[[Samples], bool]:
    return lambda now: value(now, name, **labels) - value(before, name, **labels) >= by


# ------------------------------------------------------------------------------------------- traffic




@pytest.mark.integration
def test_routing_decision_is_counted(gw):
    before = scrape(gw)
    status, _, d = post(gw, "/routing/v1/chat/completions", {"messages": user(CODE)}, {"x-model-affinity": SESSION})
    assert status == 200 and d["route"] == "code_generation"
    now = wait_for(gw, moved(before, "plano_decisions_total", route="code_generation", model=SONNET, source="router"))
    assert value(now, "plano_requests_total", endpoint="routing", api_format="openai_chat", outcome="ok") - value(
        before, "plano_requests_total", endpoint="routing", api_format="openai_chat", outcome="ok") == 1
    assert value(now, "plano_decisions_total", route="code_generation", model=SONNET, source="router") - value(
        before, "plano_decisions_total", route="code_generation", model=SONNET, source="router") == 1
    assert value(now, "plano_router_duration_seconds_count") > value(before, "plano_router_duration_seconds_count")
    # the routing endpoint is answered by the routing processor: no proxy request, no observer stream
    assert value(now, "plano_requests_total", endpoint="proxy") == value(before, "plano_requests_total", endpoint="proxy")


@pytest.mark.integration
def test_proxied_non_streamed_call_records_outcome_tokens_and_timing(gw):
    before = scrape(gw)
    reply = oai(gw).chat.completions.create(model="gpt-4o-mini", messages=user(FRANCE))
    assert reply.usage is not None
    labels = {"model": GPT4O_MINI}
    # token usage is the last thing the observer records for a request (then it closes the record)
    now = wait_for(gw, moved(before, "plano_tokens_total", by=reply.usage.completion_tokens, type="output", **labels))
    assert value(now, "plano_requests_total", endpoint="proxy", api_format="openai_chat", outcome="ok") - value(
        before, "plano_requests_total", endpoint="proxy", api_format="openai_chat", outcome="ok") == 1
    assert value(now, "plano_tokens_total", type="input", **labels) - value(before, "plano_tokens_total", type="input", **labels) == reply.usage.prompt_tokens
    assert value(now, "plano_tokens_total", type="output", **labels) - value(before, "plano_tokens_total", type="output", **labels) == reply.usage.completion_tokens
    assert value(now, "plano_gen_ai_client_token_usage_tokens_count", type="output", **labels) - value(
        before, "plano_gen_ai_client_token_usage_tokens_count", type="output", **labels) == 1
    assert value(now, "plano_gen_ai_time_to_first_token_seconds_count", **labels) - value(
        before, "plano_gen_ai_time_to_first_token_seconds_count", **labels) == 1
    assert value(now, "plano_upstream_responses_total", model=GPT4O_MINI, provider="openai", status_class="2xx") - value(
        before, "plano_upstream_responses_total", model=GPT4O_MINI, provider="openai", status_class="2xx") == 1
    # one attempt: the attempts histogram's le=1 bucket moved, no fall-over
    assert value(now, "plano_upstream_attempts_bucket", le="1.0") - value(before, "plano_upstream_attempts_bucket", le="1.0") == 1
    assert len(gw.gateway.server.inflight) == 0  # the observer closed the request's record


@pytest.mark.integration
def test_streamed_openai_tokens_equal_what_the_provider_reported(gw):
    gw.openai_mock.chunk_delay = 0.05
    before = scrape(gw)
    reported = None
    started, arrivals = time.monotonic(), []
    stream = oai(gw).chat.completions.create(
        model="gpt-4o-mini", messages=user(FRANCE), stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        arrivals.append(time.monotonic() - started)
        if chunk.usage is not None:
            reported = chunk.usage
    assert reported is not None and reported.completion_tokens > 0
    labels = {"model": GPT4O_MINI}
    now = wait_for(gw, moved(before, "plano_tokens_total", by=reported.completion_tokens, type="output", **labels))
    assert value(now, "plano_tokens_total", type="input", **labels) - value(before, "plano_tokens_total", type="input", **labels) == reported.prompt_tokens
    assert value(now, "plano_tokens_total", type="output", **labels) - value(before, "plano_tokens_total", type="output", **labels) == reported.completion_tokens
    # time to first token is the first chunk, long before the end of the stream
    ttft = value(now, "plano_gen_ai_time_to_first_token_seconds_sum", **labels) - value(before, "plano_gen_ai_time_to_first_token_seconds_sum", **labels)
    total = value(now, "plano_gen_ai_client_operation_duration_seconds_sum", **labels) - value(
        before, "plano_gen_ai_client_operation_duration_seconds_sum", **labels)
    assert 0 < ttft < total and total >= 0.25
    # the stream still streamed: observation does not hold chunks back
    assert arrivals[-1] - arrivals[0] > 0.2


@pytest.mark.integration
def test_anthropic_stream_tokens(gw):
    before = scrape(gw)
    with claude(gw).messages.stream(model=CLAUDE, max_tokens=50, messages=user(CODE)) as stream:
        final = stream.get_final_message()
    labels = {"model": SONNET}
    now = wait_for(gw, moved(before, "plano_tokens_total", by=final.usage.output_tokens, type="output", **labels))
    assert value(now, "plano_tokens_total", type="input", **labels) - value(before, "plano_tokens_total", type="input", **labels) == final.usage.input_tokens
    assert value(now, "plano_tokens_total", type="output", **labels) - value(before, "plano_tokens_total", type="output", **labels) == final.usage.output_tokens
    assert value(now, "plano_requests_total", endpoint="proxy", api_format="anthropic_messages", outcome="ok") - value(
        before, "plano_requests_total", endpoint="proxy", api_format="anthropic_messages", outcome="ok") == 1


@pytest.mark.integration
def test_429_fallback_counts_each_attempt_and_the_fallover(gw):
    gw.anthropic_mock.fail_next(status=429)
    before = scrape(gw)
    reply = oai(gw).chat.completions.create(model="gpt-4o-mini", messages=user(CODE))
    assert reply.choices[0].message.content == "mock-openai answered as gpt-4o"
    now = wait_for(gw, lambda s: moved(before, "plano_tokens_total", by=reply.usage.completion_tokens, model=GPT4O, type="output")(s)
                   and moved(before, "plano_upstream_responses_total", model=SONNET, status_class="4xx")(s))
    assert value(now, "plano_upstream_responses_total", model=SONNET, provider="anthropic", status_class="4xx") - value(
        before, "plano_upstream_responses_total", model=SONNET, provider="anthropic", status_class="4xx") == 1
    assert value(now, "plano_upstream_responses_total", model=GPT4O, provider="openai", status_class="2xx") - value(
        before, "plano_upstream_responses_total", model=GPT4O, provider="openai", status_class="2xx") == 1
    assert value(now, "plano_upstream_fallovers_total", model=GPT4O) - value(before, "plano_upstream_fallovers_total", model=GPT4O) == 1
    assert value(now, "plano_upstream_attempts_bucket", le="1.0") == value(before, "plano_upstream_attempts_bucket", le="1.0")
    assert value(now, "plano_upstream_attempts_bucket", le="2.0") - value(before, "plano_upstream_attempts_bucket", le="2.0") == 1
    # tokens go to the model that answered
    assert value(now, "plano_tokens_total", model=GPT4O, type="output") - value(before, "plano_tokens_total", model=GPT4O, type="output") == reply.usage.completion_tokens
    assert value(now, "plano_tokens_total", model=SONNET) == value(before, "plano_tokens_total", model=SONNET)


@pytest.mark.integration
def test_every_model_failing_is_a_server_error_outcome(gw):
    gw.anthropic_mock.fail_next(status=429)
    gw.openai_mock.fail_next(status=503)
    before = scrape(gw)
    with pytest.raises(openai.InternalServerError):
        oai(gw).chat.completions.create(model="gpt-4o-mini", messages=user(CODE))
    # two observers report this: the request's (downstream) and the failed attempts' (upstream)
    now = wait_for(gw, lambda s: moved(before, "plano_requests_total", endpoint="proxy", outcome="server_error")(s)
                   and moved(before, "plano_upstream_responses_total", model=GPT4O, status_class="5xx")(s))
    assert value(now, "plano_requests_total", endpoint="proxy", outcome="server_error") - value(
        before, "plano_requests_total", endpoint="proxy", outcome="server_error") == 1
    assert value(now, "plano_upstream_responses_total", model=GPT4O, status_class="5xx") - value(
        before, "plano_upstream_responses_total", model=GPT4O, status_class="5xx") == 1


@pytest.mark.integration
def test_no_label_value_is_unbounded(gw):
    # traffic that carries things that must never become labels
    post(gw, "/routing/v1/chat/completions", {"messages": user(CODE)}, {"x-session-id": SESSION})
    oai(gw).chat.completions.create(model="gpt-4o-mini", messages=user(FRANCE), extra_headers={"x-model-affinity": SESSION})
    try:
        claude(gw).messages.create(model="made-up-model-xyz", max_tokens=5, messages=user(FRANCE))
    except anthropic.APIError:
        pass
    samples = wait_for(gw, lambda s: True)
    config = load_config(DEMO_CONFIG, env={}, resolve_secrets=False)
    allowed = {
        *config.by_model, "other", "inline", "none",
        *(p.name for p in config.routing_preferences),
        *(p.provider for p in config.providers),
        "openai_chat", "anthropic_messages", "openai_responses", "unknown",
        "routing", "proxy", "ok", "client_error", "server_error",
        "router", "affinity", "alias", "direct", "default", "fallback",
        "1xx", "2xx", "3xx", "4xx", "5xx",
        "input", "output", "timeout", "error", "bad_reply", "breaker_open", "hit", "miss",
        "stored", "lost", "get", "pin", "unavailable", "bad_value",  # session pins and their store
        "applied", "restarted", "bootstrap_mismatch", "invalid", "failed",  # config reloads
        *(p.value for p in Processor),
        "request_headers", "request_body", "response_headers", "response_body", "response_trailers", "request_trailers",
    }
    bad = []
    for (name, labels), _ in samples.items():
        for key, val in labels:
            if key in ("le", "version", "backend"):
                continue
            if val not in allowed:
                bad.append((name, key, val))
    assert not bad
    text = repr(samples)
    for secret in (SESSION, FRANCE, "binary search", "mock-key", "client-own-key", "made-up-model-xyz"):
        assert secret not in text


@pytest.mark.integration
def test_router_timeout_is_a_failure_of_kind_timeout():
    hung = SilentServer()
    running = RunningGateway(hung_router_config(DEMO_CONFIG.read_text(), hung.url))
    try:
        before = scrape(running)
        status, _, d = post(running, "/routing/v1/chat/completions", {"model": "gpt-4o", "messages": user(CODE * 40)})
        assert status == 200 and d["source"] == "fallback"
        reply = oai(running).chat.completions.create(model="gpt-4o", messages=user(CODE * 41))
        assert reply.choices[0].message.content == "mock-openai answered as gpt-4o"
        now = wait_for(running, moved(before, "plano_tokens_total", by=reply.usage.completion_tokens, model=GPT4O, type="output"))
        assert value(now, "plano_router_failures_total", kind="timeout") - value(before, "plano_router_failures_total", kind="timeout") >= 1
        assert value(now, "plano_decisions_total", source="fallback", model=GPT4O) - value(before, "plano_decisions_total", source="fallback", model=GPT4O) == 2
        assert value(now, "plano_requests_total", endpoint="proxy", outcome="ok") - value(before, "plano_requests_total", endpoint="proxy", outcome="ok") == 1
        assert value(now, "plano_tokens_total", model=GPT4O, type="output") - value(before, "plano_tokens_total", model=GPT4O, type="output") == reply.usage.completion_tokens
    finally:
        running.close()
        hung.close()


def test_response_observation_is_switchable_in_the_config() -> None:
    for mode, names, body_mode in (("off", [], None), ("headers", [OBSERVE_FILTER], "NONE"), ("bodies", [OBSERVE_FILTER], "STREAMED")):
        downstream, _ = _filters(render_bootstrap(_with_responses(mode), extproc_address="127.0.0.1:1"))
        observers = [f for f in downstream if f["name"] == OBSERVE_FILTER]
        assert [f["name"] for f in observers] == names
        if body_mode:
            # NONE is the proto3 default, left out of the rendered config
            assert observers[0]["typed_config"]["processing_mode"].get("response_body_mode", "NONE") == body_mode
