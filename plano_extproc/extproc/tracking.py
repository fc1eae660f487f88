"""What the processors of one proxied request share in-process, keyed by Envoy's x-request-id.

The downstream processor opens a record when it forwards a request; each upstream attempt notes which
model it went to; the response observer reads the record to attribute status, tokens and timing to the
model that answered, then closes it. Bounded: a record nobody closes (client gone, observer off) is
dropped after `ttl_seconds` or when `max_entries` is reached, oldest first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class RequestRecord:
    models: tuple[str, ...]
    api_format: str
    route: str | None
    started: float
    attempts: int = 0
    model: str = ""  # the model of the latest attempt
    extra: dict[str, object] = field(default_factory=dict)


class InFlightRequests:
    def __init__(self, ttl_seconds: float = 3600.0, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._records: OrderedDict[str, RequestRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def open(self, request_id: str, models: tuple[str, ...], api_format: str, route: str | None) -> RequestRecord:
        now = self._clock()
        record = RequestRecord(models, api_format, route, now, model=models[0] if models else "")
        self._records[request_id] = record
        self._records.move_to_end(request_id)
        while self._records:
            oldest_id, oldest = next(iter(self._records.items()))
            if len(self._records) <= self.max_entries and now - oldest.started < self.ttl_seconds:
                break
            del self._records[oldest_id]
        return record

    def get(self, request_id: str) -> RequestRecord | None:
        return self._records.get(request_id)

    def note_attempt(self, request_id: str, attempt: int, model: str) -> None:
        record = self._records.get(request_id)
        if record is not None and attempt >= record.attempts:
            record.attempts, record.model = attempt, model

    def close(self, request_id: str) -> RequestRecord | None:
        return self._records.pop(request_id, None)
