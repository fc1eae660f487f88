"""Response observation from Envoy's access logs, in-process: `StreamAccessLogsMessage` protobufs as Envoy's
gRPC access loggers send them (docs/envoy.md finding (v)) fed to the adapter, after a real decision by the
downstream processor (so the decision metadata is the one Envoy carries into the request's entry).

The gRPC side (one stream per logger, the logger named in the first message, another config's entries
ignored) runs on a real server in tests/test_processors_server.py; on the real Envoy in
tests/test_observability.py.
"""

from __future__ import annotations

import orjson
import pytest

from plano_extproc.apis import BY_NAME
from plano_extproc.config import parse_config
from plano_extproc.contract import USAGE_FIELDS
from plano_extproc.extproc.tracking import InFlightRequests
from tests.processors_kit import (
    CLAUDE,
    DEMO_CONFIG,
    ENV,
    GPT4O,
    MINI,
    Gateway,
    attempt_log_entry,
    decision_metadata,
    request_log_entry,
)


def _config(responses: str):
    return parse_config(DEMO_CONFIG.read_text() + f"\nobservability:\n  responses: {responses}\n", ENV)


async def test_a_client_gone_before_any_response_is_a_499():
    gateway = Gateway()
    flow = await gateway.proxy("openai_chat", "complex_reasoning")
    gateway.access_log.request_entry(request_log_entry(flow.metadata, 0, first_byte=None, last_byte=None, body_bytes=0))
    assert gateway.sample("plano_requests_total", endpoint="proxy", api_format="openai_chat", outcome="client_error") == 1
    # no response: the duration is the stream's, and there is no first token
    assert gateway.sample("plano_gen_ai_client_operation_duration_seconds_count", model=GPT4O) == 1
    assert gateway.sample("plano_gen_ai_time_to_first_token_seconds_count", model=GPT4O) == 0


async def test_headers_only_observation_records_no_first_token_and_no_tokens():
    gateway = Gateway(_config("headers"))
    flow = await gateway.proxy("openai_chat", "complex_reasoning")
    gateway.access_log.request_entry(request_log_entry(flow.metadata, 200, usage={"prompt_tokens": 3, "completion_tokens": 2}))
    assert gateway.sample("plano_requests_total", endpoint="proxy", api_format="openai_chat", outcome="ok") == 1
    assert gateway.sample("plano_gen_ai_client_operation_duration_seconds_count", model=GPT4O) == 1
    assert gateway.sample("plano_gen_ai_time_to_first_token_seconds_count", model=GPT4O) == 0
    assert gateway.sample("plano_tokens_total", model=GPT4O, type="input") == 0


@pytest.mark.parametrize(
    "metadata",
    [None, decision_metadata({"api": "openai_chat"}), decision_metadata({"models": "", "api": "openai_chat"})],
    ids=["no-metadata", "no-models", "empty-models"],
)
def test_an_entry_without_a_decision_records_nothing(metadata):
    """The request logger's filter lets only decided requests by; whatever else arrives is ignored."""
    gateway = Gateway()
    gateway.access_log.request_entry(request_log_entry(metadata, 200, usage={"prompt_tokens": 3}))
    assert gateway.sample("plano_requests_total", endpoint="proxy", api_format="openai_chat", outcome="ok") == 0
    assert gateway.sample("plano_upstream_attempts_count") == 0


def test_an_attempt_without_a_response_or_of_an_unknown_cluster_is_not_counted():
    gateway = Gateway()
    gateway.access_log.attempt_entry(attempt_log_entry(GPT4O, 0))  # reset, refused or timed out: no status
    unknown = attempt_log_entry(GPT4O, 429)
    unknown.common_properties.upstream_cluster = "plano_extproc"
    gateway.access_log.attempt_entry(unknown)
    gateway.access_log.attempt_entry(attempt_log_entry(GPT4O, 429))
    assert gateway.sample("plano_upstream_responses_total", model=GPT4O, provider="openai", status_class="4xx") == 1
    assert gateway.sample("plano_upstream_responses_total", model=GPT4O, provider="openai", status_class="other") == 0


async def test_the_request_entry_closes_this_processs_record():
    gateway = Gateway()
    flow = await gateway.proxy("openai_chat", "hello")  # GPT-4o mini twice: nothing translated
    assert gateway.inflight.get(flow.request_id).forward is not None
    gateway.access_log.request_entry(request_log_entry(flow.metadata, 200, request_id=flow.request_id))
    assert len(gateway.inflight) == 0 and gateway.inflight.parked == 0


