"""End to end: what a worker operator expects from a worker that succeeds.

Real anvil with the real PoCo contracts, real Docker with locally built images, the development
scheduler and result proxy over HTTP on 127.0.0.1, and a real local registry for the pull scenario.
Every task here ends COMPLETED, so the tests can share one platform without leaving work behind.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from devnet.core.state import TaskStatus
from devnet.images import HELLO, SLEEP
from devnet.platform import RLC, Platform, buy
from tests.support import until
from tests.support.docker import docker_cli
from tests.support.e2e import computing_interval, local_registry, running_worker
from worker.protocol.status import ChainContributionStatus, ChainTaskStatus, ReplicateStatus

pytestmark = pytest.mark.e2e

RS = ReplicateStatus


def _completed(platform: Platform, *task_ids: str) -> bool:
    return all(platform.scheduler.task_status(t) is TaskStatus.COMPLETED for t in task_ids)


async def test_three_tasks_run_at_once_on_three_slots(platform: Platform, tmp_path: Path) -> None:
    wallet = platform.workers[0].address
    async with running_worker(platform, 0, tmp_path / "worker", slots=3) as worker:
        purchase = await buy(platform.info(), image=SLEEP.tag, args="3", volume=3)
        assert len(purchase.task_ids) == 3
        await until(
            lambda: _completed(platform, *purchase.task_ids), within=90, what="the three tasks COMPLETED"
        )
        assert await worker.shutdown() == 0

    for task_id in purchase.task_ids:
        assert (await platform.toolkit.view_task(task_id)).status is ChainTaskStatus.COMPLETED
    intervals = [computing_interval(platform, task_id, wallet) for task_id in purchase.task_ids]
    # The three apps ran side by side: every one started before any of them finished.
    assert max(start for start, _ in intervals) < min(end for _, end in intervals), intervals


async def test_two_workers_reach_consensus_and_both_are_rewarded(platform: Platform, tmp_path: Path) -> None:
    toolkit = platform.toolkit
    wallets = [platform.workers[1].address, platform.workers[2].address]
    before = {wallet: await toolkit.view_account(wallet) for wallet in wallets}
    async with contextlib.AsyncExitStack() as stack:
        workers = [
            await stack.enter_async_context(running_worker(platform, index, tmp_path / f"worker-{index}"))
            for index in (1, 2)
        ]
        # Fresh workers weigh 2 each (score 0): trust 3 needs both of them for consensus, trust 2 only one.
        purchase = await buy(platform.info(), image=HELLO.tag, args="consensus", trust=3)
        task_id = purchase.task_ids[0]
        await until(lambda: _completed(platform, task_id), within=90, what=f"task {task_id} COMPLETED")
        for worker in workers:
            assert await worker.shutdown() == 0

    chain_task = await toolkit.view_task(task_id)
    assert chain_task.status is ChainTaskStatus.COMPLETED
    assert sorted(chain_task.contributors) == sorted(wallets)
    hashes = set()
    for wallet in wallets:
        contribution = await toolkit.view_contribution(task_id, wallet)
        assert contribution.status is ChainContributionStatus.PROVED
        hashes.add(contribution.result_hash)
    assert len(hashes) == 1  # the same result, each sealed by its own wallet

    uploaders = []
    for wallet in wallets:
        history = platform.scheduler.replicate_history(task_id, wallet)
        assert RS.REVEALED in history
        assert history[-1] is RS.COMPLETED
        if RS.RESULT_UPLOADED in history:
            uploaders.append(wallet)
    assert len(uploaders) == 1

    # Each winner gets half of the workers' 99 % of the 2 RLC workerpool price, and its stake back.
    for wallet in wallets:
        stake, locked = await toolkit.view_account(wallet)
        assert stake - before[wallet][0] == 2 * RLC * 99 // 100 // 2
        assert locked == before[wallet][1]


async def test_trust_two_needs_a_single_fresh_worker(platform: Platform, tmp_path: Path) -> None:
    # PoCo: weight 2 for a fresh worker, consensus when 2 x trust > (1 + 2) x (trust - 1), true for trust 2.
    # The scheduler predicts the same and hands out one replicate only, though two workers ask.
    async with contextlib.AsyncExitStack() as stack:
        for index in (1, 2):
            await stack.enter_async_context(running_worker(platform, index, tmp_path / f"worker-{index}"))
        purchase = await buy(platform.info(), image=HELLO.tag, args="trust two", trust=2)
        task_id = purchase.task_ids[0]
        await until(lambda: _completed(platform, task_id), within=90, what=f"task {task_id} COMPLETED")

    chain_task = await platform.toolkit.view_task(task_id)
    assert chain_task.status is ChainTaskStatus.COMPLETED
    assert len(chain_task.contributors) == 1
    task = platform.scheduler.task(task_id)
    assert task is not None
    assert list(task.replicates) == list(chain_task.contributors)


async def test_app_pulled_from_a_local_registry(platform: Platform, tmp_path: Path) -> None:
    async with local_registry(tmp_path / "registry") as registry:
        image = f"{registry}/iexec-devnet/hello:registry"
        await docker_cli("image", "tag", HELLO.tag, image)
        await docker_cli("image", "push", image)
        await docker_cli("image", "rm", image)
        try:
            async with running_worker(platform, 0, tmp_path / "worker") as worker:
                purchase = await buy(platform.info(), image=image, args="registry")
                task_id = purchase.task_ids[0]
                await until(
                    lambda: _completed(platform, task_id), within=90, what=f"task {task_id} COMPLETED"
                )
                assert await worker.shutdown() == 0
            # The image is on this host only because the worker pulled it.
            code, _ = await docker_cli("image", "inspect", image, check=False)
            assert code == 0
        finally:
            await docker_cli("image", "rm", image, check=False)
    assert (await platform.toolkit.view_task(task_id)).status is ChainTaskStatus.COMPLETED
