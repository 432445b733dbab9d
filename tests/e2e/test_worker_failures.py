"""End to end: a worker whose replicates fail or are stopped leaves nothing behind.

Real anvil with the real PoCo contracts, real Docker with locally built images, the development
scheduler and result proxy over HTTP on 127.0.0.1. These tasks never complete, so this module has
its own platform; every test runs worker 0, which the scheduler never offers a task twice, so a
task left RUNNING by one test is not handed to the next. The contribution timeout moves the chain
clock and runs last.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devnet.accounts import Role, account
from devnet.core.state import TaskStatus
from devnet.images import FAIL, SLEEP
from devnet.platform import Platform, buy
from tests.support import until
from tests.support.docker import container_exists
from tests.support.e2e import running_worker
from worker.compute import container_name
from worker.protocol.status import (
    ChainContributionStatus,
    ChainTaskStatus,
    ReplicateStatus,
    ReplicateStatusCause,
)

pytestmark = pytest.mark.e2e

RS = ReplicateStatus
Cause = ReplicateStatusCause
WORKER = 0


def _history(platform: Platform, task_id: str) -> list[tuple[ReplicateStatus, ReplicateStatusCause | None]]:
    replicate = platform.scheduler.state.replicate(task_id, platform.workers[WORKER].address)
    return [(change.status, change.cause) for change in replicate.history] if replicate else []


def _ended(platform: Platform, task_id: str) -> bool:
    history = _history(platform, task_id)
    return bool(history) and history[-1][0] in (RS.ABORTED, RS.FAILED, RS.COMPLETED)


async def _assert_nothing_contributed(platform: Platform, task_id: str) -> None:
    chain_task = await platform.toolkit.view_task(task_id)
    assert chain_task.status is ChainTaskStatus.ACTIVE
    assert chain_task.contributors == ()
    contribution = await platform.toolkit.view_contribution(task_id, platform.workers[WORKER].address)
    assert contribution.status is ChainContributionStatus.UNSET


async def _create_category(platform: Platform, name: str, timeref: int) -> int:
    iexec = platform.toolkit.iexec
    receipt = await platform.toolkit.send(
        iexec.functions.createCategory(name, f'{{"name":"{name}"}}', timeref), account(Role.ADMIN)
    )
    return int(iexec.events.CreateCategory().process_receipt(receipt)[0]["args"]["catid"])


async def test_app_exiting_non_zero_without_a_result_ends_aborted_without_contribution(
    platform: Platform, tmp_path: Path
) -> None:
    async with running_worker(platform, WORKER, tmp_path / "worker") as worker:
        purchase = await buy(platform.info(), image=FAIL.tag, args="1")
        task_id = purchase.task_ids[0]
        await until(lambda: _ended(platform, task_id), within=60, what=f"replicate of {task_id} ended")
        assert await worker.shutdown() == 0

    # iexec-worker 9.2: COMPUTED whatever the exit code; no result, so the contribution fails, which
    # iexec-core refuses (CONTRIBUTE_FAILED never enters its history) and answers with PLEASE_ABORT.
    history = _history(platform, task_id)
    assert history[-3:] == [(RS.COMPUTED, None), (RS.CONTRIBUTING, None), (RS.ABORTED, Cause.UNKNOWN)]
    await _assert_nothing_contributed(platform, task_id)
    assert not await container_exists(container_name(worker.name, task_id))
    assert platform.scheduler.task_status(task_id) is not TaskStatus.COMPLETED


async def test_app_past_its_time_is_killed(platform: Platform, tmp_path: Path) -> None:
    category = await _create_category(platform, "TINY", timeref=2)
    async with running_worker(platform, WORKER, tmp_path / "worker") as worker:
        purchase = await buy(platform.info(), image=SLEEP.tag, args="60", category=category)
        task_id = purchase.task_ids[0]
        name = container_name(worker.name, task_id)
        await until(lambda: container_exists(name), within=30, every=0.1, what=f"container {name} running")
        await until(lambda: _ended(platform, task_id), within=30, what=f"replicate of {task_id} ended")
        assert await worker.shutdown() == 0

    history = _history(platform, task_id)
    assert history[-3:] == [(RS.COMPUTED, None), (RS.CONTRIBUTING, None), (RS.ABORTED, Cause.UNKNOWN)]
    replicate = platform.scheduler.state.replicate(task_id, platform.workers[WORKER].address)
    assert replicate is not None
    computed = next(change for change in replicate.history if change.status is RS.COMPUTED)
    assert computed.details is not None
    assert computed.details.exit_code == -1  # the reference's exit code of a timed-out app
    logs = platform.scheduler.task_logs(task_id)[platform.workers[WORKER].address]
    assert logs.stdout == "sleep: sleeping 60s\n"  # read after the kill, as the reference does
    await _assert_nothing_contributed(platform, task_id)
    assert not await container_exists(name)


async def test_contribution_timeout_stops_the_computing_app(platform: Platform, tmp_path: Path) -> None:
    """Moves the chain clock: keep it the last test of the module."""
    anvil = platform.devnet.anvil
    async with running_worker(platform, WORKER, tmp_path / "worker") as worker:
        purchase = await buy(platform.info(), image=SLEEP.tag, args="30")
        task_id = purchase.task_ids[0]
        name = container_name(worker.name, task_id)
        await until(lambda: container_exists(name), within=30, every=0.1, what=f"container {name} running")
        assert _history(platform, task_id)[-1][0] is RS.COMPUTING

        chain_task = await platform.toolkit.view_task(task_id)
        latest = await platform.devnet.w3.eth.get_block("latest")
        await anvil.increase_time(chain_task.contribution_deadline - int(latest["timestamp"]) + 1)
        await anvil.mine()

        await until(lambda: _ended(platform, task_id), within=20, what=f"replicate of {task_id} ended")
        assert await worker.shutdown() == 0

    assert _history(platform, task_id)[-1] == (RS.ABORTED, Cause.CONTRIBUTION_TIMEOUT)
    assert platform.scheduler.task_history(task_id)[-2:] == [
        TaskStatus.CONTRIBUTION_TIMEOUT,
        TaskStatus.FAILED,
    ]
    await _assert_nothing_contributed(platform, task_id)
    assert not await container_exists(name)
