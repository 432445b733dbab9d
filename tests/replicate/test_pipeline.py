"""Unit tests of the replicate pipeline, driven by fakes of its ports.

The fake scheduler enforces the real transition graph and the never-twice rule and answers with the
real next-action table, so a status the pipeline sends out of order fails these tests.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support import until
from worker.protocol.errors import StepFailed
from worker.protocol.models import (
    ChainReceipt,
    ReplicateStatusDetails,
    Signature,
    TaskNotification,
    TaskNotificationExtra,
    WorkerpoolAuthorization,
)
from worker.protocol.status import (
    ReplicateStatus,
    ReplicateStatusCause,
    TaskAbortCause,
    TaskNotificationType,
    is_valid_transition,
    next_action,
)
from worker.replicate.pipeline import PipelineDeps, ReplicatePipeline
from worker.replicate.ports import ComputeOutcome, Stage, UploadOutcome
from worker.replicate.store import ReplicateStore

RS = ReplicateStatus
TNT = TaskNotificationType
Cause = ReplicateStatusCause
TASK = "0x" + "ab" * 32
AUTH = WorkerpoolAuthorization(
    chain_task_id=TASK,
    deal_id="0x" + "cd" * 32,
    task_index=0,
    worker_wallet="0x" + "11" * 20,
    signature=Signature(value="0x" + "22" * 65),
)


class FakeScheduler:
    def __init__(self) -> None:
        self.history: list[ReplicateStatus] = [RS.CREATED]
        self.details: dict[ReplicateStatus, ReplicateStatusDetails | None] = {}

    async def report(
        self, task_id: str, status: ReplicateStatus, details: ReplicateStatusDetails | None = None
    ) -> TaskNotificationType | None:
        if status in self.history:
            return next_action(status, details.cause if details else None)  # 208: the client derives it
        if status in (RS.CONTRIBUTE_FAILED, RS.REVEAL_FAILED) or not is_valid_transition(
            self.history[-1], status
        ):
            return TNT.PLEASE_ABORT
        self.history.append(status)
        self.details[status] = details
        return next_action(status, details.cause if details else None)


class FakeWork:
    def __init__(self) -> None:
        self.fail: dict[Stage, Cause] = {}
        self.calls: list[str] = []
        self.compute_gate: asyncio.Event | None = None
        self.purged = False

    async def precheck(self, task_id: str, stage: Stage) -> None:
        if stage in self.fail:
            raise StepFailed(self.fail[stage])

    async def download_app(self, task_id: str) -> None:
        self.calls.append("download_app")
        if Stage.DOWNLOAD_APP in self.fail:
            raise StepFailed(self.fail[Stage.DOWNLOAD_APP])

    async def download_data(self, task_id: str) -> None:
        self.calls.append("download_data")

    async def write_error_result(self, task_id: str, status: ReplicateStatus, cause: Cause) -> str:
        self.calls.append(f"error_result:{status}:{cause}")
        return "0x" + "ee" * 32

    async def compute(self, task_id: str) -> ComputeOutcome:
        self.calls.append("compute")
        if self.compute_gate is not None:
            await self.compute_gate.wait()
        return ComputeOutcome(exit_code=0, stdout="out", stderr="", result_digest="0x" + "dd" * 32)

    async def contribute(
        self, task_id: str, result_digest: str, authorization: WorkerpoolAuthorization
    ) -> ChainReceipt:
        self.calls.append(f"contribute:{result_digest}")
        return ChainReceipt(block_number=7, tx_hash="0x" + "01" * 32)

    async def reveal(self, task_id: str, result_digest: str, consensus_block: int) -> ChainReceipt:
        self.calls.append(f"reveal:{consensus_block}")
        return ChainReceipt(block_number=9, tx_hash="0x" + "02" * 32)

    async def upload(self, task_id: str, authorization: WorkerpoolAuthorization) -> UploadOutcome:
        self.calls.append("upload")
        return UploadOutcome(result_link='{ "storage": "ipfs", "location": "/ipfs/Qm" }')

    async def purge(self, task_id: str) -> None:
        self.purged = True


class Recorder:
    def __init__(self) -> None:
        self.moves: list[tuple[ReplicateStatus, ReplicateStatus]] = []
        self.stages: list[tuple[Stage, bool]] = []

    def status_changed(self, task_id: str, old: RS, new: RS, cause: Cause | None) -> None:
        self.moves.append((old, new))

    def stage_finished(self, stage: Stage, seconds: float, ok: bool) -> None:
        self.stages.append((stage, ok))

    def replicate_held(self, status: RS, held: bool) -> None:
        pass


def notification(action: TaskNotificationType, **extra: object) -> TaskNotification:
    return TaskNotification(
        chain_task_id=TASK,
        workers_address=[],
        task_notification_type=action,
        task_notification_extra=TaskNotificationExtra.model_validate(extra) if extra else None,
    )


@pytest.fixture
async def store(tmp_path: Path) -> ReplicateStore:
    s = await ReplicateStore.open(tmp_path / "worker.db")
    await s.add(TASK, AUTH.to_wire())
    return s


async def test_full_run_reports_the_scheduler_order(store: ReplicateStore) -> None:
    scheduler, work, recorder = FakeScheduler(), FakeWork(), Recorder()
    pipeline = ReplicatePipeline(TASK, PipelineDeps(store, scheduler, work, recorder))
    runner = asyncio.create_task(pipeline.run())
    pipeline.deliver(notification(TNT.PLEASE_START))
    await until(lambda: pipeline.status is RS.CONTRIBUTED)
    pipeline.deliver(notification(TNT.PLEASE_REVEAL, blockNumber=8))
    await until(lambda: pipeline.status is RS.REVEALED)
    scheduler.history.append(RS.RESULT_UPLOAD_REQUESTED)
    pipeline.deliver(notification(TNT.PLEASE_UPLOAD))
    await until(lambda: pipeline.status is RS.RESULT_UPLOADED)
    pipeline.deliver(notification(TNT.PLEASE_COMPLETE))
    await asyncio.wait_for(runner, 5)

    assert scheduler.history == [
        RS.CREATED, RS.STARTING, RS.STARTED, RS.APP_DOWNLOADING, RS.APP_DOWNLOADED, RS.DATA_DOWNLOADING,
        RS.DATA_DOWNLOADED, RS.COMPUTING, RS.COMPUTED, RS.CONTRIBUTING, RS.CONTRIBUTED, RS.REVEALING, RS.REVEALED,
        RS.RESULT_UPLOAD_REQUESTED, RS.RESULT_UPLOADING, RS.RESULT_UPLOADED, RS.COMPLETING, RS.COMPLETED,
    ]  # fmt: skip
    assert work.calls == [
        "download_app", "download_data", "compute", f"contribute:{'0x' + 'dd' * 32}", "reveal:8", "upload",
    ]  # fmt: skip
    computed = scheduler.details[RS.COMPUTED]
    assert computed is not None
    assert computed.exit_code == 0
    assert computed.compute_logs is not None
    contributed = scheduler.details[RS.CONTRIBUTED]
    assert contributed is not None
    assert contributed.chain_receipt == ChainReceipt(block_number=7, tx_hash="0x" + "01" * 32)
    assert work.purged
    stored = await store.get(TASK)
    assert stored is not None
    assert stored.final
    assert stored.status is RS.COMPLETED
    assert (await store.history(TASK))[-1] is RS.COMPLETED


async def test_failed_precheck_aborts_without_work(store: ReplicateStore) -> None:
    scheduler, work = FakeScheduler(), FakeWork()
    work.fail[Stage.START] = Cause.STAKE_TOO_LOW
    pipeline = ReplicatePipeline(TASK, PipelineDeps(store, scheduler, work, Recorder()))
    pipeline.deliver(notification(TNT.PLEASE_START))
    await asyncio.wait_for(pipeline.run(), 5)
    assert scheduler.history == [RS.CREATED, RS.STARTING, RS.START_FAILED, RS.ABORTED]
    assert work.calls == []
    start_failed = scheduler.details[RS.START_FAILED]
    assert start_failed is not None
    assert start_failed.cause is Cause.STAKE_TOO_LOW


async def test_failed_app_download_contributes_the_error_result(store: ReplicateStore) -> None:
    scheduler, work = FakeScheduler(), FakeWork()
    work.fail[Stage.DOWNLOAD_APP] = Cause.APP_IMAGE_DOWNLOAD_FAILED
    pipeline = ReplicatePipeline(TASK, PipelineDeps(store, scheduler, work, Recorder()))
    runner = asyncio.create_task(pipeline.run())
    pipeline.deliver(notification(TNT.PLEASE_START))
    await until(lambda: pipeline.status is RS.CONTRIBUTED)
    runner.cancel()
    assert RS.APP_DOWNLOAD_FAILED in scheduler.history
    assert work.calls[-1] == f"contribute:{'0x' + 'ee' * 32}"


async def test_abort_interrupts_compute(store: ReplicateStore) -> None:
    scheduler, work = FakeScheduler(), FakeWork()
    work.compute_gate = asyncio.Event()  # never set: the app "runs" until aborted
    pipeline = ReplicatePipeline(TASK, PipelineDeps(store, scheduler, work, Recorder()))
    runner = asyncio.create_task(pipeline.run())
    pipeline.deliver(notification(TNT.PLEASE_START))
    await until(lambda: pipeline.status is RS.COMPUTING)
    pipeline.deliver(notification(TNT.PLEASE_ABORT, taskAbortCause=TaskAbortCause.CONTRIBUTION_TIMEOUT.value))
    await asyncio.wait_for(runner, 5)
    assert scheduler.history[-1] is RS.ABORTED
    aborted = scheduler.details[RS.ABORTED]
    assert aborted is not None
    assert aborted.cause is Cause.CONTRIBUTION_TIMEOUT
    assert work.purged


async def test_duplicate_reveal_is_dropped(store: ReplicateStore) -> None:
    scheduler, work = FakeScheduler(), FakeWork()
    pipeline = ReplicatePipeline(TASK, PipelineDeps(store, scheduler, work, Recorder()))
    runner = asyncio.create_task(pipeline.run())
    pipeline.deliver(notification(TNT.PLEASE_START))
    await until(lambda: pipeline.status is RS.CONTRIBUTED)
    pipeline.deliver(notification(TNT.PLEASE_REVEAL, blockNumber=8))
    pipeline.deliver(notification(TNT.PLEASE_REVEAL, blockNumber=8))
    await until(lambda: pipeline.status is RS.REVEALED)
    pipeline.deliver(notification(TNT.PLEASE_COMPLETE))
    await asyncio.wait_for(runner, 5)
    assert [c for c in work.calls if c.startswith("reveal")] == ["reveal:8"]


async def test_restart_inside_compute_runs_compute_again(store: ReplicateStore) -> None:
    scheduler, work = FakeScheduler(), FakeWork()
    first = ReplicatePipeline(TASK, PipelineDeps(store, scheduler, work, Recorder()))
    work.compute_gate = asyncio.Event()
    runner = asyncio.create_task(first.run())
    first.deliver(notification(TNT.PLEASE_START))
    await until(lambda: "compute" in work.calls)  # COMPUTING is recorded and reported before the app runs
    runner.cancel()  # the process dies while the app runs
    with pytest.raises(asyncio.CancelledError):
        await runner

    record = await store.get(TASK)
    assert record is not None
    assert record.status is RS.COMPUTING
    work.compute_gate = None
    resumed, action = ReplicatePipeline.resume(record, PipelineDeps(store, scheduler, work, Recorder()))
    assert action is not None
    assert action.task_notification_type is TNT.PLEASE_COMPUTE
    task = asyncio.create_task(resumed.run())
    resumed.deliver(action)
    await until(lambda: resumed.status is RS.CONTRIBUTED)
    task.cancel()
    assert scheduler.history.count(RS.COMPUTING) == 1
    assert work.calls.count("compute") == 2
    assert RS.CONTRIBUTED in scheduler.history
