"""Server-sent events, read incrementally and written back. Pure.

Chunks may split lines, events and UTF-8 anywhere; `SseParser.feed` keeps the partial tail and returns
only complete events. Comment lines (``:``) and ``id``/``retry`` fields are dropped: no provider stream we
translate carries meaning in them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str | None  # the ``event:`` field, None when absent (OpenAI streams)
    data: str  # the ``data:`` lines joined with "\n"


class SseParser:
    """Bytes in, complete events out. `max_pending` bounds the partial event kept between chunks."""

    def __init__(self, max_pending: int = 16 * 1024 * 1024) -> None:
        self._buffer = b""
        self._max_pending = max_pending

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buffer += chunk
        events: list[SseEvent] = []
        while True:
            end, sep_len = _event_end(self._buffer)
            if end < 0:
                break
            block, self._buffer = self._buffer[:end], self._buffer[end + sep_len :]
            event = _parse_block(block)
            if event is not None:
                events.append(event)
        if len(self._buffer) > self._max_pending:
            raise ValueError(f"an SSE event is longer than {self._max_pending} bytes")
        return events

    def finish(self) -> list[SseEvent]:
        """The last event when the stream ended without a blank line after it."""
        block, self._buffer = self._buffer, b""
        event = _parse_block(block) if block.strip() else None
        return [event] if event is not None else []


def _event_end(buffer: bytes) -> tuple[int, int]:
    """Where the first event ends (index of its blank-line separator) and the separator's length."""
    best, best_len = -1, 0
    for sep in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        i = buffer.find(sep)
        if i >= 0 and (best < 0 or i < best):
            best, best_len = i, len(sep)
    return best, best_len


def _parse_block(block: bytes) -> SseEvent | None:
    event: str | None = None
    data: list[str] = []
    for raw in block.decode("utf-8", "replace").splitlines():
        if not raw or raw.startswith(":"):
            continue
        name, _, value = raw.partition(":")
        if value.startswith(" "):
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
