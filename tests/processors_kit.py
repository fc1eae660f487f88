"""What the in-process processor tests share: the processors of a real parsed config with a deterministic
stand-in router, ext_proc messages built as Envoy sends them, and readers for the replies.

Envoy's side of the conversation is imitated only where the processors rely on it (docs/envoy.md):
header values arrive in ``raw_value``; attributes arrive in a Struct keyed by the filter's canonical name
(``envoy.filters.http.ext_proc``) with the dotted attribute names (or CEL expressions, finding (u)) as flat
keys, numbers as number_value; the decision the downstream processor returns as dynamic metadata reaches
the upstream filters as ``metadata_context.filter_metadata["plano"]``; header mutations made for one
attempt persist into the next (finding (d)), body mutations do not. Access-log entries carry the
request's dynamic metadata (the decision, json_to_metadata's usage counts), its final status, attempt
count and timings; an attempt's entry carries its status and the sub-cluster that served it (finding (v)).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2 as als_data
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.accesslog.v3 import als_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from google.protobuf import duration_pb2, struct_pb2

from plano_extproc.apis import BY_NAME
from plano_extproc.config import PlanoConfig, load_config, parse_config
from plano_extproc.contract import (
    API_ATTRIBUTE,
    ATTEMPT_COUNT_ATTRIBUTE,
    ATTEMPT_COUNT_HEADER,
    ATTEMPTS_ATTRIBUTE,
    METADATA_NAMESPACE,
    OWN_REPLY_DETAILS,
    REQUEST_ID_ATTRIBUTE,
    USAGE_NAMESPACE,
    model_cluster_name,
    prebuilt_attempt_lists,
)
from plano_extproc.engine import DecisionEngine
from plano_extproc.extproc.access_log import AccessLogContext
from plano_extproc.extproc.downstream import DownstreamContext, DownstreamExchange
from plano_extproc.extproc.observer import ObserverContext, ResponseObserver
from plano_extproc.extproc.tracking import InFlightRequests
from plano_extproc.extproc.translate import TranslateContext, TranslateExchange
from plano_extproc.extproc.upstream import UpstreamContext, UpstreamExchange
from plano_extproc.forwarding import Forwarder
from plano_extproc.metrics import Metrics
from plano_extproc.router.base import RouterBackend, RouteSpec
from plano_extproc.router.chain import RouterChain

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "plano_extproc" / "demo" / "config.yaml"
ENV = {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test"}
#: the key Envoy files request/response attributes under (the ext_proc filter's canonical name)
ATTRIBUTES_KEY = "envoy.filters.http.ext_proc"
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
Mode = processing_mode_pb2.ProcessingMode

CLAUDE = "anthropic/claude-sonnet-4-20250514"
GPT4O = "openai/gpt-4o"
MINI = "openai/gpt-4o-mini"
CLAUDE_ID = "claude-sonnet-4-20250514"

#: a small config of our own: a passthrough provider beside one with the gateway's key, and a provider that
#: speaks only Chat Completions (Responses clients are translated to it)
PASSTHROUGH_YAML = """
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    access_key: $OPENAI_API_KEY
    default: true
  - model: ollama/llama3
    base_url: http://127.0.0.1:11434
    passthrough_auth: true
routing_preferences:
  - name: local_chat
    description: casual conversation that a small local model handles
    models: [ollama/llama3, openai/gpt-4o]
  - name: hosted_chat
    description: anything that needs the hosted model first
    models: [openai/gpt-4o, ollama/llama3]
