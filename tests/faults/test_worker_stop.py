"""Faults of the worker process itself: SIGTERM at each stage, kill -9 between receiving a replicate and
storing it. The worker runs as its own process (``python -m worker.cli run``) against the real platform.

SIGTERM: the worker lets the stage in flight end (its outcome recorded and reported), starts no other,
exits 0; restarted on the same folder it completes the replicate with exactly one contribute and one
reveal. To stop it inside a transaction's stage, blocks are mined by hand (the transaction waits in
the node's pool) until the signal is sent, then mined again so that the stage can end.

kill -9: the test holds the write lock of the worker's SQLite store (another connection's
``BEGIN EXCLUSIVE``), so the replicate the scheduler just gave cannot be written; the worker is killed
while it has it only in memory, the lock released, the worker restarted: the scheduler's recovery
lists the replicate, the worker takes it back, and it completes with one contribution.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from devnet.platform import Platform
from tests.faults.process_checks import (
    RS,
    WorkerFolder,
    assert_completed_once,
    buy_sleep,
    log_text,
    nonce,
    until_completed,
    worker_folder,
)
from tests.support.e2e import WorkerProcess, worker_process
from worker.protocol.status import ChainContributionStatus

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _journalled(folder: WorkerFolder, task_id: str, kind: str) -> bool:
    if not folder.db.exists():
        return False
    with contextlib.closing(sqlite3.connect(f"file:{folder.db}?mode=ro", uri=True, timeout=1)) as conn:
        try:
            row = conn.execute(
                "SELECT 1 FROM transactions WHERE task_id = ? AND kind = ?", (task_id, kind)
            ).fetchone()
        except sqlite3.OperationalError:
            return False
    return row is not None


async def _sigterm(worker: WorkerProcess) -> None:
    worker.process.send_signal(signal.SIGTERM)


async def _wait_exit_0(worker: WorkerProcess) -> None:
    code = await asyncio.wait_for(worker.process.wait(), 90)
    assert code == 0, worker.output()


async def _stop_in(
    platform: Platform, worker: WorkerProcess, folder: WorkerFolder, task_id: str, stage: str
) -> None:
    """Send SIGTERM while the replicate is in ``stage``; returns once the worker exited 0."""
    anvil = platform.devnet.anvil
    if stage == "computing":
        await worker.until(lambda: folder.status(task_id) is RS.COMPUTING, within=90, what="app computing")
        await _sigterm(worker)
        await _wait_exit_0(worker)
        return
    if stage == "uploading":
        await worker.until(
            lambda: folder.status(task_id) in (RS.REVEALED, RS.RESULT_UPLOADING, RS.RESULT_UPLOADED),
            within=90,
            every=0.005,
            what="revealed, result upload next",
        )
        await _sigterm(worker)
        await _wait_exit_0(worker)
        return
    kind = "CONTRIBUTE" if stage == "contributing" else "REVEAL"
    await worker.until(lambda: folder.status(task_id) is RS.COMPUTING, within=90, what="app computing")
    await anvil.set_automine(False)
    try:
        if kind == "REVEAL":
            await worker.until(
                lambda: _journalled(folder, task_id, "CONTRIBUTE"), within=90, what="contribute sent"
            )

            async def contributed() -> bool:
                await anvil.mine()
                contribution = await platform.toolkit.view_contribution(task_id, folder.wallet)
                return contribution.status is not ChainContributionStatus.UNSET

            await worker.until(contributed, within=60, every=0.1, what="contribute mined")
        await worker.until(
            lambda: _journalled(folder, task_id, kind), within=90, every=0.005, what=f"{kind} sent"
        )
        await _sigterm(worker)
    finally:
        await anvil.mine()
        await anvil.set_automine(True)
    await _wait_exit_0(worker)


@pytest.mark.parametrize(
    "stage",
    ["computing", "contributing", "revealing", "uploading"],
)
async def test_sigterm_at_a_stage_drains_exits_0_and_the_restart_completes(
    platform: Platform, tmp_path: Path, stage: str
) -> None:
    folder = worker_folder(platform, tmp_path)
    before = await nonce(platform, folder.wallet)
    first_log = tmp_path / "worker-1.log"
    async with worker_process(folder.env_file, first_log) as first:
        await first.until(
            lambda: "joined scheduler" in log_text(first_log), within=90, every=0.2, what="joined"
        )
        task_id = await buy_sleep(platform, 2)
        await _stop_in(platform, first, folder, task_id, stage)
    text = log_text(first_log)
    assert "Traceback" not in text, text[-3000:]
    assert "worker stopped" in text
    stopped_at = folder.status(task_id)
    assert stopped_at is not None
    assert stopped_at is not RS.COMPLETED  # the restart has work left

    second_log = tmp_path / "worker-2.log"
    async with worker_process(folder.env_file, second_log) as second:
        await until_completed(platform, second, folder, task_id)
        await second.stop()
    await assert_completed_once(platform, folder, task_id, before)


@contextlib.contextmanager
def _write_lock(db: Path) -> Iterator[None]:
    """Another connection's exclusive transaction: the worker's writes wait (then fail) while it is held."""
    conn = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        conn.close()


async def test_kill_9_between_receiving_and_storing_a_replicate_it_is_taken_back(
    platform: Platform, tmp_path: Path
) -> None:
    folder = worker_folder(platform, tmp_path)
    before = await nonce(platform, folder.wallet)
    first_log = tmp_path / "worker-1.log"
    async with worker_process(folder.env_file, first_log) as first:
        await first.until(
            lambda: "joined scheduler" in log_text(first_log), within=90, every=0.2, what="joined"
        )
        with _write_lock(folder.db):
            task_id = await buy_sleep(platform, 0)
            await first.until(
                lambda: platform.scheduler.state.replicate(task_id, folder.wallet) is not None,
                within=90,
                every=0.005,
                what="the scheduler gave the replicate to the worker",
            )
            assert folder.status(task_id) is None  # received, not stored: the lock holds the write back
            await first.kill_9()
    assert folder.status(task_id) is None

    second_log = tmp_path / "worker-2.log"
    async with worker_process(folder.env_file, second_log) as second:
        await until_completed(platform, second, folder, task_id)
        await second.stop()
    assert "taken back from the scheduler" in log_text(second_log)
    history = platform.scheduler.replicate_history(task_id, folder.wallet)
    assert RS.RECOVERING in history
    assert RS.STARTED in history[history.index(RS.RECOVERING) :]
    await assert_completed_once(platform, folder, task_id, before)
