"""`routing.session_cache.type: memory` with several ext_proc worker processes: the pins of one gateway in a
SQLite file that its workers share (an adapter behind `affinity.SessionStore`).

The file lives in the gateway's private work directory (the supervisor's, `workers.py`) and only as long
as the gateway: it is a cache, not a database, so it is written without fsync (``synchronous=OFF``; a
crash of the host loses it, as it would lose the in-process map). WAL lets the workers read while one
writes; a write holds the lock for microseconds.

* **First decision wins**, across the workers as within one: a pin is written only when the key holds no
  live pin (an upsert that replaces only an expired row), and the worker whose pin lands second reads the
  first one back and answers with it (`pin`), as the Redis store does with ``SET NX``.
* **TTL from the first decision**: each row carries its expiry (``time.monotonic``, which is one clock
  for every process of the host); a hit does not extend it. An expired row is a miss and is replaced by
  the next pin.
* **Bounded like the in-process map**: at most ``session_max_entries`` rows; beyond that the least
  recently used go (a hit records its use; a trigger-kept row count makes the check O(1)).
* **Fail-open**: a SQLite error (a locked file past ``busy_timeout``, a full disk) never fails a request:
  the call answers as for a new session, and the failure is counted (``plano_affinity_store_errors_total``,
  backend ``memory``) and logged once per outage.

The statistics (hits, misses, pins stored and lost, evictions, expirations) are this process's own: the
supervisor's merged /metrics sums them over the workers; the entry count is the file's, the same in every
worker (merged as the maximum).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from plano_extproc.affinity import AffinityEntry, SessionStats, decode_entry, encode_entry

log = logging.getLogger(__name__)

#: how long a call waits for another worker's write lock before it fails open
BUSY_TIMEOUT_MS = 200
#: how long a worker's start-up waits for the file's set-up by the other workers starting with it
SETUP_TIMEOUT_S = 30.0
#: expired rows are swept on a pin at most this often (lookups ignore them anyway)
SWEEP_INTERVAL_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pins (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL NOT NULL, used REAL NOT NULL);
CREATE INDEX IF NOT EXISTS pins_used ON pins (used);
CREATE INDEX IF NOT EXISTS pins_expires ON pins (expires);
CREATE TABLE IF NOT EXISTS pin_count (n INTEGER NOT NULL);
INSERT INTO pin_count (n) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM pin_count);
CREATE TRIGGER IF NOT EXISTS pins_added AFTER INSERT ON pins BEGIN UPDATE pin_count SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS pins_removed AFTER DELETE ON pins BEGIN UPDATE pin_count SET n = n - 1; END;
"""

# written only when the key is free or its pin has expired: the first live decision wins
_PIN = (
    "INSERT INTO pins (key, value, expires, used) VALUES (?1, ?2, ?3, ?4) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires, used = excluded.used "
    "WHERE pins.expires <= ?4"
)


def prepare_session_file(path: str | Path) -> None:
    """Create the shared file in WAL mode with its schema, before the workers start: the workers then
    find it ready (the supervisor calls this; each worker's store checks it again, which costs one read
    when the file is ready)."""
    db = sqlite3.connect(str(path), timeout=SETUP_TIMEOUT_S, isolation_level=None)
    try:
        _prepare(db)
    finally:
        db.close()


def _prepare(db: sqlite3.Connection) -> None:
    """WAL mode and the schema, retried while other processes hold the file. Switching to WAL takes the
    file's exclusive lock and SQLite may answer SQLITE_BUSY at once, without waiting on ``busy_timeout``,
    when several processes open a new file together (a 2-worker gateway's start-up did, in CI); the mode
    is kept in the file, so a file already in WAL mode is not switched again."""
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    db.execute(f"PRAGMA busy_timeout = {int(SETUP_TIMEOUT_S * 1000)}")
    delay = 0.005
    while True:
        try:
            if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            db.execute("BEGIN IMMEDIATE")  # every worker creates the schema at start: one at a time
            try:
                for statement in _SCHEMA.strip().split(";\n"):
                    db.execute(statement)
                db.execute("COMMIT")
            finally:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            return
        except sqlite3.OperationalError as exc:
            message = str(exc)
            if ("locked" not in message and "busy" not in message) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


