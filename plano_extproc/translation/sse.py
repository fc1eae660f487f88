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


_SEPARATORS = (b"\n\n", b"\r\n\r\n", b"\r\r")


class SseParser:
    """Bytes in, complete events out. `max_pending` bounds the partial event kept between chunks.

    Linear in the bytes fed, however they are split: each separator is searched for once past where it was
    last looked for, and the consumed prefix is dropped once per `feed`.
    """

    def __init__(self, max_pending: int = 16 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self._max_pending = max_pending
        # where each separator next occurs in the buffer; -1: nowhere in it (search only new bytes)
        self._next = [-1] * len(_SEPARATORS)

    def feed(self, chunk: bytes) -> list[SseEvent]:
        buf, nxt = self._buffer, self._next
        old_len = len(buf)
        buf += chunk
        for k, sep in enumerate(_SEPARATORS):
            if nxt[k] < 0:
                nxt[k] = buf.find(sep, max(0, old_len - len(sep) + 1))
        events: list[SseEvent] = []
        start = 0
        while True:
            end, k = -1, -1
            for j, position in enumerate(nxt):
                if position >= 0 and (end < 0 or position < end):
                    end, k = position, j
            if end < 0:
                break
            block = buf[start:end]
            start = end + len(_SEPARATORS[k])
            for j, sep in enumerate(_SEPARATORS):
                if 0 <= nxt[j] < start:
                    nxt[j] = buf.find(sep, start)
            event = _parse_block(block)
            if event is not None:
                events.append(event)
        if start:
            del buf[:start]
            self._next = [p - start if p >= 0 else -1 for p in nxt]
        if len(buf) > self._max_pending:
            raise ValueError(f"an SSE event is longer than {self._max_pending} bytes")
        return events

    def finish(self) -> list[SseEvent]:
        """The last event when the stream ended without a blank line after it."""
        block, self._buffer = self._buffer, bytearray()
        self._next = [-1] * len(_SEPARATORS)
        event = _parse_block(block) if block.strip() else None
        return [event] if event is not None else []


def _parse_block(block: bytes | bytearray) -> SseEvent | None:
    event: str | None = None
    data: list[str] = []
    # bytes.splitlines ends lines at CR, LF and CRLF only - the SSE line ends. (str.splitlines would also
    # split at U+2028, U+2029 and U+0085, which JSON carries unescaped inside strings.)
    for raw in block.splitlines():
        if not raw or raw.startswith(b":"):
            continue
        name, _, value = raw.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"event":
            event = value.decode("utf-8", "replace")
        elif name == b"data":
            data.append(value.decode("utf-8", "replace"))
    if event is None and not data:
        return None
    return SseEvent(event, "\n".join(data))


def encode_event(data: str, event: str | None = None) -> bytes:
    """One event as bytes: ``event:`` (when given), ``data:`` per line, blank line."""
    lines = [f"event: {event}"] if event is not None else []
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()
