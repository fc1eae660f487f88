"""The gRPC wiring of the processors: a real grpc.aio `ExtProcServer` on a Unix socket (as Envoy reaches
it with a `unix:` address), driven by the generated ext_proc client stub with the initial metadata the
rendered bootstrap sends (contract.PROCESSOR_METADATA, contract.FINGERPRINT_METADATA).

Request processors are driven in lock step, as Envoy does: one message, then its reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import orjson
import pytest
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_grpc

from plano_extproc.apis import BY_NAME
from plano_extproc.config import PlanoConfig
from plano_extproc.contract import (
    ATTEMPT_LOG,
    FINGERPRINT_METADATA,
    GRACEFUL_CLOSE_METADATA,
    PROCESSOR_METADATA,
    REQUEST_LOG,
    Processor,
    config_fingerprint,
)
from plano_extproc.extproc.server import ExtProcServer
from plano_extproc.forwarding import Forwarder
from plano_extproc.router.chain import RouterChain
from tests.processors_kit import (
    CLAUDE,
    KeywordRouter,
    Mode,
    access_log_message,
    apply_mutation,
    assert_error_shape,
    attempt_log_entry,
    body_of,
    client_body,
    client_headers,
    common_of,
    decision_metadata,
    demo_config,
    envoy_metadata,
    immediate_of,
    request_body_msg,
    request_headers_msg,
    request_log_entry,
    response_attributes,
    response_body_msg,
    response_headers_msg,
    set_headers,
)

API_NAMES = ("openai_chat", "anthropic_messages", "openai_responses")
CALL_TIMEOUT_S = 10  # a hung stream fails the test instead of hanging it; never reached when all is well


@dataclass
class Served:
    server: ExtProcServer
    stub: ext_grpc.ExternalProcessorStub
    access_log: als_pb2_grpc.AccessLogServiceStub
    fingerprint: str

    def sample(self, name: str, **labels: str) -> float:
        return self.server.metrics.registry.get_sample_value(name, labels) or 0.0

    def open(self, processor: str | None, fingerprint: str | None = "ours", graceful: bool = False) -> grpc.aio.StreamStreamCall:
        metadata = [(GRACEFUL_CLOSE_METADATA, "1")] if graceful else []
        if processor is not None:
            metadata.append((PROCESSOR_METADATA, processor))
        if fingerprint is not None:
            metadata.append((FINGERPRINT_METADATA, self.fingerprint if fingerprint == "ours" else fingerprint))
        return self.stub.Process(metadata=tuple(metadata), timeout=CALL_TIMEOUT_S)

    async def lockstep(self, processor: str | None, messages: Sequence[ext.ProcessingRequest], fingerprint: str | None = "ours") -> tuple[list[ext.ProcessingResponse], grpc.StatusCode]:
        """Send each message and read its reply, as Envoy does; stop after an immediate response."""
        call = self.open(processor, fingerprint)
        replies = []
        for message in messages:
            await call.write(message)
            reply = await call.read()
            if reply is grpc.aio.EOF:
                break
            replies.append(reply)
            if reply.WhichOneof("response") == "immediate_response":
                break
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF  # the stream ends: nothing more, nothing hung
        return replies, await call.code()

    async def access_logs(self, streams: Sequence[Sequence[als_pb2.StreamAccessLogsMessage]], fingerprint: str | None = "ours") -> bool:
        """One access-log stream per sequence of messages, as Envoy keeps one per logger: sent, then closed;
        True when each ended with the empty response."""
        metadata = () if fingerprint is None else ((FINGERPRINT_METADATA, self.fingerprint if fingerprint == "ours" else fingerprint),)
        for messages in streams:
            call = self.access_log.StreamAccessLogs(metadata=metadata, timeout=CALL_TIMEOUT_S)
            for message in messages:
                await call.write(message)
            await call.done_writing()
            if await call != als_pb2.StreamAccessLogsResponse():
                return False
        return True

    async def observe(self, processor: str, messages: Sequence[ext.ProcessingRequest], fingerprint: str | None = "ours") -> tuple[list[ext.ProcessingResponse], grpc.StatusCode]:
        """Observers: Envoy sends and never waits for a reply."""
        call = self.open(processor, fingerprint)
        for message in messages:
            await call.write(message)
        await call.done_writing()
        replies = [r async for r in call]
        return replies, await call.code()


@contextlib.asynccontextmanager
async def serving(config: PlanoConfig, socket_name: str = "extproc.sock", **server: Any) -> AsyncIterator[Served]:
    """An ExtProcServer on a Unix socket of its own, its router a KeywordRouter (the embedded model's
    scores are not under test; every later config generation keeps it), and a channel to it."""
    directory = tempfile.mkdtemp(prefix="plano-", dir="/tmp")  # short: Unix socket paths are limited to ~107 bytes
    address = f"unix:{directory}/{socket_name}"
    # lockstep plays an Envoy that half-closes and waits for the status: the production wait for a reset
    # (CANCELLED_STREAM_GRACE_S) would only make every stream here that much slower
    extproc = ExtProcServer(config, address, **{"reset_grace_s": 0.01, **server})
    extproc.engine.router = RouterChain(KeywordRouter(), 5.0)
    await extproc.start()
    channel = grpc.aio.insecure_channel(address)
    try:
        yield Served(extproc, ext_grpc.ExternalProcessorStub(channel), als_pb2_grpc.AccessLogServiceStub(channel), config_fingerprint(config))
    finally:
        await channel.close()
        await extproc.stop(0)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serving(demo_config()) as s:
        yield s


def decision_request(api: str = "openai_chat", text: str = "code_generation: a trie", routing: bool = True) -> list[ext.ProcessingRequest]:
    raw = client_body(api, text)
    path = ("/routing" if routing else "") + BY_NAME[api].path
    return [request_headers_msg(client_headers(path, raw, "req-s1")), request_body_msg(raw)]


async def test_a_stream_waiting_for_envoys_reset_ends_when_the_server_stops():
    # a finished stream waits for Envoy to reset it (grpc/grpc#43360, docs/envoy.md (z)); stopping the
    # server must not wait that out (an hour here), and the stream still ends with its status
    async with serving(demo_config(), reset_grace_s=3600) as served:
        call = served.open("downstream")
        for message in decision_request():
            await call.write(message)
        await call.done_writing()
        replies = [await call.read(), await call.read()]
        assert immediate_of(replies[1]).status == 200
        stopping = asyncio.create_task(served.server.stop(60))
        assert await asyncio.wait_for(call.code(), 20) == grpc.StatusCode.OK
        await stopping


async def test_an_immediate_answer_on_a_gracefully_closed_stream_ends_it_at_once():
    # a bootstrap with Envoy's graceful close (GRACEFUL_CLOSE_METADATA) half-closes the stream after an
    # immediate response and waits for the status, at most 1 s before it resets the stream: waiting for a
    # reset that never comes (the hour here) held every decision's stream open that long (docs/envoy.md (ac))
    async with serving(demo_config(), reset_grace_s=3600) as served:
        call = served.open("downstream", graceful=True)
        for message in decision_request():
            await call.write(message)
        await call.done_writing()
        replies = [await call.read(), await call.read()]
        assert immediate_of(replies[1]).status == 200
        assert await asyncio.wait_for(call.code(), 20) == grpc.StatusCode.OK
        assert served.server.processor.streams == 0


async def test_a_stream_whose_last_answer_lets_the_request_go_on_ends_with_it():
    # a proxied request's body answer is the routing processor's last: the stream ends with its status
    # then, while Envoy still holds it open. Waiting for a reset here made Envoy reset one stream per
    # request at the request's end, and under overload the server closed new streams CANCELLED (clients
    # got 500s, docs/envoy.md (aa)); only an immediate response still waits for Envoy's reset (z)
    async with serving(demo_config(), reset_grace_s=3600) as served:
        call = served.open("downstream")
        for message in decision_request(routing=False):
            await call.write(message)
        replies = [await call.read(), await call.read()]
        assert replies[1].WhichOneof("response") == "request_body"  # the request goes on upstream
        assert await asyncio.wait_for(call.code(), 20) == grpc.StatusCode.OK
        await call.done_writing()


@pytest.mark.parametrize("processor", ["downstream", None], ids=["named", "unnamed-is-downstream"])
@pytest.mark.parametrize("fingerprint", ["ours", None], ids=["fingerprint", "no-fingerprint"])
async def test_a_stream_is_served_by_the_processor_it_names(served, processor, fingerprint):
    replies, code = await served.lockstep(processor, decision_request(), fingerprint)
    assert code == grpc.StatusCode.OK and len(replies) == 2
    assert common_of(replies[0]) == ext.CommonResponse()
    answer = immediate_of(replies[1])
    assert answer.status == 200 and answer.body["route"] == "code_generation"
    assert served.sample("plano_config_mismatch_total") == 0


def first_message(processor: str, api: str) -> ext.ProcessingRequest:
    """The first message of a stream of `processor` for a request of client API `api`."""
    metadata = decision_metadata({"models": "openai/gpt-4o,openai/gpt-4o", "api": api, "route": ""})
    if processor == "downstream":
        return decision_request(api, routing=False)[0]
    if processor == "upstream":  # the decision metadata is forwarded to it; the path may be a provider's already
        headers = {**client_headers("/v1/chat/completions", b"{}", "req-s1"), "x-envoy-attempt-count": "2"}
        return request_headers_msg(headers, metadata=metadata)
    return response_headers_msg(200, {"content-type": "application/json"}, attributes=response_attributes("req-s1", 1), metadata=metadata)


@pytest.mark.parametrize("api", API_NAMES)
@pytest.mark.parametrize("processor", ["downstream", "upstream", "translate"])
async def test_a_stream_from_a_bootstrap_of_another_config_is_refused_with_503(served, processor, api):
    first = first_message(processor, api)
    replies, code = await served.lockstep(processor, [first], fingerprint="0123456789abcdef")
    assert code == grpc.StatusCode.OK
    (reply,) = replies
    answer = immediate_of(reply)
    assert answer.status == 503
    assert_error_shape(api, answer.body, "Envoy runs a bootstrap rendered from another config")
    assert served.sample("plano_config_mismatch_total") == 1
    await served.lockstep(processor, [first], fingerprint="0123456789abcdef")
    assert served.sample("plano_config_mismatch_total") == 2  # counted per refused stream


async def test_an_observer_of_another_config_is_counted_and_answers_nothing(served):
    replies, code = await served.observe("observe", [response_headers_msg(200, attributes=response_attributes("req-x", 1))], fingerprint="0123456789abcdef")
    assert (replies, code) == ([], grpc.StatusCode.OK)
    assert served.sample("plano_config_mismatch_total") == 1


async def test_an_unknown_processor_name_is_invalid_argument(served):
    call = served.open("sideways")
    with pytest.raises(grpc.aio.AioRpcError) as raised:  # refused on the call's metadata: the write may fail already
        await call.write(decision_request()[0])
        await call.read()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert PROCESSOR_METADATA in raised.value.details()


@pytest.mark.parametrize("api", API_NAMES)
async def test_an_exception_in_the_downstream_processor_is_a_clean_500_and_the_server_goes_on(served, monkeypatch, api):
    real_route = served.server.engine.route
    calls = []

    async def route_once_broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return await real_route(*args, **kwargs)

    monkeypatch.setattr(served.server.engine, "route", route_once_broken)
    replies, code = await served.lockstep("downstream", decision_request(api))
    assert code == grpc.StatusCode.OK
    answer = immediate_of(replies[-1])
    assert answer.status == 500
    assert_error_shape(api, answer.body, "internal error in the routing step")
    assert "a bug" not in orjson.dumps(answer.body).decode()  # no traceback or detail to the client
    replies, code = await served.lockstep("downstream", decision_request())
    assert immediate_of(replies[-1]).status == 200
    assert served.sample("plano_extproc_inflight_streams", processor="downstream") == 0


async def test_an_exception_in_the_per_attempt_processor_is_a_clean_500(served, monkeypatch):
    raw = client_body("openai_chat", "complex_reasoning: trains")
    replies, _ = await served.lockstep("downstream", [request_headers_msg(client_headers("/v1/chat/completions", raw, "req-u1")), request_body_msg(raw)])
    metadata = envoy_metadata(replies[1])

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Forwarder, "prepare", broken)
    headers = {**client_headers("/v1/chat/completions", raw, "req-u1"), "x-envoy-attempt-count": "2"}
    replies, code = await served.lockstep("upstream", [request_headers_msg(headers, metadata=metadata)])
    assert code == grpc.StatusCode.OK
    answer = immediate_of(replies[0])
    assert answer.status == 500
    assert_error_shape("openai_chat", answer.body, "internal error in the routing step")


async def test_an_exception_in_the_translator_is_a_500_in_the_clients_shape(served, monkeypatch):
    from plano_extproc.extproc.translate import TranslateExchange

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(TranslateExchange, "on_body", broken)
    first = first_message("translate", "anthropic_messages")
    metadata = decision_metadata({"models": ",".join((CLAUDE, "openai/gpt-4o")), "api": "openai_chat", "route": ""})
    first.metadata_context.CopyFrom(metadata)  # attempt 1 is Claude for a Chat client: translated
    replies, code = await served.lockstep("translate", [first, response_body_msg(b"{}", end_of_stream=True)])
    assert code == grpc.StatusCode.OK and replies[0].mode_override.response_body_mode == Mode.BUFFERED
    answer = immediate_of(replies[1])
    assert answer.status == 500
    assert_error_shape("openai_chat", answer.body, "internal error")


async def test_one_request_through_every_processor_shares_one_record(served):
    """Downstream, a failed attempt 1, attempt 2 translated, its answer translated, then the access logs:
    separate gRPC streams that meet only in the server's in-flight record and Envoy's metadata."""
    raw = client_body("openai_chat", "complex_reasoning: trains")
    headers = client_headers("/v1/chat/completions", raw, "req-c1")
    replies, _ = await served.lockstep("downstream", [request_headers_msg(headers), request_body_msg(raw)])
    down = replies[1]
    apply_mutation(headers, common_of(down).header_mutation)
    metadata = envoy_metadata(down)
    assert set_headers(down)[":authority"] == "api.openai.com"

    # attempt 1 (GPT-4o) answers 429; attempt 2 goes to Claude, translated
    replies, _ = await served.lockstep("upstream", [request_headers_msg({**headers, "x-envoy-attempt-count": "2"}, metadata=metadata)])
    attempt = replies[0]
    assert common_of(attempt).status == ext.CommonResponse.CONTINUE_AND_REPLACE
    assert set_headers(attempt)["x-api-key"] == "sk-ant-test" and "authorization" in list(common_of(attempt).header_mutation.remove_headers)

    answer = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": [{"type": "text", "text": "At 7pm."}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 20, "output_tokens": 4},
    }
    provider_headers = {"content-type": "application/json"}
    replies, _ = await served.lockstep(
        "translate",
        [
            response_headers_msg(200, provider_headers, attributes=response_attributes("req-c1", 2), metadata=metadata),
            response_body_msg(orjson.dumps(answer), end_of_stream=True),
        ],
    )
    client = orjson.loads(body_of(replies[1]))
    assert client["object"] == "chat.completion" and client["choices"][0]["message"]["content"] == "At 7pm."

    # the router's upstream_log (an entry per attempt) and the HCM's access log (the request's, with the
    # usage counts json_to_metadata read), each logger on its own stream
    attempts = [attempt_log_entry("openai/gpt-4o", 429, "req-c1"), attempt_log_entry(CLAUDE, 200, "req-c1")]
    entry = request_log_entry(metadata, 200, 2, request_id="req-c1", usage=answer["usage"])
    assert await served.access_logs([[access_log_message(attempts[:1], ATTEMPT_LOG), access_log_message(attempts[1:])], [access_log_message([entry], REQUEST_LOG)]])

    assert served.sample("plano_upstream_responses_total", model="openai/gpt-4o", provider="openai", status_class="4xx") == 1
    assert served.sample("plano_upstream_responses_total", model=CLAUDE, provider="anthropic", status_class="2xx") == 1
    assert served.sample("plano_upstream_fallovers_total", model=CLAUDE) == 1
    assert served.sample("plano_tokens_total", model=CLAUDE, type="input") == 20
    assert served.sample("plano_requests_total", endpoint="proxy", api_format="openai_chat", outcome="ok") == 1
    assert served.server.inflight.get("req-c1") is None
    for processor in Processor:
        assert served.sample("plano_extproc_inflight_streams", processor=processor.value) == 0
    assert served.sample("plano_extproc_phase_duration_seconds_count", processor="downstream", phase="request_body") == 1


async def test_access_logs_are_read_by_the_logger_each_stream_names(served):
    """Envoy names a stream's logger in its first message only; later messages carry entries alone."""
    raw = client_body("openai_chat", "complex_reasoning: trains")
    replies, _ = await served.lockstep("downstream", [request_headers_msg(client_headers("/v1/chat/completions", raw, "req-a1")), request_body_msg(raw)])
    metadata = envoy_metadata(replies[1])
    entry = request_log_entry(metadata, 200, request_id="req-a1", usage={"prompt_tokens": 5, "completion_tokens": 3})
    requests = [access_log_message([entry], REQUEST_LOG), access_log_message([entry, entry])]
    attempts = [access_log_message([attempt_log_entry("openai/gpt-4o", 200)], ATTEMPT_LOG)]
    unknown = [access_log_message([entry], "someone.elses"), access_log_message([entry])]
    assert await served.access_logs([requests, attempts, unknown])
    assert served.sample("plano_requests_total", endpoint="proxy", api_format="openai_chat", outcome="ok") == 3
    assert served.sample("plano_tokens_total", model="openai/gpt-4o", type="output") == 9
    assert served.sample("plano_upstream_responses_total", model="openai/gpt-4o", provider="openai", status_class="2xx") == 1
    assert served.server.inflight.get("req-a1") is None
    for log_name, count in (("requests", 3), ("attempts", 1), ("other", 2)):
        assert served.sample("plano_access_log_entries_total", log=log_name) == count


