"""What each process of `test_workers_opening_a_new_session_file_together_all_start` runs: a module of
its own, so that the spawned processes import only this and the store."""

from __future__ import annotations

from typing import Any

from plano_extproc.session_sqlite import SqliteSessionStore


def open_store_at(path: str, barrier: Any) -> str:
    barrier.wait()
    try:
        SqliteSessionStore(path, 100)
    except Exception as exc:
        return repr(exc)
    return "ok"
