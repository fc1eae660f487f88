"""Server-sent events, read incrementally and written back. Pure.

Chunks may split lines, events and UTF-8 anywhere; `SseParser.feed` keeps the partial tail and returns
only complete events. Comment lines (``:``) and ``id``/``retry`` fields are dropped: no provider stream we
translate carries meaning in them.

Cost: every byte is scanned once. Line endings (CRLF, CR, LF, mixed, and a CRLF split across two chunks)
are normalised to LF as bytes arrive, so finding the end of an event is one ``find(b"\\n\\n")`` that
resumes where the previous chunk's search stopped; a long event fed one byte at a time stays linear.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str | None  # the ``event:`` field, None when absent (OpenAI streams)
    data: str  # the ``data:`` lines joined with "\n"


class SseParser:
    """Bytes in, complete events out. `max_pending` bounds the partial event kept between chunks."""

    __slots__ = ("_after_cr", "_buffer", "_max_pending", "_scan")

    def __init__(self, max_pending: int = 16 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self._scan = 0  # where the search for the next blank line resumes
        self._after_cr = False  # the last chunk ended in CR: a leading LF of the next one belongs to it
        self._max_pending = max_pending

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if not chunk:
            return []
        if self._after_cr:
            self._after_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._after_cr = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer
        buffer += chunk
        events: list[SseEvent] = []
        start = 0
        pos = self._scan
        while True:
            end = buffer.find(b"\n\n", pos)
            if end < 0:
                break
            event = _parse_block(bytes(buffer[start:end]))
            if event is not None:
                events.append(event)
            start = pos = end + 2
        if start:
            del buffer[:start]
        # a blank line may straddle this chunk and the next: resume one byte back
        self._scan = max(len(buffer) - 1, 0)
        if len(buffer) > self._max_pending:
            raise ValueError(f"an SSE event is longer than {self._max_pending} bytes")
        return events

    def finish(self) -> list[SseEvent]:
        """The last event when the stream ended without a blank line after it."""
        block = bytes(self._buffer)
        self._buffer.clear()
        self._scan = 0
        self._after_cr = False
        event = _parse_block(block) if block.strip() else None
        return [event] if event is not None else []


def _parse_block(block: bytes) -> SseEvent | None:
    event: str | None = None
    data: list[str] = []
    for raw in block.decode("utf-8", "replace").split("\n"):
        if not raw or raw[0] == ":":
            continue
        name, _, value = raw.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if event is None and not data:
        return None
    return SseEvent(event, "\n".join(data))


def encode_event(data: str, event: str | None = None) -> bytes:
    """One event as bytes: ``event:`` (when given), ``data:`` per line, blank line."""
    lines = [f"event: {event}"] if event is not None else []
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()
