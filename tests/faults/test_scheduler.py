"""Faults of the scheduler, seen by a real worker process: down at start-up, restarted mid-task, failing
with 500 for a while, refusing one status update with a 4xx.

The development scheduler keeps its state in memory, as iexec-core keeps it in MongoDB: ``go_down`` /
``come_back`` stop and restart its HTTP service and duties with the state kept (connections refused,
push sessions and JWTs gone), and its ``faults`` switch answers chosen requests with a chosen status
(devnet/core/faults.py). Each test asserts the outcome from the chain and the scheduler's record.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from devnet.core import FaultRule
from devnet.platform import Platform
from tests.faults.process_checks import (
    RS,
    assert_completed_once,
    assert_nothing_left,
    buy_sleep,
    log_text,
    nonce,
    until_completed,
    worker_folder,
)
from tests.support.e2e import worker_process

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest_asyncio.fixture(loop_scope="session")
async def scheduler_restored(platform: Platform) -> AsyncIterator[Platform]:
    """Whatever a test did to the scheduler, the next test finds it up and without faults."""
    try:
        yield platform
    finally:
        platform.scheduler.faults.clear()
        await platform.scheduler.come_back()


async def test_scheduler_down_at_start_up_then_up_joins_and_completes(
    scheduler_restored: Platform, tmp_path: Path
) -> None:
    platform = scheduler_restored
    folder = worker_folder(platform, tmp_path)
    before = await nonce(platform, folder.wallet)
    await platform.scheduler.go_down()
    log = tmp_path / "worker.log"
    async with worker_process(folder.env_file, log) as worker:
        await worker.until(
            lambda: log_text(log).count("cannot read the scheduler configuration yet") >= 2,
            within=60,
            every=0.2,
            what="the worker waiting for the scheduler, attempt after attempt",
        )
        assert worker.process.returncode is None
        await platform.scheduler.come_back()
        await worker.until(
            lambda: "joined scheduler" in log_text(log), within=90, every=0.2, what="the worker joined"
        )
        task_id = await buy_sleep(platform)
        await until_completed(platform, worker, folder, task_id)
        await worker.stop()
    assert "check that the scheduler at" in log_text(log)
    await assert_completed_once(platform, folder, task_id, before)


async def test_a_stop_while_waiting_for_the_scheduler_exits_0_cleanly(
    scheduler_restored: Platform, tmp_path: Path
) -> None:
    platform = scheduler_restored
    folder = worker_folder(platform, tmp_path)
    await platform.scheduler.go_down()
    log = tmp_path / "worker.log"
    async with worker_process(folder.env_file, log) as worker:
        await worker.until(
            lambda: "cannot read the scheduler configuration yet" in log_text(log),
            within=60,
            every=0.1,
            what="the worker waiting for the scheduler",
        )
        await worker.stop()  # SIGTERM: exit code 0 asserted there
    text = log_text(log)
    assert "Traceback" not in text, text[-3000:]
    assert "stopped before joining the scheduler" in text


async def test_a_stop_while_logging_in_exits_0_cleanly(scheduler_restored: Platform, tmp_path: Path) -> None:
    """The scheduler answers its configuration but fails every login: the stop still ends the wait."""
    platform = scheduler_restored
    folder = worker_folder(platform, tmp_path)
    platform.scheduler.faults.add(FaultRule(status=503, prefix="/workers/challenge"))
    log = tmp_path / "worker.log"
    async with worker_process(folder.env_file, log) as worker:
        await worker.until(
            lambda: log_text(log).count("cannot log in yet") >= 2, within=90, every=0.1, what="login retried"
        )
        await worker.stop()
    text = log_text(log)
    assert "Traceback" not in text, text[-3000:]
    assert "HTTP 503" in text


async def test_scheduler_restarted_mid_task_the_replicate_completes(
    scheduler_restored: Platform, tmp_path: Path
) -> None:
    platform = scheduler_restored
    folder = worker_folder(platform, tmp_path)
    before = await nonce(platform, folder.wallet)
    log = tmp_path / "worker.log"
    async with worker_process(folder.env_file, log) as worker:
        await worker.until(lambda: "joined scheduler" in log_text(log), within=90, every=0.2, what="joined")
        task_id = await buy_sleep(platform, 4)
        await worker.until(
            lambda: folder.status(task_id) is RS.COMPUTING, within=90, every=0.05, what="app computing"
        )
        await platform.scheduler.restart(down_for=3)
        await until_completed(platform, worker, folder, task_id)
        await worker.stop()
    await assert_completed_once(platform, folder, task_id, before)
    assert "token refused (401), logging in again" in log_text(log)  # the restart's JWTs died with it


async def _failing_for(platform: Platform, seconds: float, rule: FaultRule) -> None:
    platform.scheduler.faults.add(rule)
    await asyncio.sleep(seconds)  # the fault's duration, not a wait for a result
    platform.scheduler.faults.remove(rule)


async def _run_through_500s(platform: Platform, tmp_path: Path, seconds: float) -> None:
    folder = worker_folder(platform, tmp_path)
    before = await nonce(platform, folder.wallet)
    log = tmp_path / "worker.log"
    async with worker_process(folder.env_file, log) as worker:
        await worker.until(lambda: "joined scheduler" in log_text(log), within=90, every=0.2, what="joined")
        task_id = await buy_sleep(platform, 2)
        await worker.until(
            lambda: folder.status(task_id) is RS.COMPUTING, within=90, every=0.05, what="app computing"
        )
        rule = FaultRule(status=500)
        await _failing_for(platform, seconds, rule)
        assert rule.hits > 0
        await until_completed(platform, worker, folder, task_id)
        await worker.stop()
    await assert_completed_once(platform, folder, task_id, before)
    assert "HTTP 500" in log_text(log)


async def test_scheduler_answering_500_for_15_s_the_replicate_completes(
    scheduler_restored: Platform, tmp_path: Path
) -> None:
    await _run_through_500s(scheduler_restored, tmp_path, 15)


@pytest.mark.slow_fault
@pytest.mark.timeout(400)
async def test_scheduler_answering_500_for_a_minute_the_replicate_completes(
    scheduler_restored: Platform, tmp_path: Path
) -> None:
    await _run_through_500s(scheduler_restored, tmp_path, 60)


async def test_a_4xx_to_one_status_update_the_replicate_goes_on(
    scheduler_restored: Platform, tmp_path: Path
) -> None:
    platform = scheduler_restored
    folder = worker_folder(platform, tmp_path)
    before = await nonce(platform, folder.wallet)
    log = tmp_path / "worker.log"
    rule = FaultRule(status=409, contains="/updateStatus", method="POST", times=1)
    async with worker_process(folder.env_file, log) as worker:
        await worker.until(lambda: "joined scheduler" in log_text(log), within=90, every=0.2, what="joined")
        task_id = await buy_sleep(platform, 1)
        await worker.until(
            lambda: folder.status(task_id) is RS.COMPUTING, within=90, every=0.05, what="app computing"
        )
        platform.scheduler.faults.add(rule)  # the next status update (COMPUTED) is refused once
        await until_completed(platform, worker, folder, task_id)
        await worker.stop()
    assert rule.hits == 1
    assert "HTTP 409" in log_text(log)
    await assert_completed_once(platform, folder, task_id, before)
    await assert_nothing_left(folder, task_id)
