"""Observability end to end: real traffic through Envoy, then the ext_proc's /metrics, parsed.

The response path is observed through Envoy's gRPC access logs (an entry per request and per attempt,
batched, docs/envoy.md finding (v)), json_to_metadata for a non-streaming answer's usage (finding (w)) and
an ext_proc observer in observability_mode for streamed answers (findings (e)-(h), (u)): the numbers
arrive asynchronously, so every check polls /metrics (bounded) until the value shows up.
"""

from __future__ import annotations

import re
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
from plano_extproc.contract import (
    ATTEMPT_LOG,
    DECIDED_KEY,
    EXTPROC_CLUSTER,
    FINGERPRINT_METADATA,
    METADATA_NAMESPACE,
    OBSERVE_ATTRIBUTES,
    OBSERVE_FILTER,
    OBSERVE_HEADER,
    REQUEST_LOG,
    ROUTING_FILTER,
    TRANSLATE_FILTER,
    UPSTREAM_FILTER,
    USAGE_FIELDS,
    USAGE_FILTER,
    USAGE_NAMESPACE,
    Processor,
    config_fingerprint,
)
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


def _access_logs(bootstrap: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the HCM's access logs, the router's upstream_log)."""
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    router = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.router")
    return hcm["access_log"], router["typed_config"].get("upstream_log", [])


def _grpc_log(logger: dict[str, Any], fingerprint: str) -> str:
    """The log name of a gRPC access logger pointed at our service with our fingerprint."""
    assert logger["name"] == "envoy.access_loggers.http_grpc"
    common = logger["typed_config"]["common_config"]
    assert common["grpc_service"]["envoy_grpc"]["cluster_name"] == EXTPROC_CLUSTER
    assert common["grpc_service"]["initial_metadata"] == [{"key": FINGERPRINT_METADATA, "value": fingerprint}]
    assert common["transport_api_version"] == "V3" and common["buffer_flush_interval"] == "1s"
    return str(common["log_name"])


def test_response_observation_is_rendered_as_access_logs_usage_reader_and_streaming_observer() -> None:
    config = load_config(DEMO_CONFIG, env={}, resolve_secrets=False)
    bootstrap = render_bootstrap(config, extproc_address="127.0.0.1:1")
    fingerprint = config_fingerprint(config)
    downstream, upstream = _filters(bootstrap)
    # routing processor, response translator, usage reader, streaming observer (both behind the translator
    # on the response path: they see the provider's answer), router
    assert [f["name"] for f in downstream] == [ROUTING_FILTER, TRANSLATE_FILTER, USAGE_FILTER, OBSERVE_FILTER, "envoy.filters.http.router"]

    usage = downstream[2]["typed_config"]["response_rules"]
    assert {r["on_present"]["key"] for r in usage["rules"]} == set(USAGE_FIELDS)
    for rule in usage["rules"]:
        assert [s["key"] for s in rule["selectors"]] == ["usage", rule["on_present"]["key"]]
        assert rule["on_present"]["metadata_namespace"] == USAGE_NAMESPACE
        assert "type" not in rule["on_present"]  # PROTOBUF_VALUE, the default: values keep their JSON type
    content_types = usage["allow_content_types_regex"]["regex"]
    for content_type in ("application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"):
        assert re.fullmatch(content_types, content_type)
    for content_type in ("text/event-stream", "text/plain", "application/jsonl"):
        assert not re.fullmatch(content_types, content_type)

    wrapped = downstream[3]["typed_config"]
    observe = wrapped["extension_config"]["typed_config"]
    assert _phase(wrapped["extension_config"]) == Processor.OBSERVE.value
    assert observe["observability_mode"] is True and observe["failure_mode_allow"] is True
    assert observe["processing_mode"]["request_header_mode"] == "SKIP"
    assert observe["processing_mode"]["response_header_mode"] == "SEND"
    assert observe["processing_mode"]["response_body_mode"] == "STREAMED"
    assert observe["response_attributes"] == list(OBSERVE_ATTRIBUTES)
    assert "metadata_options" not in observe  # would be sent with every body chunk (finding (g))
    # skipped, no gRPC stream, unless the client asked for a stream (finding (l))
    tree = wrapped["xds_matcher"]["matcher_tree"]
    assert tree["input"]["typed_config"]["header_name"] == OBSERVE_HEADER and list(tree["exact_match_map"]["map"]) == ["0"]

    access_log, upstream_log = _access_logs(bootstrap)
    assert access_log[0]["name"] == "envoy.access_loggers.stdout"
    assert [_grpc_log(a, fingerprint) for a in access_log[1:]] == [REQUEST_LOG]
    decided = access_log[1]["filter"]["metadata_filter"]
    # only requests the routing processor forwarded; without match_if_key_not_found false, any request
    assert decided["matcher"] == {"filter": METADATA_NAMESPACE, "path": [{"key": DECIDED_KEY}], "value": {"present_match": True}}
    assert decided["match_if_key_not_found"] is False
    assert [_grpc_log(a, fingerprint) for a in upstream_log] == [ATTEMPT_LOG]
    assert "filter" not in upstream_log[0]  # an attempt's entry has no dynamic metadata to filter on
    for chain in upstream:  # no per-attempt observer any more: the attempt log replaces it
        assert [f["name"] for f in chain] == [UPSTREAM_FILTER, "envoy.filters.http.header_mutation", "envoy.filters.http.upstream_codec"]
    # the config alone decides: the renderer reads no environment
    assert bootstrap == render_bootstrap(_with_responses("bodies"), extproc_address="127.0.0.1:1")


def test_response_observation_is_switchable_in_the_config() -> None:
    for mode, names, logs in (
        ("off", [], ([], [])),
        ("headers", [], ([REQUEST_LOG], [ATTEMPT_LOG])),
        ("bodies", [USAGE_FILTER, OBSERVE_FILTER], ([REQUEST_LOG], [ATTEMPT_LOG])),
    ):
        config = _with_responses(mode)
        bootstrap = render_bootstrap(config, extproc_address="127.0.0.1:1")
        downstream, _ = _filters(bootstrap)
        assert [f["name"] for f in downstream] == [ROUTING_FILTER, TRANSLATE_FILTER, *names, "envoy.filters.http.router"]
        access_log, upstream_log = _access_logs(bootstrap)
        fingerprint = config_fingerprint(config)
        assert ([_grpc_log(a, fingerprint) for a in access_log[1:]], [_grpc_log(a, fingerprint) for a in upstream_log]) == logs


# ------------------------------------------------------------------------------------------ scraping


def _samples(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def scrape(gw: RunningGateway, timeout: float = 60.0) -> Samples:
    """The ext_proc's metrics, once it has every access-log entry Envoy wrote before the call. Envoy sends
    them in batches (up to a second late); its own counter of entries written is the event waited for, so
    a request's numbers never land in a later test's delta. The timeout only bounds a failure."""
    deadline = time.monotonic() + timeout
    while True:
        envoy = _samples(f"http://127.0.0.1:{gw.gateway.stats_port}/stats/prometheus")
        written = value(envoy, "envoy_access_logs_grpc_access_log_logs_written")
        samples = _samples(f"http://127.0.0.1:{gw.gateway.metrics_port}/metrics")
        if value(samples, "plano_access_log_entries_total") >= written:
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"the ext_proc did not receive Envoy's {written:.0f} access-log entries within {timeout:.0f}s")
        time.sleep(0.05)


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def wait_for(gw: RunningGateway, check: Callable[[Samples], bool], timeout: float = 60.0) -> Samples:
    """Scrape until `check` holds. The access logs and the streaming observer report asynchronously (Envoy
    never waits for them), so this waits for the event; the timeout only bounds a failure, it is not a
    guess at how long it takes."""
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
    # the tokens come from the streaming observer, the duration from the request's access-log entry
    now = wait_for(gw, lambda s: moved(before, "plano_tokens_total", by=reported.completion_tokens, type="output", **labels)(s)
                   and moved(before, "plano_gen_ai_client_operation_duration_seconds_count", **labels)(s))
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
    now = wait_for(gw, lambda s: moved(before, "plano_tokens_total", by=final.usage.output_tokens, type="output", **labels)(s)
                   and moved(before, "plano_requests_total", endpoint="proxy", api_format="anthropic_messages")(s))
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


def _observer_streams(samples: Samples) -> float:
    """Response-headers messages the streaming observer handled: one per observer stream."""
    return value(samples, "plano_extproc_phase_duration_seconds_count", processor=Processor.OBSERVE.value, phase="response_headers")


@pytest.mark.integration
def test_only_a_streamed_request_opens_an_observer_stream(gw):
    before = scrape(gw)
    reply = oai(gw).chat.completions.create(model="gpt-4o-mini", messages=user(FRANCE))
    now = wait_for(gw, moved(before, "plano_tokens_total", by=reply.usage.completion_tokens, model=GPT4O_MINI, type="output"))
    assert _observer_streams(now) == _observer_streams(before)  # x-plano-observe: 0, the filter skipped
    assert value(now, "plano_extproc_inflight_streams", processor=Processor.OBSERVE.value) == 0
    for _ in oai(gw).chat.completions.create(model="gpt-4o-mini", messages=user(FRANCE), stream=True):
        pass
    now = wait_for(gw, lambda s: _observer_streams(s) > _observer_streams(before)
                   and moved(before, "plano_requests_total", by=2, endpoint="proxy", outcome="ok")(s))
    assert _observer_streams(now) - _observer_streams(before) == 1


@pytest.mark.integration
def test_a_streamed_429_fallover_counts_each_attempt_and_the_tokens_of_the_model_that_answered(gw):
    gw.anthropic_mock.fail_next(status=429)
    before = scrape(gw)
    usage = None
    for chunk in oai(gw).chat.completions.create(model="gpt-4o-mini", messages=user(CODE), stream=True, stream_options={"include_usage": True}):
        usage = chunk.usage or usage
    assert usage is not None
    now = wait_for(gw, lambda s: moved(before, "plano_tokens_total", by=usage.completion_tokens, model=GPT4O, type="output")(s)
                   and moved(before, "plano_upstream_fallovers_total", model=GPT4O)(s))
    assert value(now, "plano_upstream_responses_total", model=SONNET, provider="anthropic", status_class="4xx") - value(
        before, "plano_upstream_responses_total", model=SONNET, provider="anthropic", status_class="4xx") == 1
    assert value(now, "plano_upstream_responses_total", model=GPT4O, provider="openai", status_class="2xx") - value(
        before, "plano_upstream_responses_total", model=GPT4O, provider="openai", status_class="2xx") == 1
    assert value(now, "plano_upstream_attempts_bucket", le="2.0") - value(before, "plano_upstream_attempts_bucket", le="2.0") == 1
    assert value(now, "plano_upstream_attempts_bucket", le="1.0") == value(before, "plano_upstream_attempts_bucket", le="1.0")
    assert value(now, "plano_tokens_total", model=GPT4O, type="input") - value(before, "plano_tokens_total", model=GPT4O, type="input") == usage.prompt_tokens
    assert value(now, "plano_gen_ai_time_to_first_token_seconds_count", model=GPT4O) - value(
        before, "plano_gen_ai_time_to_first_token_seconds_count", model=GPT4O) == 1
    assert value(now, "plano_tokens_total", model=SONNET) == value(before, "plano_tokens_total", model=SONNET)


@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_compressed_answers_are_counted(gw, stream):
    """Providers gzip when the client asks (every SDK does): a non-streaming answer is asked for
    uncompressed (json_to_metadata reads it, docs/envoy.md finding (w)), a streamed one is decoded by the
    observer."""
    gw.openai_mock.gzip = True
    try:
        before = scrape(gw)
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=30, default_headers={"accept-encoding": "gzip"})
        if stream:
            usage = None
            for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=user(FRANCE), stream=True, stream_options={"include_usage": True}):
                usage = chunk.usage or usage
        else:
            usage = client.chat.completions.create(model="gpt-4o-mini", messages=user(FRANCE)).usage
        assert usage is not None
        asked = gw.openai_mock.requests_snapshot()[-1]["headers"]["accept-encoding"]
        assert asked == ("gzip" if stream else "identity")
        now = wait_for(gw, moved(before, "plano_tokens_total", by=usage.completion_tokens, model=GPT4O_MINI, type="output"))
        assert value(now, "plano_tokens_total", model=GPT4O_MINI, type="input") - value(before, "plano_tokens_total", model=GPT4O_MINI, type="input") == usage.prompt_tokens
        assert value(now, "plano_tokens_total", model=GPT4O_MINI, type="output") - value(before, "plano_tokens_total", model=GPT4O_MINI, type="output") == usage.completion_tokens
    finally:
        gw.openai_mock.gzip = False


@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_translated_answer_is_counted_in_the_providers_own_numbers(gw, stream):
    """An Anthropic client on GPT-4o mini: the usage is read from the provider's Chat Completions answer,
    before the translator turns it into the client's API."""
    before = scrape(gw)
    if stream:
        with claude(gw).messages.stream(model="gpt-4o-mini", max_tokens=50, messages=user(FRANCE)) as events:
            final = events.get_final_message()
    else:
        final = claude(gw).messages.create(model="gpt-4o-mini", max_tokens=50, messages=user(FRANCE))
    provider = gw.openai_mock.requests_snapshot()[-1]
    assert provider["path"] == "/v1/chat/completions"
    labels = {"model": GPT4O_MINI}
    now = wait_for(gw, lambda s: moved(before, "plano_tokens_total", by=final.usage.output_tokens, type="output", **labels)(s)
                   and moved(before, "plano_requests_total", endpoint="proxy", api_format="anthropic_messages", outcome="ok")(s))
    assert value(now, "plano_tokens_total", type="input", **labels) - value(before, "plano_tokens_total", type="input", **labels) == final.usage.input_tokens
    assert value(now, "plano_tokens_total", type="output", **labels) - value(before, "plano_tokens_total", type="output", **labels) == final.usage.output_tokens
    assert value(now, "plano_gen_ai_time_to_first_token_seconds_count", **labels) - value(before, "plano_gen_ai_time_to_first_token_seconds_count", **labels) == 1


