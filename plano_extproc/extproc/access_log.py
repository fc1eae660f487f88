"""Response observation from Envoy's gRPC access logs (``envoy.service.accesslog.v3.AccessLogService``).

Envoy batches the entries of each logger on one long-lived stream per worker (bootstrap/access_logs.py),
so a request's outcome costs a share of a message here instead of a gRPC stream of its own. Two loggers,
told apart by the ``log_name`` of a stream's first message:

* ``contract.REQUEST_LOG`` — one entry per request the routing processor forwarded, at its end: the
  request outcome (``plano_requests_total``, the final status; 499 when the client went before any
  response), the attempts it took and the fall-over (``plano_upstream_attempts``,
  ``plano_upstream_fallovers_total``), its duration (request start to the last byte sent to the client)
  and, for a non-streaming answer when bodies are observed, the time to the first response byte and the
  token usage json_to_metadata read (``contract.USAGE_NAMESPACE``). A streamed answer's first token and
  usage are the streaming observer's (observer.py): the decision metadata says which (``STREAM_KEY``).
* ``contract.ATTEMPT_LOG`` — one entry per upstream attempt (a 429 Envoy retried included): the
  provider's status by the attempt's model, named by the sub-cluster that served it
  (``plano_upstream_responses_total``). An attempt without a response (reset, refused, timed out) has no
  status and is not counted.

Everything is read from the entry alone — the decision the routing processor wrote is in the request's
entry — so an entry may reach another ext_proc process than the one that decided the request. The one
thing done with this process's state is closing the request's in-flight record when this process has it
(its kept body and client body are then no longer needed: the entry is written when the request ended).
Records whose entry never comes here expire by themselves (tracking.py): nothing depends on it arriving.

Nothing here can fail a request: the entries describe requests that have ended, and an entry that cannot
be read is skipped (logged at debug).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.data.accesslog.v3 import accesslog_pb2 as als_data
from envoy.service.accesslog.v3 import als_pb2
from envoy.service.accesslog.v3 import als_pb2_grpc as als_grpc
from google.protobuf import duration_pb2

from plano_extproc.apis import BY_NAME
from plano_extproc.config import PlanoConfig
from plano_extproc.contract import (
    ATTEMPT_LOG,
    FINGERPRINT_METADATA,
    REQUEST_LOG,
    USAGE_FIELDS,
    USAGE_NAMESPACE,
    DecisionMetadata,
    model_cluster_name,
)
from plano_extproc.extproc.tracking import InFlightRequests
from plano_extproc.forwarding import Forwarder
from plano_extproc.metrics import Metrics
from plano_extproc.usage import Usage

log = logging.getLogger(__name__)

#: the status a request gets when its client went away before any response (as nginx logs it)
CLIENT_CLOSED = 499


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _plain(value: Any) -> object:
    """A ``google.protobuf.Value`` json_to_metadata wrote (PROTOBUF_VALUE) as the JSON value it was: a whole
    number as an int (the counts ``read_usage`` accepts), anything else as is."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


