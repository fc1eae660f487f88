"""The in-flight records the processors of one request share (plano_extproc.extproc.tracking)."""

from __future__ import annotations

from plano_extproc.apis import BY_NAME
from plano_extproc.extproc.tracking import InFlightRequests
from plano_extproc.forwarding import ForwardRequest

ATTEMPTS = ("anthropic/claude", "openai/gpt-4o")


def test_a_record_without_translation_goes_when_it_is_closed():
    inflight = InFlightRequests()
    inflight.open("r1", ATTEMPTS, "openai_chat", None)
    assert inflight.close("r1") is not None and len(inflight) == 0 and inflight.parked == 0
    assert inflight.claim("r1") is None


def test_a_translated_record_closed_first_waits_for_the_translator():
    """A short answer can be observed to its end before the translator's headers message is handled."""
    inflight = InFlightRequests()
    inflight.open("r1", ATTEMPTS, "openai_chat", None, client_body={"stream_options": {"include_usage": True}})
    inflight.close("r1")  # the observer first
    assert inflight.get("r1") is None and len(inflight) == 0 and inflight.parked == 1
    record = inflight.claim("r1")
    assert record is not None and record.client_body == {"stream_options": {"include_usage": True}}
    assert inflight.parked == 0 and inflight.claim("r1") is None


def test_a_translated_record_read_first_goes_when_the_observer_closes_it():
    inflight = InFlightRequests()
    inflight.open("r1", ATTEMPTS, "anthropic_messages", None, client_body={"tools": []})
    assert inflight.claim("r1").client_body == {"tools": []}
    assert len(inflight) == 1  # until the request ends (its access-log entry, or the streaming observer)
    inflight.close("r1")
    assert len(inflight) == 0 and inflight.parked == 0


def test_parked_records_expire():
    now = [0.0]
    inflight = InFlightRequests(clock=lambda: now[0])
    inflight.open("r1", ATTEMPTS, "openai_chat", None, client_body={})
    inflight.close("r1")
    now[0] += 3600
    assert inflight.claim("r1") is None


def test_the_translators_read_lets_the_kept_body_go():
    """It reads at the response headers: no attempt follows, so only the client body stays."""
    inflight = InFlightRequests()
    kept = ForwardRequest(BY_NAME["openai_chat"], b'{"model":"m","messages":[]}' * 100, (), ATTEMPTS, None)
    inflight.open("r1", ATTEMPTS, "openai_chat", None, kept, client_body={"messages": []})
    heavy = inflight.bytes
    record = inflight.claim("r1")
    assert record is not None and record.forward is None and record.client_body == {"messages": []}
    assert inflight.bytes < heavy and inflight.get("r1") is record
