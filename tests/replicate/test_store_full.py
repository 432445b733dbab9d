"""The replicate store on a disk that is full: writes wait for space, whole, in order (unit tests).

The SQLite file is real; a wrapper around its connection (``FullDisk``) refuses the first writes with
SQLite's own "database or disk is full", as a full file system makes it answer. The real full file system is
tests/faults/test_disk.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.support import until
from worker.protocol.status import ReplicateStatus
from worker.replicate import store as store_module
from worker.replicate.store import ReplicateStore

TASK = "0x" + "ab" * 32


class FullDisk:
    """Delegates to a real connection; its first ``refusals`` writing statements fail as on a full disk."""

    def __init__(self, conn: sqlite3.Connection, refusals: int) -> None:
        self._conn = conn
        self.refusals = refusals

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if self.refusals > 0 and sql.lstrip().upper().startswith(("INSERT", "UPDATE")):
            self.refusals -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def __enter__(self) -> FullDisk:
        self._conn.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._conn.__exit__(*exc)

    def close(self) -> None:
        self._conn.close()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "FULL_RETRY_FIRST", 0.05)
    monkeypatch.setattr(store_module, "FULL_RETRY_MAX", 0.05)


async def test_an_admission_on_a_full_disk_waits_for_space_and_is_written_whole_once(tmp_path: Path) -> None:
    store = await ReplicateStore.open(tmp_path / "w.sqlite3")
    assert store._conn is not None
    disk = FullDisk(store._conn, refusals=10**6)
    store._conn = disk  # type: ignore[assignment]
    adding = asyncio.create_task(store.add(TASK, {"chainTaskId": TASK}))

    await until(lambda: store.full is not None)
    waiting = store.full or ""
    assert "is full" in waiting
    assert "w.sqlite3" in waiting
    assert "free space" in waiting
    assert not adding.done()
    disk.refusals = 0  # space freed

    assert await adding is True
    assert store.full is None
    record = await store.get(TASK)
    assert record is not None
    assert record.status is ReplicateStatus.CREATED
    assert await store.history(TASK) == [ReplicateStatus.CREATED]
    await store.close()


async def test_a_status_refused_half_way_leaves_nothing_and_is_written_once_space_is_back(
    tmp_path: Path,
) -> None:
    store = await ReplicateStore.open(tmp_path / "w.sqlite3")
    await store.add(TASK, {"chainTaskId": TASK})
    assert store._conn is not None
    real = store._conn
    # The UPDATE goes through, the INSERT of the history line is refused: the transaction rolls back whole.
    disk = FullDisk(real, refusals=0)
    original = disk.execute
    calls = {"n": 0}

    def second_write_refused(sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.lstrip().upper().startswith("INSERT") and calls["n"] < 2:
            calls["n"] += 1
            raise sqlite3.OperationalError("database or disk is full")
        return original(sql, *args)

    disk.execute = second_write_refused  # type: ignore[method-assign]
    store._conn = disk  # type: ignore[assignment]

    await store.set_status(TASK, ReplicateStatus.STARTING)

    assert calls["n"] == 2
    assert await store.history(TASK) == [ReplicateStatus.CREATED, ReplicateStatus.STARTING]
    record = await store.get(TASK)
    assert record is not None
    assert record.status is ReplicateStatus.STARTING
    await store.close()


async def test_other_sqlite_errors_are_not_waited_on(tmp_path: Path) -> None:
    store = await ReplicateStore.open(tmp_path / "w.sqlite3")

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await store._run(broken)
    assert store.full is None
    await store.close()
