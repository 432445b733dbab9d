"""End to end: a worker process killed with SIGKILL loses no replicate and never contributes twice.

The worker runs as its own process (``python -m worker.cli run``), as an operator runs it, against
real anvil with the real PoCo contracts, real Docker with locally built images, the development
scheduler and result proxy on 127.0.0.1. It is killed while the app computes and again right after
it records CONTRIBUTED; each time it restarts on the same folder and database.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from devnet.core.state import TaskStatus
from devnet.images import SLEEP
from devnet.platform import Platform, buy, worker_env, write_env_file
from tests.support import until
from tests.support.docker import container_exists
from tests.support.e2e import contribute_count, local_status, unique_worker_name, worker_process
from worker.compute import container_name
from worker.protocol.status import ChainContributionStatus, ChainTaskStatus, ReplicateStatus

pytestmark = pytest.mark.e2e

RS = ReplicateStatus
WORKER_NAME = unique_worker_name(0)


_CONTRIBUTED_OR_LATER = frozenset({
    RS.CONTRIBUTED, RS.REVEALING, RS.REVEALED, RS.RESULT_UPLOADING, RS.RESULT_UPLOADED, RS.COMPLETING, RS.COMPLETED,
})  # fmt: skip


async def test_kill_9_while_computing_and_after_contributing(platform: Platform, tmp_path: Path) -> None:
    info = platform.info()
    wallet = info.workers[0].address
    base = tmp_path / "worker"
    env_file = write_env_file(
        tmp_path / "worker.env", {**worker_env(info, 0, base), "IEXEC_WORKER_NAME": WORKER_NAME}
    )
    db = base / f"{WORKER_NAME}.sqlite3"
    w3 = platform.devnet.w3
    nonce_before = await w3.eth.get_transaction_count(w3.to_checksum_address(wallet))

    async with worker_process(env_file, tmp_path / "worker-1.log") as first:
        purchase = await buy(info, image=SLEEP.tag, args="2")
        task_id = purchase.task_ids[0]
        container = container_name(WORKER_NAME, task_id)
        await until(lambda: container_exists(container), within=60, every=0.05, what=f"{container} running")
        assert RS.COMPUTING in platform.scheduler.replicate_history(task_id, wallet), first.output()
        await first.kill_9()

    async with worker_process(env_file, tmp_path / "worker-2.log") as second:

        async def contributed() -> bool:
            status = await asyncio.to_thread(local_status, db, task_id)
            return status in _CONTRIBUTED_OR_LATER

        await second.until(contributed, within=60, every=0.005, what="CONTRIBUTED recorded by the worker")
        await second.kill_9()

    async with worker_process(env_file, tmp_path / "worker-3.log") as third:
        await third.until(
            lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
            within=60,
            what=f"task {task_id} COMPLETED",
        )
        await third.until(
            lambda: local_status(db, task_id) is RS.COMPLETED, within=20, what="replicate COMPLETED locally"
        )
        await third.stop()

    assert (await platform.toolkit.view_task(task_id)).status is ChainTaskStatus.COMPLETED
    assert await contribute_count(platform, task_id, wallet) == 1
    # One contribute and one reveal: nothing was signed twice.
    assert await w3.eth.get_transaction_count(w3.to_checksum_address(wallet)) - nonce_before == 2
    history = platform.scheduler.replicate_history(task_id, wallet)
    assert history.count(RS.CONTRIBUTED) == 1
    assert history[-1] is RS.COMPLETED
    assert not await container_exists(container)


def _journalled(db: Path, task_id: str, kind: str) -> bool:
    """True once the worker has written the signed transaction of ``kind`` to its journal."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:
        row = conn.execute(
            "SELECT 1 FROM transactions WHERE task_id = ? AND kind = ?", (task_id, kind)
        ).fetchone()
    return row is not None