@pytest.mark.integration
def test_headers_only_observation_counts_outcomes_attempts_and_fallovers_but_no_tokens():
    running = RunningGateway(DEMO_CONFIG.read_text() + "\nobservability:\n  responses: headers\n")
    try:
        running.anthropic_mock.fail_next(status=429)
        before = scrape(running)
        reply = oai(running).chat.completions.create(model="gpt-4o-mini", messages=user(CODE))
        assert reply.choices[0].message.content == "mock-openai answered as gpt-4o"
        for _ in oai(running).chat.completions.create(model="gpt-4o-mini", messages=user(FRANCE), stream=True):
            pass
        now = wait_for(running, lambda s: moved(before, "plano_requests_total", by=2, endpoint="proxy", outcome="ok")(s)
                       and moved(before, "plano_upstream_responses_total", by=3)(s))
        assert value(now, "plano_upstream_fallovers_total", model=GPT4O) - value(before, "plano_upstream_fallovers_total", model=GPT4O) == 1
        assert value(now, "plano_upstream_responses_total", model=SONNET, status_class="4xx") - value(before, "plano_upstream_responses_total", model=SONNET, status_class="4xx") == 1
        assert value(now, "plano_gen_ai_client_operation_duration_seconds_count") - value(before, "plano_gen_ai_client_operation_duration_seconds_count") == 2
        assert value(now, "plano_tokens_total") == value(now, "plano_gen_ai_time_to_first_token_seconds_count") == 0
        assert _observer_streams(now) == 0
        # Envoy reads no body here: the client's accept-encoding reaches a native provider as it was
        flat = oai(running).chat.completions.create(model="gpt-4o-mini", messages=user(FRANCE))
        assert flat.choices[0].message.content == "mock-openai answered as gpt-4o-mini"
        assert "gzip" in running.openai_mock.requests_snapshot()[-1]["headers"]["accept-encoding"]
    finally:
        running.close()


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
        "routing", "proxy", "ok", "client_error", "server_error", "requests", "attempts", "router", "affinity", "alias", "direct", "default", "fallback",
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
