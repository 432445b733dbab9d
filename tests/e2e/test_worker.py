"""End to end: a real worker process loop joins the development scheduler and completes tasks on chain.

Real anvil with the real PoCo contracts, real Docker with locally built images, the development
scheduler and result proxy over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devnet.core.state import TaskStatus
from devnet.images import HELLO
from devnet.platform import RLC, Platform, buy
from tests.support import until
from tests.support.e2e import running_worker
from worker.protocol.status import ChainTaskStatus, ReplicateStatus

pytestmark = pytest.mark.e2e

RS = ReplicateStatus


async def test_one_task_from_purchase_to_completed(platform: Platform, tmp_path: Path) -> None:
    toolkit = platform.toolkit
    wallet = platform.workers[0].address
    stake_before, locked_before = await toolkit.view_account(wallet)
    async with running_worker(platform, 0, tmp_path / "worker") as worker:
        purchase = await buy(platform.info(), image=HELLO.tag, args="devnet", workerpool_price=2 * RLC)
        task_id = purchase.task_ids[0]
        await until(
            lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
            within=90,
            what=f"task {task_id} COMPLETED",
        )
        # PLEASE_COMPLETE follows the task's completion: a stop in between leaves the replicate at
        # RESULT_UPLOADED until the next start completes it, so stop once the worker reported COMPLETED.
        await until(
            lambda: RS.COMPLETED in platform.scheduler.replicate_history(task_id, wallet),
            within=30,
            what=f"replicate of {task_id} COMPLETED",
        )
        assert await worker.shutdown() == 0

    chain_task = await toolkit.view_task(task_id)
    assert chain_task.status is ChainTaskStatus.COMPLETED
    link = json.loads(chain_task.results.decode())
    assert link["storage"] == "ipfs"
    assert link["location"].startswith("/ipfs/Qm")
    assert chain_task.results.decode() == f'{{ "storage": "ipfs", "location": "{link["location"]}" }}'

    stake_after, locked_after = await toolkit.view_account(wallet)
    assert stake_after - stake_before == 2 * RLC * 99 // 100  # the whole worker share of a single-worker task
    assert locked_after == locked_before

    assert platform.scheduler.replicate_history(task_id, wallet) == [
        RS.CREATED, RS.STARTING, RS.STARTED, RS.APP_DOWNLOADING, RS.APP_DOWNLOADED, RS.DATA_DOWNLOADING,
        RS.DATA_DOWNLOADED, RS.COMPUTING, RS.COMPUTED, RS.CONTRIBUTING, RS.CONTRIBUTED, RS.REVEALING, RS.REVEALED,
        RS.RESULT_UPLOAD_REQUESTED, RS.RESULT_UPLOADING, RS.RESULT_UPLOADED, RS.COMPLETING, RS.COMPLETED,
    ]  # fmt: skip
    # The task folder is purged once the task is completed.
    assert not (tmp_path / "worker" / worker.name / task_id).exists()