@pytest.mark.parametrize(("kind", "killed_in"), [("CONTRIBUTE", RS.CONTRIBUTING), ("REVEAL", RS.REVEALING)])
async def test_kill_9_after_broadcasting(
    platform: Platform, tmp_path: Path, kind: str, killed_in: ReplicateStatus
) -> None:
    """The transaction is mined while the worker is down: the restarted worker follows it, signs no other."""
    info = platform.info()
    wallet = info.workers[0].address
    base = tmp_path / "worker"
    env = {**worker_env(info, 0, base), "IEXEC_WORKER_NAME": WORKER_NAME}
    env_file = write_env_file(tmp_path / "worker.env", env)
    db = base / f"{WORKER_NAME}.sqlite3"
    anvil, w3 = platform.devnet.anvil, platform.devnet.w3
    nonce_before = await w3.eth.get_transaction_count(w3.to_checksum_address(wallet))

    async with worker_process(env_file, tmp_path / "worker-1.log") as first:
        purchase = await buy(info, image=SLEEP.tag, args="1")
        task_id = purchase.task_ids[0]
        await until(lambda: local_status(db, task_id) is RS.COMPUTING, within=60, what="replicate COMPUTING")
        # Blocks are mined by hand from here on, so the transaction waits in the node's pool when the worker dies.
        await anvil.set_automine(False)
        try:
            if kind == "REVEAL":
                await first.until(
                    lambda: _journalled(db, task_id, "CONTRIBUTE"), within=60, what="contribute sent"
                )

                # The journal is written just before the broadcast: mine until the contribution is in.
                async def contributed() -> bool:
                    await anvil.mine()
                    contribution = await platform.toolkit.view_contribution(task_id, wallet)
                    return contribution.status is not ChainContributionStatus.UNSET

                await first.until(contributed, within=60, every=0.1, what="contribute mined")
            await first.until(
                lambda: _journalled(db, task_id, kind), within=60, every=0.005, what=f"{kind} sent"
            )
            assert local_status(db, task_id) is killed_in
            await first.kill_9()
        finally:
            await anvil.mine()
            await anvil.set_automine(True)

    async with worker_process(env_file, tmp_path / "worker-2.log") as second:
        await second.until(
            lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
            within=60,
            what=f"task {task_id} COMPLETED",
        )
        # PLEASE_COMPLETE follows the task's completion: stop once the replicate has acted on it.
        await second.until(
            lambda: local_status(db, task_id) is RS.COMPLETED, within=20, what="replicate COMPLETED locally"
        )
        await second.stop()

    assert (await platform.toolkit.view_task(task_id)).status is ChainTaskStatus.COMPLETED
    assert await contribute_count(platform, task_id, wallet) == 1
    # One contribute and one reveal: nothing was signed twice.
    assert await w3.eth.get_transaction_count(w3.to_checksum_address(wallet)) - nonce_before == 2
    assert platform.scheduler.replicate_history(task_id, wallet)[-1] is RS.COMPLETED


async def test_kill_9_after_uploading_the_result(platform: Platform, tmp_path: Path) -> None:
    """The task is finalized while the worker is down: its PLEASE_COMPLETE went to nobody, yet the replicate completes."""
    info = platform.info()
    wallet = info.workers[0].address
    base = tmp_path / "worker"
    env = {**worker_env(info, 0, base), "IEXEC_WORKER_NAME": WORKER_NAME}
    env_file = write_env_file(tmp_path / "worker.env", env)
    db = base / f"{WORKER_NAME}.sqlite3"
    anvil = platform.devnet.anvil

    async with worker_process(env_file, tmp_path / "worker-1.log") as first:
        purchase = await buy(info, image=SLEEP.tag, args="0")
        task_id = purchase.task_ids[0]
        await first.until(
            lambda: local_status(db, task_id) is RS.REVEALED, within=60, every=0.005, what="REVEALED"
        )
        # The scheduler's finalize waits for a block: the worker dies between its upload and the completion.
        await anvil.set_automine(False)
        try:
            await first.until(
                lambda: local_status(db, task_id) is RS.RESULT_UPLOADED, within=60, what="RESULT_UPLOADED"
            )
            await first.until(
                lambda: platform.scheduler.task_status(task_id) is TaskStatus.FINALIZING,
                within=30,
                what="finalize sent",
            )
            await first.kill_9()
        finally:
            await anvil.mine()
            await anvil.set_automine(True)
    await until(
        lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
        within=30,
        what="task COMPLETED",
    )

    async with worker_process(env_file, tmp_path / "worker-2.log") as second:
        await second.until(
            lambda: local_status(db, task_id) is RS.COMPLETED, within=30, what="replicate COMPLETED locally"
        )
        await second.stop()

    assert platform.scheduler.replicate_history(task_id, wallet)[-2:] == [RS.COMPLETING, RS.COMPLETED]
    assert not (base / WORKER_NAME / task_id).exists()