async def test_a_record_the_translator_has_not_read_is_parked_for_it():
    """A request that ended without its answer passing the translator (none came) still has its record
    parked a while, bounded, as when an observer closes it."""
    gateway = Gateway()
    flow = await gateway.proxy("openai_chat", "code_generation")  # Claude: translated, the client body is kept
    assert gateway.inflight.get(flow.request_id).client_body is not None
    gateway.access_log.request_entry(request_log_entry(flow.metadata, 0, request_id=flow.request_id))
    assert len(gateway.inflight) == 0 and gateway.inflight.parked == 1
    assert gateway.inflight.claim(flow.request_id).client_body is not None


async def test_an_entry_needs_nothing_but_itself():
    """The request was decided by another process (another worker behind the same Envoy): this one has no
    record of it and records everything from the entry; the deciding process's record is not touched."""
    decider, other = Gateway(), Gateway()
    flow = await decider.proxy("openai_chat", "complex_reasoning")
    other.access_log.attempt_entry(attempt_log_entry(GPT4O, 429, flow.request_id))
    other.access_log.attempt_entry(attempt_log_entry(CLAUDE, 200, flow.request_id))
    usage = {"input_tokens": 20, "cache_creation_input_tokens": 5, "output_tokens": 4}  # Claude's answer
    other.access_log.request_entry(request_log_entry(flow.metadata, 200, 2, request_id=flow.request_id, usage=usage))
    assert other.sample("plano_requests_total", endpoint="proxy", api_format="openai_chat", outcome="ok") == 1
    assert other.sample("plano_upstream_fallovers_total", model=CLAUDE) == 1
    assert other.sample("plano_upstream_responses_total", model=GPT4O, provider="openai", status_class="4xx") == 1
    assert other.sample("plano_upstream_responses_total", model=CLAUDE, provider="anthropic", status_class="2xx") == 1
    # read as Anthropic reads its usage (the wire API of the attempt that answered): cache writes are input
    assert other.sample("plano_tokens_total", model=CLAUDE, type="input") == 25
    assert decider.inflight.get(flow.request_id) is not None  # expires by itself (tracking.py)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 3, "completion_tokens": 2}, (3, 2)),
        ({"prompt_tokens": 3.0, "completion_tokens": 2.5}, (3, 0)),  # not a count
        ({"prompt_tokens": "3", "completion_tokens": True}, (0, 0)),  # other JSON types
        ({"prompt_tokens": -1, "completion_tokens": None, "total_tokens": 99}, (0, 0)),
        ({"input_tokens": 7, "output_tokens": 1}, (0, 0)),  # another API's names: not Chat Completions usage
    ],
)
async def test_the_usage_counts_are_read_as_the_providers_api_reads_them(usage, expected):
    """json_to_metadata keeps each value's JSON type; the counts the provider API's read_usage accepts are
    whole non-negative numbers."""
    gateway = Gateway()
    flow = await gateway.proxy("openai_chat", "hello")
    gateway.access_log.request_entry(request_log_entry(flow.metadata, 200, usage=usage))
    tokens = (gateway.sample("plano_tokens_total", model=MINI, type="input"), gateway.sample("plano_tokens_total", model=MINI, type="output"))
    assert tokens == expected


ANSWERS = {
    "openai_chat": {"id": "c", "object": "chat.completion", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}},
    "anthropic_messages": {
        "id": "m",
        "type": "message",
        "content": [],
        "usage": {"input_tokens": 11, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 4, "output_tokens": 7, "service_tier": "standard"},
    },
    "openai_responses": {"id": "r", "object": "response", "output": [], "usage": {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}},
}


@pytest.mark.parametrize("api", sorted(BY_NAME))
def test_the_usage_fields_envoy_reads_are_all_the_apis_read(api):
    """Every count a provider API's read_usage takes from a JSON answer is one json_to_metadata copies."""
    answer = ANSWERS[api]
    copied = {k: v for k, v in answer["usage"].items() if k in USAGE_FIELDS}
    assert BY_NAME[api].read_usage(orjson.loads(orjson.dumps(answer))) == BY_NAME[api].read_usage({"usage": copied}) is not None


def test_records_expire_without_any_entry():
    """With no close at all (observation off, the entries went to another process) records still go."""
    now = [0.0]
    inflight = InFlightRequests(ttl_seconds=10, clock=lambda: now[0])
    inflight.open("r1", (GPT4O, CLAUDE), "openai_chat", None)
    now[0] = 11
    assert inflight.get("r1") is None and len(inflight) == 0