class AccessLogContext:
    """What the access-log streams share: the config's bindings, the metrics and the in-flight records."""

    def __init__(self, config: PlanoConfig, metrics: Metrics, inflight: InFlightRequests, forwarder: Forwarder) -> None:
        self.metrics = metrics
        self.inflight = inflight
        self.forwarder = forwarder
        #: non-streaming answers' first byte and usage are read here (observability.responses: bodies)
        self.bodies = config.observability.responses == "bodies"
        #: each model's cluster (an attempt's entry names the sub-cluster that served it)
        self.cluster_models = {model_cluster_name(p.model): p.model for p in config.providers}

    def request_entry(self, entry: als_data.HTTPAccessLogEntry) -> None:
        """One proxied request, at its end."""
        common = entry.common_properties
        decision = DecisionMetadata.from_metadata(common.metadata)
        if decision is None or decision.api not in BY_NAME:  # not a request the routing processor forwarded
            return
        # the request is over: this process's record (if it has it) is no longer needed; first, so that
        # everything recorded below is recorded after it went
        if entry.request.request_id:
            self.inflight.close(entry.request.request_id)
        m = self.metrics
        status = entry.response.response_code.value or CLIENT_CLOSED
        attempt = max(1, common.upstream_request_attempt_count)
        model = decision.model_for_attempt(attempt)
        m.record_request("proxy", decision.api, status)
        m.record_attempts(attempt, model, decision.attempts[0])
        ended = common.time_to_last_downstream_tx_byte if common.HasField("time_to_last_downstream_tx_byte") else common.duration
        elapsed = _seconds(ended)
        m.record_duration(model, elapsed)
        if not 200 <= status < 300:
            return
        if m.live_latency is not None:
            m.live_latency.add(model, "total", elapsed)
        if not self.bodies or decision.stream:  # headers only, or the streaming observer's to read
            return
        if entry.response.response_body_bytes and common.HasField("time_to_first_upstream_rx_byte"):
            m.record_first_token(model, _seconds(common.time_to_first_upstream_rx_byte))
        usage = self._usage(common, decision, model)
        if usage is not None:
            m.record_tokens(model, usage.input_tokens, usage.output_tokens)

    def _usage(self, common: als_data.AccessLogCommon, decision: DecisionMetadata, model: str) -> Usage | None:
        """The counts json_to_metadata found, read as the provider's API reads its ``usage`` object."""
        found = common.metadata.filter_metadata.get(USAGE_NAMESPACE)
        if found is None:
            return None
        route = self.forwarder.route(BY_NAME[decision.api], model)
        if route is None:
            return None
        counts = {key: _plain(value) for key, value in found.fields.items() if key in USAGE_FIELDS}
        return BY_NAME[route.wire].read_usage({"usage": counts})

    def attempt_entry(self, entry: als_data.HTTPAccessLogEntry) -> None:
        """One upstream attempt: the provider's status by the model of the sub-cluster that served it."""
        status = entry.response.response_code.value
        model = self.cluster_models.get(entry.common_properties.upstream_cluster)
        if status and model is not None:
            self.metrics.record_upstream_response(model, status)


class AccessLogService(als_grpc.AccessLogServiceServicer):  # type: ignore[misc]  # xds-protos is untyped
    """Envoy's access-log streams: each message's entries to the handler of the stream's logger, read with
    the bindings of the config the sending Envoy's bootstrap was rendered from (`contexts`: bootstrap
    fingerprint -> bindings, None for a bootstrap of no config served here). Resolved per message: a
    stream outlives config reloads that keep the bootstrap."""

    def __init__(self, contexts: Callable[[str | None], AccessLogContext | None], metrics: Metrics) -> None:
        self.contexts = contexts
        self.metrics = metrics
        #: entries received, by logger ("requests", "attempts"; "other" for a name we do not know)
        self._received = {name: metrics.access_log_entries.labels(name.removeprefix("plano.")) for name in (REQUEST_LOG, ATTEMPT_LOG)}
        self._received_other = metrics.access_log_entries.labels("other")
        self._mismatches_seen: set[str] = set()

    def _context(self, fingerprint: str | None) -> AccessLogContext | None:
        ctx = self.contexts(fingerprint)
        if ctx is None:
            self.metrics.config_mismatches.inc()
            if fingerprint not in self._mismatches_seen:
                self._mismatches_seen.add(fingerprint or "")
                log.error(
                    "access logs of an Envoy whose bootstrap was rendered from another config (fingerprint %s) are ignored",
                    fingerprint,
                )
        return ctx

    async def StreamAccessLogs(  # noqa: N802 - gRPC name
        self, request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage], context: grpc.aio.ServicerContext
    ) -> als_pb2.StreamAccessLogsResponse:
        fingerprint = next((v for k, v in context.invocation_metadata() or () if k == FINGERPRINT_METADATA), None)
        name = ""
        received = self._received_other
        first = True
        async for message in request_iterator:
            if message.HasField("identifier"):  # the stream's first message names its logger
                name = message.identifier.log_name
                received = self._received.get(name, self._received_other)
            # counted and logged once per stream; looked up per message (a reload may replace the bindings)
            ctx = self._context(fingerprint) if first else self.contexts(fingerprint)
            first = False
            handler = None
            if ctx is not None:
                handler = ctx.request_entry if name == REQUEST_LOG else ctx.attempt_entry if name == ATTEMPT_LOG else None
            logged = message.http_logs.log_entry
            if handler is not None:
                for entry in logged:
                    try:
                        handler(entry)
                    except Exception:  # an entry we cannot read is skipped, never the stream
                        log.debug("access log entry skipped", exc_info=True)
            received.inc(len(logged))  # after: an entry counted is an entry recorded
        return als_pb2.StreamAccessLogsResponse()
