"""What the processors of one proxied request share in-process, keyed by Envoy's x-request-id.

The downstream processor opens a record when it forwards a request; each upstream attempt notes which
model it went to and prepares itself from the kept `ForwardRequest` (so Envoy need not send the body
again); the response translator reads the client's body from it at the response headers. Once the response
has started there are no more attempts: the translator and the streaming observer let the kept body go
then. The record itself is closed by whichever of this process's readers learns the request ended — the
request's access-log entry (access_log.py, a second or so after the end; it may reach another process) or
the streaming observer at the end of a streamed answer — and parked while the translator has yet to read
it. Nothing depends on a close arriving: bounded by entries and by bytes (keys and kept bodies count), a
record nobody closes (observation off, the entry went to another process) expires after `ttl_seconds` or
is evicted, oldest first. A record that is missing (evicted, or another worker process served the first
phase) costs only speed: the upstream processor then reads the body from Envoy.

Envoy keeps an x-request-id the client sent, so two requests in flight may share one. Such a record keeps
no body at all (`open`): each attempt of either request reads its own body from Envoy, and no request is
ever prepared from another's conversation or credentials. Only the observers' attribution is then shared.

A record also remembers the config generation that opened it (`owner`, set through the view
`for_owner` returns): the server hands every later stream of that request (upstream attempts, the
translator, the observers) the same generation, so a config reload in between never mixes two configs
within one request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plano_extproc.forwarding import ForwardRequest
from plano_extproc.ttl_cache import TtlLruCache

#: per-record overhead beyond key and kept body, for the byte bound
_RECORD_BYTES = 400
#: how long a closed record waits for the response translator (it arrives within milliseconds)
_PARKED_SECONDS = 60.0


@dataclass(slots=True)
class RequestRecord:
    attempts: tuple[str, ...]  # the model of each attempt
    api: str  # client API name
    route: str | None
    started: float
    forward: ForwardRequest | None = None
    #: the client's parsed body, kept until the response when some attempt is translated (the response
    #: translators read the client's request: stream options, tool names)
    client_body: dict[str, Any] | None = None
    client_bytes: int = 0  # the JSON size of `client_body`, for the byte bound
    tried: int = 0  # the latest attempt number seen
    model: str = ""  # the model of the latest attempt
    #: the response translator has not read the record yet (set when `client_body` is kept)
    translation_pending: bool = False
    #: the config generation whose downstream processor opened the record (server.Generation)
    owner: object | None = None


def _weight(key: str, record: RequestRecord) -> int:
    weight = len(key) + _RECORD_BYTES
    if record.forward is not None:
        weight += len(record.forward.raw)
    if record.client_body is not None:
        weight += 3 * record.client_bytes  # a parsed body takes a few times its JSON size
    return weight


class InFlightRequests:
    def __init__(
        self,
        ttl_seconds: float = 3600.0,
        max_entries: int = 100_000,
        max_bytes: int = 256 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._records: TtlLruCache[str, RequestRecord] = TtlLruCache(
            ttl_seconds, max_entries, clock, max_bytes=max_bytes, weigh=_weight
        )
        #: records closed before the response translator read them (a streamed answer's observer can finish
        #: first; milliseconds, normally)
        self._parked: TtlLruCache[str, RequestRecord] = TtlLruCache(
            _PARKED_SECONDS, max(1, max_entries // 10), clock, max_bytes=max(1, max_bytes // 4), weigh=_weight
        )
        self._owner: object | None = None

    def for_owner(self, owner: object) -> InFlightRequests:
        """The same records; those opened through the view remember `owner`."""
        view = InFlightRequests.__new__(InFlightRequests)
        view._clock, view._records, view._parked, view._owner = self._clock, self._records, self._parked, owner
        return view

    def __len__(self) -> int:
        return len(self._records)

    @property
    def bytes(self) -> int:
        return self._records.bytes

    def open(
        self,
        request_id: str,
        attempts: tuple[str, ...],
        api: str,
        route: str | None,
        forward: ForwardRequest | None = None,
        client_body: dict[str, Any] | None = None,
    ) -> RequestRecord:
        existing = self._records.get(request_id)
        if existing is not None:
            # another request in flight carries this x-request-id: whose body a kept one is can no longer be
            # told, so neither request's is kept (their attempts read their own from Envoy)
            if existing.forward is not None or existing.client_body is not None:
                existing.forward = existing.client_body = None
                existing.client_bytes = 0
                self._records.put(request_id, existing)  # re-weighed
            return existing
        size = len(forward.raw) if forward is not None and client_body is not None else 0
        first = attempts[0] if attempts else ""
        record = RequestRecord(
            attempts, api, route, self._clock(), forward, client_body, size, model=first,
            translation_pending=client_body is not None, owner=self._owner,
        )
        if not self._records.put(request_id, record) and forward is not None:
            # too big to keep with its body: keep the rest, the retries read the body from Envoy
            record.forward = record.client_body = None
            record.translation_pending = False
            self._records.put(request_id, record)
        return record

    def get(self, request_id: str) -> RequestRecord | None:
        return self._records.get(request_id)

    def note_attempt(self, request_id: str, attempt: int, model: str) -> RequestRecord | None:
        record = self._records.get(request_id)
        if record is not None and attempt >= record.tried:
            record.tried, record.model = attempt, model
        return record

    def responding(self, request_id: str) -> None:
        """Response headers are on their way: no more attempts, so the kept body can go."""
        record = self._records.get(request_id)
        if record is not None and record.forward is not None:
            record.forward = None
            self._records.put(request_id, record)  # re-weighed

    def claim(self, request_id: str) -> RequestRecord | None:
        """The response translator's read, at the response headers: the record, open (its kept body goes: no
        more attempts) or parked by a close (then it goes)."""
        record = self._records.get(request_id)
        if record is not None:
            record.translation_pending = False
            if record.forward is not None:
                record.forward = None
                self._records.put(request_id, record)  # re-weighed
            return record
        record = self._parked.get(request_id)  # get: an expired one is gone
        if record is not None:
            self._parked.pop(request_id)
        return record

    @property
    def parked(self) -> int:
        """Closed records still waiting for the response translator."""
        return len(self._parked)

    def close(self, request_id: str) -> RequestRecord | None:
        """The request ended: the record goes (parked when the response translator has yet to read it)."""
        record = self._records.pop(request_id)
        if record is not None and record.translation_pending:
            record.forward = None
            self._parked.put(request_id, record)
        return record