"""


def demo_config() -> PlanoConfig:
    return load_config(DEMO_CONFIG, ENV)


def passthrough_config() -> PlanoConfig:
    return parse_config(PASSTHROUGH_YAML, ENV)


class KeywordRouter(RouterBackend):
    """A deterministic stand-in for the router model: the first route whose name appears in the latest
    turn, else no match. Counts its calls, so tests can tell when it was not asked."""

    name = "stub"

    def __init__(self) -> None:
        self.calls = 0

    async def choose_route(self, routes: Sequence[RouteSpec], conversation: Sequence[Any]) -> str | None:
        self.calls += 1
        latest = conversation[-1].content
        return next((r.name for r in routes if r.name in latest), None)


class Gateway:
    """The processors of one config, wired as `ExtProcServer` wires them, around a stand-in router."""

    def __init__(self, config: PlanoConfig | None = None, inflight: InFlightRequests | None = None) -> None:
        self.config = config or demo_config()
        self.metrics = Metrics(self.config)
        self.inflight = inflight if inflight is not None else InFlightRequests()
        self.router = KeywordRouter()
        self.engine = DecisionEngine(self.config, RouterChain(self.router, 5.0), self.metrics)
        self.forwarder = Forwarder.from_config(self.config, prebuilt_attempt_lists(self.config))
        self._downstream = DownstreamContext(self.engine, self.forwarder, self.metrics, self.inflight)
        self._upstream = UpstreamContext(self.forwarder, self.inflight)
        self._translate = TranslateContext(self.forwarder, self.inflight)
        self._observer = ObserverContext(self.metrics, self.inflight, self.forwarder)
        #: the access-log adapter (its entries come one at a time here; the service batches them)
        self.access_log = AccessLogContext(self.config, self.metrics, self.inflight, self.forwarder)
        self._ids = itertools.count(1)

    def downstream(self) -> DownstreamExchange:
        return DownstreamExchange(self._downstream)

    def upstream(self) -> UpstreamExchange:
        return UpstreamExchange(self._upstream)

    def translate(self) -> TranslateExchange:
        return TranslateExchange(self._translate)

    def observe(self) -> ResponseObserver:
        return ResponseObserver(self._observer)

    def request_id(self) -> str:
        return f"req-{next(self._ids)}"

    def sample(self, name: str, **labels: str) -> float:
        """A metric sample as Prometheus would scrape it (0 when the series does not exist)."""
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    async def proxy(self, api: str, text: str, *, routing: bool = False, headers: Mapping[str, str] | None = None, **body: Any) -> Flow:
        """A client request through the downstream processor: headers, then the buffered body."""
        raw = client_body(api, text, **body)
        path = ("/routing" if routing else "") + BY_NAME[api].path
        request_headers = client_headers(path, raw, self.request_id(), headers)
        flow = Flow(self, api, dict(request_headers), raw)
        exchange = self.downstream()
        flow.headers_reply = await exchange.handle(request_headers_msg(request_headers))
        assert flow.headers_reply is not None
        if flow.headers_reply.WhichOneof("response") == "immediate_response":
            return flow
        apply_mutation(flow.headers, common_of(flow.headers_reply).header_mutation)
        flow.body_reply = await exchange.handle(request_body_msg(raw))
        assert flow.body_reply is not None
        if flow.body_reply.WhichOneof("response") == "request_body":
            common = common_of(flow.body_reply)
            apply_mutation(flow.headers, common.header_mutation)
            if common.HasField("body_mutation"):
                flow.body = common.body_mutation.body
            flow.metadata = envoy_metadata(flow.body_reply)
        return flow


@dataclass
class Flow:
    """One request as Envoy holds it: its headers after every mutation so far, the body that left the
    downstream processor (what Envoy re-sends to every attempt), the decision metadata."""

    gateway: Gateway
    api: str
    headers: dict[str, str]
    body: bytes
    metadata: base_pb2.Metadata | None = None
    headers_reply: ext.ProcessingResponse | None = None
    body_reply: ext.ProcessingResponse | None = None
    attempts: list[ext.ProcessingResponse] = field(default_factory=list)

    @property
    def request_id(self) -> str:
        return self.headers["x-request-id"]

    def attempt_headers(self, attempt: int) -> dict[str, str]:
        return {**self.headers, ATTEMPT_COUNT_HEADER: str(attempt)}

    async def attempt(self, attempt: int, gateway: Gateway | None = None) -> list[ext.ProcessingResponse]:
        """Attempt N through the per-attempt processor (of `gateway`, another process, when given). Its header
        mutations persist into the next attempt, as in Envoy; the body Envoy sends is the downstream one."""
        exchange = (gateway or self.gateway).upstream()
        replies = [await exchange.handle(request_headers_msg(self.attempt_headers(attempt), metadata=self.metadata))]
        assert replies[0] is not None
        kind = replies[0].WhichOneof("response")
        common = common_of(replies[0]) if kind == "request_headers" else None
        if common is not None and common.status != ext.CommonResponse.CONTINUE_AND_REPLACE:
            body_reply = await exchange.handle(request_body_msg(self.body))
            assert body_reply is not None
            replies.append(body_reply)
        for reply in replies:
            if reply.WhichOneof("response") != "immediate_response":
                apply_mutation(self.headers, common_of(reply).header_mutation)
        return replies


# ------------------------------------------------------------------------------------------ requests


def client_body(api: str, text: str, **extra: Any) -> bytes:
    """A minimal request body of each client API with one user turn."""
    if api == "openai_chat":
        body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    elif api == "anthropic_messages":
        body = {"model": CLAUDE_ID, "max_tokens": 256, "messages": [{"role": "user", "content": text}]}
    else:
        body = {"model": "gpt-4o", "input": text}
    body.update(extra)
    return orjson.dumps({k: v for k, v in body.items() if v is not None})


def client_headers(path: str, raw: bytes, request_id: str, extra: Mapping[str, str] | None = None, method: str = "POST") -> dict[str, str]:
    """Request headers as Envoy's HCM hands them to the first filter (lower-case names, x-request-id set)."""
    headers = {
        ":method": method,
        ":scheme": "http",
        ":authority": "localhost:12000",
        ":path": path,
        "content-type": "application/json",
        "content-length": str(len(raw)),
        "user-agent": "tests/1.0",
        "x-request-id": request_id,
        "x-forwarded-proto": "http",
    }
    headers.update(extra or {})
    return headers