async def test_access_logs_of_another_config_are_counted_and_ignored(served):
    metadata = decision_metadata({"models": "openai/gpt-4o,openai/gpt-4o", "api": "openai_chat", "route": ""})
    stream = [access_log_message([request_log_entry(metadata, 200)], REQUEST_LOG)]
    assert await served.access_logs([stream], fingerprint="0123456789abcdef")
    assert served.sample("plano_config_mismatch_total") == 1
    assert served.sample("plano_requests_total", endpoint="proxy", api_format="openai_chat", outcome="ok") == 0
    assert served.sample("plano_access_log_entries_total", log="requests") == 1  # received all the same


async def test_an_entry_that_cannot_be_read_is_skipped_and_the_stream_goes_on(served, monkeypatch):
    metrics = served.server.metrics
    real = metrics.record_request
    calls = []

    def once_broken(*args):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        real(*args)

    monkeypatch.setattr(metrics, "record_request", once_broken)
    metadata = decision_metadata({"models": "openai/gpt-4o,openai/gpt-4o", "api": "openai_chat", "route": ""})
    entry = request_log_entry(metadata, 200)
    assert await served.access_logs([[access_log_message([entry, entry], REQUEST_LOG), access_log_message([entry])]])
    assert served.sample("plano_requests_total", endpoint="proxy", api_format="openai_chat", outcome="ok") == 2
    assert served.sample("plano_access_log_entries_total", log="requests") == 3
