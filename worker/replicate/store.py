"""Durable record of every replicate this worker holds, in SQLite.

Every step writes here before it acts on the world, so that a ``kill -9`` anywhere loses nothing:
the status reached, the authorization, the result digest, and each transaction *before* it is
broadcast (its signed bytes, so a restart re-broadcasts the very same transaction instead of
signing a second one). SQLite calls are short; they run in a worker thread behind one lock so the
event loop never blocks on the disk.

A write the disk has no room for (SQLITE_FULL) is rolled back whole and tried again, every few seconds
and for as long as it takes, still holding the lock so no later write overtakes it: the worker neither
exits nor loses a step, it waits for space. ``full`` says so meanwhile (the health and metrics read it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from worker.protocol.status import ReplicateStatus, ReplicateStatusCause

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replicates (
    task_id        TEXT PRIMARY KEY,
    status         TEXT NOT NULL,
    cause          TEXT,
    authorization  TEXT NOT NULL,
    result_digest  TEXT,
    callback_data  TEXT,
    result_link    TEXT,
    consensus_block INTEGER,
    sms_url        TEXT,
    final          INTEGER NOT NULL DEFAULT 0,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS status_log (
    task_id  TEXT NOT NULL,
    status   TEXT NOT NULL,
    cause    TEXT,
    at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS status_log_task ON status_log(task_id);
CREATE TABLE IF NOT EXISTS transactions (
    task_id  TEXT NOT NULL,
    kind     TEXT NOT NULL,
    tx_hash  TEXT NOT NULL,
    nonce    INTEGER NOT NULL,
    raw_tx   TEXT NOT NULL,
    sent_at  REAL NOT NULL,
    PRIMARY KEY (task_id, kind)
);
"""

FULL_RETRY_FIRST = 1.0
FULL_RETRY_MAX = 10.0
"""Seconds between two attempts of a write the disk had no room for."""
log = logging.getLogger("iexec.worker.store")

FINAL_LOCAL = frozenset({ReplicateStatus.COMPLETED, ReplicateStatus.FAILED, ReplicateStatus.ABORTED})


@dataclass(frozen=True)
class SentTransaction:
    task_id: str
    kind: str
    tx_hash: str
    nonce: int
    raw_tx: str
    sent_at: float


@dataclass(frozen=True, slots=True)
class StatusEntry:
    """One line of a replicate's history: the status entered, its cause, when (Unix time)."""

    status: ReplicateStatus
    cause: ReplicateStatusCause | None
    at: float


@dataclass(frozen=True)
class ReplicateRecord:
    task_id: str
    status: ReplicateStatus
    cause: ReplicateStatusCause | None
    authorization: dict[str, Any]
    result_digest: str | None = None
    callback_data: str | None = None
    result_link: str | None = None
    consensus_block: int | None = None
    sms_url: str | None = None
    final: bool = False
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