def header_map(headers: Mapping[str, str] | Sequence[tuple[str, str]]) -> base_pb2.HeaderMap:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in items])


def _attributes(msg: ext.ProcessingRequest, attributes: Mapping[str, Any] | None) -> None:
    if attributes:
        struct = struct_pb2.Struct()
        struct.update(dict(attributes))
        msg.attributes[ATTRIBUTES_KEY].CopyFrom(struct)


def request_headers_msg(
    headers: Mapping[str, str], *, end_of_stream: bool = False, metadata: base_pb2.Metadata | None = None
) -> ext.ProcessingRequest:
    msg = ext.ProcessingRequest(request_headers=ext.HttpHeaders(headers=header_map(headers), end_of_stream=end_of_stream))
    if metadata is not None:
        msg.metadata_context.CopyFrom(metadata)
    return msg


def request_body_msg(body: bytes, *, end_of_stream: bool = True) -> ext.ProcessingRequest:
    return ext.ProcessingRequest(request_body=ext.HttpBody(body=body, end_of_stream=end_of_stream))


def response_headers_msg(
    status: int,
    headers: Mapping[str, str] | None = None,
    *,
    attributes: Mapping[str, Any] | None = None,
    metadata: base_pb2.Metadata | None = None,
    end_of_stream: bool = False,
) -> ext.ProcessingRequest:
    items = {":status": str(status), **(headers or {})}
    msg = ext.ProcessingRequest(response_headers=ext.HttpHeaders(headers=header_map(items), end_of_stream=end_of_stream))
    _attributes(msg, attributes)
    if metadata is not None:
        msg.metadata_context.CopyFrom(metadata)
    return msg


def response_body_msg(body: bytes, *, end_of_stream: bool = False) -> ext.ProcessingRequest:
    return ext.ProcessingRequest(response_body=ext.HttpBody(body=body, end_of_stream=end_of_stream))


def response_attributes(request_id: str, attempt: int, **more: Any) -> dict[str, Any]:
    """The attributes the translate processor and the observers are rendered with (contract.py)."""
    return {REQUEST_ID_ATTRIBUTE: request_id, ATTEMPT_COUNT_ATTRIBUTE: float(attempt), **more}


def decision_attributes(metadata: base_pb2.Metadata | None) -> dict[str, Any]:
    """The streaming observer's CEL attributes over the decision metadata (finding (u)): its scalar values
    as strings, nothing when the request carries no decision."""
    if metadata is None or METADATA_NAMESPACE not in metadata.filter_metadata:
        return {}
    fields = metadata.filter_metadata[METADATA_NAMESPACE].fields
    return {name: fields[key].string_value for name, key in ((ATTEMPTS_ATTRIBUTE, "models"), (API_ATTRIBUTE, "api")) if key in fields}


def seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


def request_log_entry(
    metadata: base_pb2.Metadata | None,
    status: int,
    attempts: int = 1,
    *,
    request_id: str = "",
    first_byte: float | None = 0.5,
    last_byte: float | None = 0.75,
    body_bytes: int = 100,
    usage: Mapping[str, Any] | None = None,
) -> als_data.HTTPAccessLogEntry:
    """A request's entry as the HCM's gRPC access log writes it (status 0: no response was sent); the
    timings are from the request's start."""
    entry = als_data.HTTPAccessLogEntry()
    common = entry.common_properties
    if metadata is not None:
        common.metadata.CopyFrom(metadata)
    if usage is not None:
        struct = struct_pb2.Struct()
        struct.update(dict(usage))
        common.metadata.filter_metadata[USAGE_NAMESPACE].CopyFrom(struct)
    common.upstream_request_attempt_count = attempts
    if first_byte is not None:
        common.time_to_first_upstream_rx_byte.CopyFrom(seconds(first_byte))
    if last_byte is not None:
        common.time_to_last_downstream_tx_byte.CopyFrom(seconds(last_byte))
    common.duration.CopyFrom(seconds(last_byte if last_byte is not None else 1.0))
    entry.request.request_id = request_id
    if status:
        entry.response.response_code.value = status
    entry.response.response_body_bytes = body_bytes
    return entry


