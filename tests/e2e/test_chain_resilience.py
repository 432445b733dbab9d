"""End to end: the worker's chain side survives what operators meet, on the real platform.

Real anvil with the real PoCo contracts, real Docker, the development scheduler and result proxy over HTTP
on 127.0.0.1. The node is stopped and started again from a dump of its state on the same port; the push
channel is cut by closing the scheduler's broker (it refuses new sessions), so the module's last test is
the one that cuts it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devnet.anvil import Anvil
from devnet.core.state import TaskStatus
from devnet.images import SLEEP
from devnet.platform import Platform, buy, worker_env, write_env_file
from tests.support import until
from tests.support.e2e import RunningWorker
from worker.app import run_worker
from worker.config import load_settings
from worker.protocol.status import ChainContributionStatus, ReplicateStatus

pytestmark = pytest.mark.e2e

RS = ReplicateStatus


@contextlib.asynccontextmanager
async def chain_worker(platform: Platform, index: int, base_dir: Path) -> AsyncIterator[RunningWorker]:
    # A name of its own: a worker removes the containers left under its name when it starts.
    env = worker_env(platform.info(), index, base_dir) | {
        "IEXEC_WORKER_CHAIN_POLL_PERIOD": "PT0.5S",
        "IEXEC_WORKER_NAME": f"chain-resilience-{index}",
    }
    settings = await asyncio.to_thread(load_settings, write_env_file(base_dir / ".env", env))
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop=stop, install_signals=False), name=f"worker-{index}")
    worker = RunningWorker(task, stop, platform.workers[index].address, base_dir)
    try:
        yield worker
    finally:
        stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), 60)
        if not task.done():
            task.cancel()


def _reached(platform: Platform, task_id: str, wallet: str, status: ReplicateStatus) -> bool:
    return status in platform.scheduler.replicate_history(task_id, wallet)


async def test_the_node_restarting_in_the_middle_of_a_pipeline_does_not_fail_the_replicate(
    platform: Platform, tmp_path: Path
) -> None:
    wallet = platform.workers[0].address
    async with chain_worker(platform, 0, tmp_path / "worker") as worker:
        purchase = await buy(platform.info(), image=SLEEP.tag, args="4")
        task_id = purchase.task_ids[0]
        await until(lambda: _reached(platform, task_id, wallet, RS.COMPUTING), within=60, what="COMPUTING")
        node = platform.devnet.anvil
        state = tmp_path / "state.json"
        await node.dump_state(state)
        await node.stop()
        await asyncio.sleep(2)  # the outage itself: the app keeps computing meanwhile
        platform.devnet.anvil = await Anvil.start(port=node.port, load_state=state)

        await until(
            lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
            within=120,
            what=f"task {task_id} COMPLETED after the node came back",
        )
        assert not worker.task.done()

    contribution = await platform.toolkit.view_contribution(task_id, wallet)
    assert contribution.status is ChainContributionStatus.PROVED


async def test_consensus_reached_while_the_push_channel_is_cut_is_still_revealed(
    platform: Platform, tmp_path: Path
) -> None:
    wallet = platform.workers[1].address
    async with chain_worker(platform, 1, tmp_path / "worker"):
        purchase = await buy(platform.info(), image=SLEEP.tag, args="3")
        task_id = purchase.task_ids[0]
        await until(lambda: _reached(platform, task_id, wallet, RS.COMPUTING), within=60, what="COMPUTING")
        await platform.scheduler.broker.close()  # PLEASE_REVEAL can now only come from the chain

        async def proved() -> bool:
            contribution = await platform.toolkit.view_contribution(task_id, wallet)
            return contribution.status is ChainContributionStatus.PROVED

        await until(proved, within=120, every=0.5, what="the contribution revealed on chain")
