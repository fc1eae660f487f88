"""Token usage from provider responses, read incrementally and with bounded memory. Pure: no I/O.

Which fields carry the counts is each client API's business (``read_usage`` in its module under
``plano_extproc.apis``): the readers here find the JSON payloads (a whole body, or the ``data:`` of SSE
events that mention ``"usage"``) and hand them to it. The observer reads what the client receives, so
the client API decides, whatever provider answered.

Memory: the SSE reader keeps only the current partial line (capped: an over-long line keeps just its
tail, where a ``response.completed`` event carries its ``usage``); the JSON reader keeps the body up to
``MAX_JSON_BYTES`` and, past that, only the tail. Chunks may split lines, events and UTF-8 anywhere.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

#: a non-streaming body up to this size is parsed whole; past it only its tail is kept and scanned
MAX_JSON_BYTES = 1024 * 1024
#: bytes kept from the end of an over-long body or SSE line (``usage`` sits near the end of both)
TAIL_BYTES = 64 * 1024
#: an SSE line longer than this keeps only its tail
MAX_LINE_BYTES = 256 * 1024
#: give up decompressing after this many bytes (a compressed body is never trusted to be small)
MAX_DECODED_BYTES = 64 * 1024 * 1024

_USAGE_KEY = b'"usage"'
_decoder = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None

    def merged(self, newer: Usage) -> Usage:
        """Fields the newer report has win (Anthropic's ``message_delta`` output count is cumulative)."""
        return Usage(
            newer.input_tokens if newer.input_tokens is not None else self.input_tokens,
            newer.output_tokens if newer.output_tokens is not None else self.output_tokens,
        )

    @property
    def empty(self) -> bool:
        return self.input_tokens is None and self.output_tokens is None


#: one JSON payload of a client API's responses (a body or one SSE event) -> the usage it reports; each
#: client API module defines its own (plano_extproc.apis)
PayloadUsage = Callable[[dict[str, Any]], "Usage | None"]


def usage_from_tail(tail: bytes, read: PayloadUsage) -> Usage | None:
    """The last ``"usage": {...}`` object in a piece of JSON text that may start mid-document."""
    end = len(tail)
    while True:
        at = tail.rfind(_USAGE_KEY, 0, end)
        if at < 0:
            return None
        end = at
        if at > 0 and tail[at - 1 : at] == b"\\":  # inside a string: \"usage\"
            continue
        rest = tail[at + len(_USAGE_KEY) :].lstrip()
        if not rest.startswith(b":"):
            continue
        text = rest[1:].lstrip().decode("utf-8", "replace")
        try:
            value, _ = _decoder.raw_decode(text)
        except ValueError:
            continue
        found = read({"usage": value}) if isinstance(value, dict) else None
        if found is not None:
            return found


def usage_from_json(body: bytes, read: PayloadUsage) -> Usage | None:
    """Token usage from a whole non-streaming response body."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return usage_from_tail(body[-TAIL_BYTES:], read)
    return read(payload) if isinstance(payload, dict) else None


class UsageReader(Protocol):
    def feed(self, chunk: bytes) -> None: ...

    def result(self) -> Usage | None: ...


class JsonUsageReader:
    """A non-streaming JSON body, chunk by chunk: whole up to MAX_JSON_BYTES, then only its tail."""

    __slots__ = ("_buf", "_read", "_size", "_tail_only")

    def __init__(self, read: PayloadUsage) -> None:
        self._read = read
        self._buf = bytearray()
        self._size = 0
        self._tail_only = False

    def feed(self, chunk: bytes) -> None:
        self._size += len(chunk)
        self._buf += chunk
        if self._size > MAX_JSON_BYTES:
            self._tail_only = True
        if self._tail_only and len(self._buf) > TAIL_BYTES:
            del self._buf[:-TAIL_BYTES]

    def result(self) -> Usage | None:
        body = bytes(self._buf)
        return usage_from_tail(body, self._read) if self._tail_only else usage_from_json(body, self._read)


class SseUsageReader:
    """Server-sent events, chunk by chunk: parses only ``data:`` lines that mention ``"usage"``."""

    __slots__ = ("_overflow", "_partial", "_read", "_usage")

    def __init__(self, read: PayloadUsage) -> None:
        self._read = read
        self._partial = bytearray()
        self._overflow = False  # the current line passed MAX_LINE_BYTES: _partial holds its tail only
        self._usage = Usage()

    def feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                self._append(chunk[start:])
                return
            if self._partial:
                self._append(chunk[start:newline])
                line, overflow = bytes(self._partial), self._overflow
                self._partial.clear()
                self._overflow = False
            else:
                line, overflow = chunk[start:newline], False
            self._line(line, overflow)
            start = newline + 1

    def _append(self, piece: bytes) -> None:
        if not piece:
            return
        self._partial += piece
        if len(self._partial) > MAX_LINE_BYTES:
            self._overflow = True
            del self._partial[:-TAIL_BYTES]

    def _line(self, line: bytes, overflow: bool) -> None:
        if _USAGE_KEY not in line:
            return
        if overflow:
            found = usage_from_tail(line, self._read)
        else:
            if not line.startswith(b"data:"):
                return
            try:
                payload = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                found = usage_from_tail(line, self._read)
            else:
                found = self._read(payload) if isinstance(payload, dict) else None
        if found is not None:
            self._usage = self._usage.merged(found)

    def result(self) -> Usage | None:
        if self._partial:  # a last line without its newline
            line, overflow = bytes(self._partial), self._overflow
            self._partial.clear()
            self._overflow = False
            self._line(line.rstrip(b"\r"), overflow)
        return None if self._usage.empty else self._usage


class DecodingReader:
    """Undoes ``content-encoding: gzip | deflate`` before another reader (bounded output)."""

    __slots__ = ("_decoded", "_failed", "_inner", "_zlib")

    def __init__(self, inner: UsageReader, encoding: str) -> None:
        self._inner = inner
        # 16 + MAX_WBITS: gzip; MAX_WBITS: zlib-wrapped deflate (what "deflate" means in HTTP)
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        self._decoded = 0
        self._failed = False

    def feed(self, chunk: bytes) -> None:
        if self._failed:
            return
        try:
            data = self._zlib.decompress(chunk, MAX_JSON_BYTES)
            while True:
                self._decoded += len(data)
                if self._decoded > MAX_DECODED_BYTES:
                    self._failed = True
                    return
                if data:
                    self._inner.feed(data)
                if not self._zlib.unconsumed_tail:
                    return
                data = self._zlib.decompress(self._zlib.unconsumed_tail, MAX_JSON_BYTES)
        except zlib.error:
            self._failed = True

    def result(self) -> Usage | None:
        return None if self._failed else self._inner.result()


def usage_reader(read: PayloadUsage, content_type: str, content_encoding: str = "") -> UsageReader | None:
    """The reader for a response with these headers, interpreting payloads with `read` (the client API's
    usage fields); None when usage cannot be read from it."""
    content_type = content_type.lower()
    reader: UsageReader
    if "text/event-stream" in content_type:
        reader = SseUsageReader(read)
    elif "json" in content_type:
        reader = JsonUsageReader(read)
    else:
        return None
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return reader
    if encoding in ("gzip", "x-gzip", "deflate"):
        return DecodingReader(reader, "gzip" if "gzip" in encoding else "deflate")
    return None  # br, zstd, stacked encodings: not read