def attempt_log_entry(model: str, status: int, request_id: str = "") -> als_data.HTTPAccessLogEntry:
    """An attempt's entry as the router's upstream_log writes it: its status (0: no response), the model's
    sub-cluster, no dynamic metadata."""
    entry = als_data.HTTPAccessLogEntry()
    entry.common_properties.upstream_cluster = model_cluster_name(model)
    entry.request.request_id = request_id
    if status:
        entry.response.response_code.value = status
    return entry


def access_log_message(entries: Sequence[als_data.HTTPAccessLogEntry], log_name: str | None = None) -> als_pb2.StreamAccessLogsMessage:
    """One batch; the first message of a stream names its logger (`log_name`)."""
    message = als_pb2.StreamAccessLogsMessage()
    if log_name is not None:
        message.identifier.log_name = log_name
    message.http_logs.log_entry.extend(entries)
    return message


def decision_metadata(fields: Mapping[str, Any]) -> base_pb2.Metadata:
    """`metadata_context` with the plano namespace holding `fields`, as a forged or broken decision would."""
    metadata = base_pb2.Metadata()
    struct = struct_pb2.Struct()
    struct.update(dict(fields))
    metadata.filter_metadata[METADATA_NAMESPACE].CopyFrom(struct)
    return metadata


def envoy_metadata(reply: ext.ProcessingResponse) -> base_pb2.Metadata | None:
    """What the upstream filters receive as `metadata_context` after the downstream reply's dynamic
    metadata (receiving_namespaces downstream, forwarding_namespaces upstream)."""
    if not reply.HasField("dynamic_metadata"):
        return None
    metadata = base_pb2.Metadata()
    for namespace, value in reply.dynamic_metadata.fields.items():
        metadata.filter_metadata[namespace].CopyFrom(value.struct_value)
    return metadata


# ------------------------------------------------------------------------------------------ replies


def common_of(reply: ext.ProcessingResponse) -> ext.CommonResponse:
    kind = reply.WhichOneof("response")
    assert kind in ("request_headers", "request_body", "response_headers", "response_body"), kind
    return getattr(reply, kind).response


def set_headers(reply_or_mutation: ext.ProcessingResponse | ext.HeaderMutation) -> dict[str, str]:
    """The headers a reply sets. Checks what Envoy needs of every one: the value in raw_value (`value`
    empty), OVERWRITE_IF_EXISTS_OR_ADD, each name once."""
    mutation = reply_or_mutation if isinstance(reply_or_mutation, ext.HeaderMutation) else _mutation(reply_or_mutation)
    out: dict[str, str] = {}
    for option in mutation.set_headers:
        assert option.append_action == OVERWRITE, option
        assert option.header.value == "" and option.header.raw_value, option
        assert option.header.key not in out, f"{option.header.key} set twice"
        out[option.header.key] = option.header.raw_value.decode()
    return out


def removed_headers(reply: ext.ProcessingResponse) -> list[str]:
    return list(_mutation(reply).remove_headers)


def _mutation(reply: ext.ProcessingResponse) -> ext.HeaderMutation:
    if reply.WhichOneof("response") == "immediate_response":
        return reply.immediate_response.headers
    return common_of(reply).header_mutation


def apply_mutation(headers: dict[str, str], mutation: ext.HeaderMutation) -> None:
    """What Envoy does with a header mutation (removals, then overwrites)."""
    for name in mutation.remove_headers:
        headers.pop(name, None)
    for option in mutation.set_headers:
        headers[option.header.key] = option.header.raw_value.decode()


@dataclass(frozen=True)
class Immediate:
    status: int
    headers: dict[str, str]
    body: Any  # parsed JSON


def immediate_of(reply: ext.ProcessingResponse | None) -> Immediate:
    assert reply is not None and reply.WhichOneof("response") == "immediate_response", reply
    answer = reply.immediate_response
    # without the marker Envoy's local reply mappers wrap the processor's error JSON a second time
    assert answer.details == OWN_REPLY_DETAILS, answer.details
    return Immediate(answer.status.code, set_headers(answer.headers), orjson.loads(answer.body))


def body_of(reply: ext.ProcessingResponse) -> bytes:
    common = common_of(reply)
    assert common.HasField("body_mutation"), reply
    return common.body_mutation.body


def assert_error_shape(api: str, body: Any, message_part: str = "") -> str:
    """The error body an SDK of client API `api` understands; returns its message."""
    if api == "anthropic_messages":
        assert body["type"] == "error" and set(body) == {"type", "error"}, body
        assert set(body["error"]) == {"type", "message"}, body
        assert body["error"]["type"].endswith("_error"), body
    else:
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
        assert isinstance(body["error"]["type"], str) and body["error"]["type"], body
    message = body["error"]["message"]
    assert message_part in message, message
    return message