class SqliteSessionStore:
    """Pins shared by the worker processes of one gateway (see the module docstring)."""

    kind = "memory"

    def __init__(self, path: str | Path, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = str(path)
        self.max_entries = max_entries
        self._clock = clock
        self._stats = SessionStats()
        self._failing = False
        self._last_sweep = 0.0
        # isolation_level=None: autocommit, each statement its own transaction unless BEGIN says otherwise
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA synchronous = OFF")
        _prepare(self._db)
        self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    @property
    def stats(self) -> SessionStats:
        return self._stats

    def entries(self) -> int | None:
        try:
            row = self._db.execute("SELECT n FROM pin_count").fetchone()
        except sqlite3.Error:
            return None
        return int(row[0]) if row else 0

    def resize(self, max_entries: int) -> None:
        """A reloaded config's session_max_entries (trimmed on the next pin)."""
        self.max_entries = max_entries

    def _failed(self, operation: str, exc: sqlite3.Error) -> None:
        kind = "timeout" if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc) else "error"
        key = (operation, kind)
        self._stats.errors[key] = self._stats.errors.get(key, 0) + 1
        if not self._failing:
            self._failing = True
            self._stats.available = False
            log.error("the shared session file %s failed (%s: %s); sessions are routed as new until it answers", self.path, operation, exc)

    def _ok(self) -> None:
        if self._failing:
            self._failing = False
            self._stats.available = True
            log.info("the shared session file %s answers again", self.path)

    async def get(self, key: str) -> AffinityEntry | None:
        now = self._clock()
        try:
            row = self._db.execute("SELECT value, expires FROM pins WHERE key = ?", (key,)).fetchone()
            if row is not None and row[1] > now:
                self._db.execute("UPDATE pins SET used = ? WHERE key = ?", (now, key))
        except sqlite3.Error as exc:
            self._failed("get", exc)
            return None
        self._ok()
        if row is None:
            self._stats.misses += 1
            return None
        if row[1] <= now:  # expired: counted when swept
            self._stats.misses += 1
            return None
        entry = decode_entry(row[0])
        if entry is None:
            self._stats.misses += 1
            return None
        self._stats.hits += 1
        return entry

    async def pin(self, key: str, entry: AffinityEntry, ttl_seconds: float) -> AffinityEntry | None:
        now = self._clock()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                written = self._db.execute(_PIN, (key, encode_entry(entry), now + ttl_seconds, now)).rowcount
                held = None
                if written == 0:
                    row = self._db.execute("SELECT value FROM pins WHERE key = ?", (key,)).fetchone()
                    held = decode_entry(row[0]) if row is not None else None
                else:
                    self._trim(now)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self._failed("pin", exc)
            return None
        self._ok()
        if written:
            self._stats.stored += 1
            return None
        if held is None:  # a row we cannot read: leave it, answer with our own decision
            return None
        self._stats.conflicts += 1
        return held

    async def replace(self, key: str, entry: AffinityEntry, ttl_seconds: float) -> None:
        now = self._clock()
        try:
            self._db.execute(
                "INSERT INTO pins (key, value, expires, used) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "value = excluded.value, expires = excluded.expires, used = excluded.used",
                (key, encode_entry(entry), now + ttl_seconds, now),
            )
        except sqlite3.Error as exc:
            self._failed("replace", exc)
            return
        self._ok()
        self._stats.stored += 1

    def _trim(self, now: float) -> None:
        """Within a pin's transaction: expired rows (now and then), then the least recently used beyond the bound."""
        if now - self._last_sweep >= SWEEP_INTERVAL_S:
            self._last_sweep = now
            self._stats.expirations += self._db.execute("DELETE FROM pins WHERE expires <= ?", (now,)).rowcount
        count = int(self._db.execute("SELECT n FROM pin_count").fetchone()[0])
        excess = count - self.max_entries
        if excess > 0:
            self._stats.evictions += self._db.execute(
                "DELETE FROM pins WHERE key IN (SELECT key FROM pins ORDER BY used LIMIT ?)", (excess,)
            ).rowcount

    async def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error:
            pass
