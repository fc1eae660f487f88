"""Rewriting a client's body for a provider: only the model changes, whatever the client's JSON looks like."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from plano_extproc.jsonbody import with_model

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(["model", "a", "content", "x y", "\u00e9"]) | st.text(max_size=6), kids, max_size=4),
    max_leaves=25,
)


def test_the_clients_bytes_are_kept_except_the_model() -> None:
    raw = b'{ "model" : "gpt-4o-mini",\n  "messages": [{"role":"user","content":"caf\\u00e9 \\"model\\": x"}], "n": 1.0e2, "big": 18446744073709551617 }'
    out = with_model(raw, "gpt-4o")
    assert out == raw.replace(b'"gpt-4o-mini"', b'"gpt-4o"')


def test_model_after_a_long_prefix_and_a_nested_model_key() -> None:
    prefix = {"messages": [{"role": "user", "content": "x" * 10_000}]}
    raw = (json.dumps(prefix)[:-1] + ', "model": "a", "tools": [{"input_schema": {"properties": {"model2": {}}}}]}').encode()
    assert with_model(raw, "b") == raw.replace(b'"model": "a"', b'"model": "b"')
    nested = b'{"tools": [{"input_schema": {"properties": {"model": {"type": "string"}}}}], "messages": [], "model": "a"}'
    out = json.loads(with_model(nested, "b"))
    assert out["model"] == "b" and out["tools"][0]["input_schema"]["properties"]["model"] == {"type": "string"}


def test_a_missing_model_is_inserted_and_routing_fields_removed_exactly() -> None:
    assert json.loads(with_model(b'{"messages": []}', "m")) == {"model": "m", "messages": []}
    assert json.loads(with_model(b"{ }", "m")) == {"model": "m"}
    raw = b'{"messages": [], "routing_preferences": [{"name": "a"}], "big": 340282366920938463463374607431768211456}'
    out = with_model(raw, "m", ["routing_preferences"])
    assert json.loads(out) == {"messages": [], "big": 2**128, "model": "m"}
    assert b"340282366920938463463374607431768211456" in out


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(st.sampled_from(["model", "messages", "stream", "routing_preferences", "x"]) | st.text(max_size=5), JSON, max_size=6),
       indent=st.sampled_from([None, 1]), remove=st.booleans())
def test_any_body_keeps_every_value(body, indent, remove) -> None:
    raw = json.dumps(body, indent=indent).encode()
    removed = ["routing_preferences"] if remove else []
    out = json.loads(with_model(raw, "chosen", removed))
    expected = {k: v for k, v in body.items() if k not in removed}
    expected["model"] = "chosen"
    assert out == expected
