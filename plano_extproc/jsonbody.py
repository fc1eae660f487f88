"""Rewriting a client's JSON body for a provider without changing what we do not own. Pure.

Same-API traffic keeps the client's bytes: only the top-level `model` value is replaced in place (or
inserted when absent). Where that cannot be done safely — the routing fields must be removed, or `model`
appears more than once as a key — the body is serialised again from its parsed form, with the same keys,
order and values: integers beyond 64 bits are re-read exactly (orjson would turn them into floats) and
deep nesting falls back to the standard library's encoder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import orjson

_MODEL_KEY = re.compile(rb'"model"\s*:\s*')
#: a digit run this long may be an integer orjson cannot hold exactly (2**63 has 19 digits)
_LONG_NUMBER = re.compile(rb"\d{19,}")
#: a prefix this short is checked for depth by scanning; a longer one by re-parsing the result
_SCAN_PREFIX = 4096


class BodyTooDeep(ValueError):
    """The JSON nests deeper than any encoder here can write back."""


def dumps(value: Any) -> bytes:
    """Compact JSON; integers beyond 64 bits and deep nesting handled by the standard library."""
    try:
        return orjson.dumps(value)
    except TypeError:
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        except RecursionError:
            raise BodyTooDeep("the JSON nests too deeply to forward") from None


def exact_loads(raw: bytes) -> Any:
    """Parse keeping big integers exact when the text may hold any (orjson reads them as floats)."""
    if _LONG_NUMBER.search(raw):
        return json.loads(raw)
    return orjson.loads(raw)


def with_model(raw: bytes, model_id: str, remove: Iterable[str] = ()) -> bytes:
    """`raw` (a JSON object) with top-level `model` set to `model_id` and the keys `remove` dropped."""
    remove = tuple(remove)
    if not remove:
        spliced = _splice_model(raw, model_id)
        if spliced is not None:
            return spliced
    body = exact_loads(raw)
    for key in remove:
        body.pop(key, None)
    body["model"] = model_id
    return dumps(body)


def without(raw: bytes, keys: Iterable[str]) -> bytes:
    """`raw` with the top-level `keys` removed (the bytes themselves when there is none to remove)."""
    keys = tuple(keys)
    if not keys:
        return raw
    body = exact_loads(raw)
    for key in keys:
        body.pop(key, None)
    return dumps(body)


def _splice_model(raw: bytes, model_id: str) -> bytes | None:
    new_value = orjson.dumps(model_id)
    found = list(_MODEL_KEY.finditer(raw))
    start = raw.find(b"{")
    if start < 0:
        return None
    if not found:
        # no "model" key at all: insert it first
        rest = raw[start + 1 :]
        joiner = b"" if rest.lstrip().startswith(b"}") else b","
        return raw[: start + 1] + b'"model":' + new_value + joiner + rest
    if len(found) > 1:
        return None
    match = found[0]
    value_start = match.end()
    value_end = _scalar_end(raw, value_start)
    if value_end is None:
        return None
    spliced = raw[:value_start] + new_value + raw[value_end:]
    if match.start() < _SCAN_PREFIX:
        if _depth_before(raw, match.start()) != 1:
            return None
        return spliced
    try:
        parsed = orjson.loads(spliced)
    except orjson.JSONDecodeError:
        return None
    return spliced if isinstance(parsed, dict) and parsed.get("model") == model_id else None


def _scalar_end(raw: bytes, at: int) -> int | None:
    """The end of the JSON string or null at `at`; None for anything else."""
    if raw.startswith(b"null", at):
        return at + 4
    if raw[at : at + 1] != b'"':
        return None
    i = at + 1
    while True:
        i = raw.find(b'"', i)
        if i < 0:
            return None
        backslashes = 0
        j = i - 1
        while raw[j] == 0x5C:  # "\\"
            backslashes += 1
            j -= 1
        if backslashes % 2 == 0:
            return i + 1
        i += 1


def _depth_before(raw: bytes, end: int) -> int:
    """Object/array nesting depth at `end`, strings skipped."""
    depth, i = 0, 0
    in_string = False
    while i < end:
        c = raw[i]
        if in_string:
            if c == 0x5C:
                i += 1
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in (0x7B, 0x5B):
            depth += 1
        elif c in (0x7D, 0x5D):
            depth -= 1
        i += 1
    return depth