class ReplicateStore:
    """One SQLite file per worker; safe to open again after a crash."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = asyncio.Lock()
        self._conn: sqlite3.Connection | None = None
        self.full: str | None = None
        """While a write waits for disk space: what it waits for and the fix; None otherwise."""

    @classmethod
    async def open(cls, path: Path) -> ReplicateStore:
        store = cls(path)
        await asyncio.to_thread(store._open_sync)
        return store

    def _open_sync(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        # WAL + synchronous=FULL: a committed step survives power loss, readers never block the writer.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(replicates)")}
        if "sms_url" not in columns:  # a store written before TEE tasks
            conn.execute("ALTER TABLE replicates ADD COLUMN sms_url TEXT")
        self._conn = conn

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                await asyncio.to_thread(self._conn.close)
                self._conn = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError(f"replicate store {self._path} is closed")
            delay = FULL_RETRY_FIRST
            attempt = 0
            while True:
                try:
                    result = await asyncio.to_thread(fn, conn)
                except sqlite3.OperationalError as exc:
                    if not _disk_full(exc):
                        raise
                    attempt += 1
                    self.full = (
                        f"the disk holding the replicate store {self._path} is full ({exc}): its writes wait "
                        f"(attempt {attempt}, next in {delay:.0f} s); free space on that file system"
                    )
                    log.error("%s", self.full)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, FULL_RETRY_MAX)
                    continue
                if self.full is not None:
                    log.warning(
                        "replicate store %s writable again after %d attempt(s)", self._path, attempt + 1
                    )
                    self.full = None
                return result

    # -- replicates ---------------------------------------------------------------------------

    async def add(self, task_id: str, authorization: dict[str, Any], *, sms_url: str | None = None) -> bool:
        """Record a new replicate as CREATED; False when this task is already known."""
        now = time.time()

        def insert(conn: sqlite3.Connection) -> bool:
            # One transaction: a write the disk refuses half-way leaves nothing behind to be tried again.
            with conn:
                conn.execute("BEGIN")
                cur = conn.execute(
                    "INSERT OR IGNORE INTO replicates"
                    " (task_id, status, authorization, sms_url, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (task_id, ReplicateStatus.CREATED.value, json.dumps(authorization), sms_url, now, now),
                )
                if cur.rowcount:
                    conn.execute(
                        "INSERT INTO status_log (task_id, status, cause, at) VALUES (?, ?, NULL, ?)",
                        (task_id, ReplicateStatus.CREATED.value, now),
                    )
                return bool(cur.rowcount)

        return await self._run(insert)

    async def set_status(
        self, task_id: str, status: ReplicateStatus, cause: ReplicateStatusCause | None = None
    ) -> None:
        now = time.time()
        final = int(status in FINAL_LOCAL)

        def update(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN")
                conn.execute(
                    "UPDATE replicates SET status = ?, cause = ?, final = ?, updated_at = ? WHERE task_id = ?",
                    (status.value, cause.value if cause else None, final, now, task_id),
                )
                conn.execute(
                    "INSERT INTO status_log (task_id, status, cause, at) VALUES (?, ?, ?, ?)",
                    (task_id, status.value, cause.value if cause else None, now),
                )

        await self._run(update)

    async def update_fields(self, task_id: str, **fields: Any) -> None:
        allowed = {"result_digest", "callback_data", "result_link", "consensus_block", "authorization"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown replicate fields: {sorted(unknown)}")
        values = {k: json.dumps(v) if k == "authorization" else v for k, v in fields.items()}
        assignments = ", ".join(f"{k} = ?" for k in values)

        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"UPDATE replicates SET {assignments}, updated_at = ? WHERE task_id = ?",
                (*values.values(), time.time(), task_id),
            )

        await self._run(update)

    async def get(self, task_id: str) -> ReplicateRecord | None:
        def select(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = conn.execute(
                f"SELECT {_COLUMNS} FROM replicates WHERE task_id = ?", (task_id,)
            ).fetchone()
            return row

        row = await self._run(select)
        return _record(row) if row else None

    async def unfinished(self) -> list[ReplicateRecord]:
        def select(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                f"SELECT {_COLUMNS} FROM replicates WHERE final = 0 ORDER BY created_at"
            ).fetchall()

        return [_record(r) for r in await self._run(select)]

    async def history(self, task_id: str) -> list[ReplicateStatus]:
        def select(conn: sqlite3.Connection) -> list[tuple[str]]:
            return conn.execute(
                "SELECT status FROM status_log WHERE task_id = ? ORDER BY rowid", (task_id,)
            ).fetchall()

        return [ReplicateStatus(s) for (s,) in await self._run(select)]

    async def count_by_status(self) -> dict[ReplicateStatus, int]:
        def select(conn: sqlite3.Connection) -> list[tuple[str, int]]:
            return conn.execute("SELECT status, COUNT(*) FROM replicates GROUP BY status").fetchall()

        return {ReplicateStatus(s): n for s, n in await self._run(select)}

    async def recent(self, limit: int) -> list[ReplicateRecord]:
        """The replicates changed last, newest first (what the status page lists)."""

        def select(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                f"SELECT {_COLUMNS} FROM replicates ORDER BY updated_at DESC LIMIT ?", (limit,)
            ).fetchall()

        return [_record(r) for r in await self._run(select)]

    async def timelines(self, task_ids: list[str]) -> dict[str, list[StatusEntry]]:
        """Every status each replicate went through, oldest first, with when it was entered."""
        if not task_ids:
            return {}
        marks = ", ".join("?" for _ in task_ids)

        def select(conn: sqlite3.Connection) -> list[tuple[str, str, str | None, float]]:
            return conn.execute(
                f"SELECT task_id, status, cause, at FROM status_log WHERE task_id IN ({marks}) ORDER BY rowid",
                task_ids,
            ).fetchall()

        found: dict[str, list[StatusEntry]] = {task_id: [] for task_id in task_ids}
        for task_id, status, cause, at in await self._run(select):
            found[task_id].append(
                StatusEntry(ReplicateStatus(status), ReplicateStatusCause(cause) if cause else None, at)
            )
        return found

    async def recent_failures(self, limit: int) -> list[tuple[str, StatusEntry]]:
        """The latest statuses entered with a cause (a failure and why), newest first."""

        def select(conn: sqlite3.Connection) -> list[tuple[str, str, str, float]]:
            return conn.execute(
                "SELECT task_id, status, cause, at FROM status_log WHERE cause IS NOT NULL"
                " ORDER BY rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()

        return [
            (task_id, StatusEntry(ReplicateStatus(status), ReplicateStatusCause(cause), at))
            for task_id, status, cause, at in await self._run(select)
        ]

    async def recent_transactions(self, limit: int) -> list[SentTransaction]:
        """The latest transactions recorded (one per task and kind, its last version), newest first."""

        def select(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                "SELECT task_id, kind, tx_hash, nonce, raw_tx, sent_at FROM transactions"
                " ORDER BY sent_at DESC LIMIT ?",
                (limit,),
            ).fetchall()

        return [SentTransaction(*row) for row in await self._run(select)]

    # -- transactions (the journal of what was broadcast) -----------------------------------------

    async def record_sent(self, task_id: str, kind: str, tx_hash: str, nonce: int, raw_tx: str) -> None:
        """Called *before* broadcasting; a second record of the same (task, kind) is refused."""

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO transactions (task_id, kind, tx_hash, nonce, raw_tx, sent_at) VALUES (?, ?, ?, ?, ?, ?)",
                (task_id, kind, tx_hash, nonce, raw_tx, time.time()),
            )

        await self._run(insert)

    async def replace_sent(self, task_id: str, kind: str, tx_hash: str, nonce: int, raw_tx: str) -> None:
        """A replacement (same nonce, higher fee) supersedes the recorded transaction."""

        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE transactions SET tx_hash = ?, nonce = ?, raw_tx = ?, sent_at = ? WHERE task_id = ? AND kind = ?",
                (tx_hash, nonce, raw_tx, time.time(), task_id, kind),
            )

        await self._run(update)

    async def sent(self, task_id: str, kind: str) -> SentTransaction | None:
        def select(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = conn.execute(
                "SELECT task_id, kind, tx_hash, nonce, raw_tx, sent_at FROM transactions"
                " WHERE task_id = ? AND kind = ?",
                (task_id, kind),
            ).fetchone()
            return row

        row = await self._run(select)
        return SentTransaction(*row) if row else None


_COLUMNS = (
    "task_id, status, cause, authorization, result_digest, callback_data, result_link, consensus_block,"
    " sms_url, final, created_at, updated_at"
)


def _record(row: tuple[Any, ...]) -> ReplicateRecord:
    (
        task_id,
        status,
        cause,
        authorization,
        digest,
        callback,
        link,
        block,
        sms_url,
        final,
        created,
        updated,
    ) = row
    return ReplicateRecord(
        task_id=task_id,
        status=ReplicateStatus(status),
        cause=ReplicateStatusCause(cause) if cause else None,
        authorization=json.loads(authorization),
        result_digest=digest,
        callback_data=callback,
        result_link=link,
        consensus_block=block,
        sms_url=sms_url,
        final=bool(final),
        created_at=created,
        updated_at=updated,
    )


def _disk_full(exc: sqlite3.OperationalError) -> bool:
    """SQLite's "database or disk is full" (SQLITE_FULL, whatever its extended code)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == sqlite3.SQLITE_FULL)
    return "disk is full" in str(exc)
