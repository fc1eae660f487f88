"""Trace context: the decision's trace id follows `traceparent`, providers see a traceparent, and with an
OTLP endpoint configured the routing step arrives at the collector as spans of that trace."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from plano_extproc.tracing import parse_traceparent
from tests.conftest import DEMO_CONFIG
from tests.harness import CODE, RunningGateway, oai, post, user

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def test_parse_traceparent():
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-01") == (TRACE, PARENT)
    for bad in (None, "", "00-xyz-00f067aa0ba902b7-01", f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01", "garbage"):
        assert parse_traceparent(bad) is None


class Collector:
    """A minimal OTLP/HTTP trace receiver (the outside world, like the mock providers)."""

    def __init__(self) -> None:
        self.spans: list = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        collector.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, predicate, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [s for s in self.spans if predicate(s)]
            if found:
                return found
            time.sleep(0.1)
        return []


@pytest.mark.integration
def test_spans_reach_the_collector_and_providers_get_a_traceparent():
    collector = Collector()
    text = DEMO_CONFIG.read_text() + f"\ntracing:\n  otlp_endpoint: {collector.url}\n"
    gw = RunningGateway(text)
    try:
        status, _, decision = post(gw, "/routing/v1/chat/completions", {"messages": user(CODE)}, {"traceparent": f"00-{TRACE}-{PARENT}-01"})
        assert status == 200 and decision["trace_id"] == TRACE
        spans = collector.wait_for(lambda s: s.trace_id.hex() == TRACE and s.name == "plano.route")
        assert spans, "no plano.route span for the request's trace"
        (route_span,) = spans
        assert route_span.parent_span_id.hex() == PARENT
        attrs = {a.key: a.value.string_value for a in route_span.attributes}
        assert attrs["plano.route"] == "code_generation" and attrs["plano.source"] == "router"
        children = collector.wait_for(lambda s: s.name == "plano.router" and s.parent_span_id == route_span.span_id)
        assert children and {a.key: a.value.string_value for a in children[0].attributes}["plano.router.backend"] == "embedded"

        oai(gw).chat.completions.create(model="gpt-4o-mini", messages=user("hello"))
        (seen,) = gw.openai_mock.requests_snapshot()
        assert parse_traceparent(seen["headers"].get("traceparent")) is not None
    finally:
        gw.close()
        collector.server.shutdown()
