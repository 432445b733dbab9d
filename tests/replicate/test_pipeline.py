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
from worker.replicate.machine import ReplicateState
from worker.replicate.pipeline import PipelineDeps, ReplicatePipeline
from worker.replicate.ports import ComputeOutcome, FinalizeOutcome, Stage, UploadOutcome
from worker.replicate.store import ReplicateStore
from worker.replicate.supervisor import Supervisor

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
    def __init__(self, *, contribute_and_finalize: bool = False) -> None:
        self.history: list[ReplicateStatus] = [RS.CREATED]
        self.details: dict[ReplicateStatus, ReplicateStatusDetails | None] = {}
        self.reported: list[tuple[ReplicateStatus, ReplicateStatusDetails | None]] = []
        self.contribute_and_finalize = contribute_and_finalize

    async def report(
        self, task_id: str, status: ReplicateStatus, details: ReplicateStatusDetails | None = None
    ) -> TaskNotificationType | None:
        self.reported.append((status, details))
        if status in self.history:
            return self._next(status, details)  # 208: the client derives it
        if status in (RS.CONTRIBUTE_FAILED, RS.REVEAL_FAILED) or not is_valid_transition(
            self.history[-1], status
        ):
            return TNT.PLEASE_ABORT
        self.history.append(status)
        self.details[status] = details
        return self._next(status, details)

    def _next(
        self, status: ReplicateStatus, details: ReplicateStatusDetails | None
    ) -> TaskNotificationType | None:
        cause = details.cause if details else None
        return next_action(status, cause, contribute_and_finalize=self.contribute_and_finalize)


class FakeWork:
    def __init__(self) -> None:
        self.fail: dict[Stage, Cause] = {}
        self.calls: list[str] = []
        self.compute_gate: asyncio.Event | None = None
        self.purged = False
        self.outcome = ComputeOutcome(
            exit_code=0, stdout="out", stderr="", result_digest="0x" + "dd" * 32, app_seconds=1.5
        )
        self.finalizes = False

    async def precheck(self, task_id: str, stage: Stage) -> None:
        if stage in self.fail and stage is not Stage.COMPUTE:
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
        if Stage.COMPUTE in self.fail:
            raise StepFailed(self.fail[Stage.COMPUTE])
        return self.outcome

    async def contribute(
        self, task_id: str, result_digest: str, authorization: WorkerpoolAuthorization
    ) -> ChainReceipt:
        self.calls.append(f"contribute:{result_digest}")
        return ChainReceipt(block_number=7, tx_hash="0x" + "01" * 32)

    async def contributes_and_finalizes(self, task_id: str) -> bool:
        return self.finalizes

    async def contribute_and_finalize(
        self, task_id: str, result_digest: str, authorization: WorkerpoolAuthorization
    ) -> FinalizeOutcome:
        self.calls.append(f"contribute_and_finalize:{result_digest}")
        if Stage.CONTRIBUTE_AND_FINALIZE in self.fail:
            raise StepFailed(self.fail[Stage.CONTRIBUTE_AND_FINALIZE])
        receipt = ChainReceipt(block_number=11, tx_hash="0x" + "03" * 32)
        return FinalizeOutcome(receipt=receipt, result_link='{ "storage": "ipfs", "location": "/ipfs/Qm" }')

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
        self.app_runs: list[float] = []

    def status_changed(self, task_id: str, old: RS, new: RS, cause: Cause | None) -> None:
        self.moves.append((old, new))

    def stage_finished(self, stage: Stage, seconds: float, ok: bool) -> None:
        self.stages.append((stage, ok))

    def app_computed(self, task_id: str, seconds: float) -> None:
        self.app_runs.append(seconds)

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


async def _run_until_ended(pipeline: ReplicatePipeline) -> None:
    pipeline.deliver(notification(TNT.PLEASE_START))
    await asyncio.wait_for(pipeline.run(), 5)


async def test_an_app_failing_after_writing_its_result_is_computed_and_contributed(
    store: ReplicateStore,
) -> None:
    """iexec-worker 9.2: COMPUTED with the exit code and the logs, then the contribution."""
    scheduler, work, recorder = FakeScheduler(), FakeWork(), Recorder()
    work.outcome = ComputeOutcome(
        exit_code=3,
        stdout="partial",
        stderr="boom",
        result_digest="0x" + "dd" * 32,
        app_seconds=0.25,
        failures=(Cause.APP_COMPUTE_FAILED,),
    )
    pipeline = ReplicatePipeline(TASK, PipelineDeps(store, scheduler, work, recorder))
    runner = asyncio.create_task(pipeline.run())
    pipeline.deliver(notification(TNT.PLEASE_START))
    await until(lambda: pipeline.status is RS.CONTRIBUTED)
    runner.cancel()
    computed = scheduler.details[RS.COMPUTED]
    assert computed is not None
    assert computed.exit_code == 3
    assert computed.cause is None
    assert computed.compute_logs is not None
    assert (computed.compute_logs.stdout, computed.compute_logs.stderr) == ("partial", "boom")
    assert RS.COMPUTE_FAILED not in scheduler.history
    assert work.calls[-1] == f"contribute:{'0x' + 'dd' * 32}"
    assert recorder.app_runs == [0.25]
    assert (Stage.COMPUTE, False) in recorder.stages


async def test_no_result_fails_at_the_contribution_and_ends_aborted(store: ReplicateStore) -> None:
    """The reference's error path: CONTRIBUTE_FAILED is refused by iexec-core, PLEASE_ABORT, ABORTED."""
    scheduler, work = FakeScheduler(), FakeWork()
    work.outcome = ComputeOutcome(exit_code=1, stdout="", stderr="no", result_digest=None)
    pipeline = ReplicatePipeline(TASK, PipelineDeps(store, scheduler, work, Recorder()))
    await _run_until_ended(pipeline)
    assert scheduler.history[-4:] == [RS.COMPUTING, RS.COMPUTED, RS.CONTRIBUTING, RS.ABORTED]
    aborted = scheduler.details[RS.ABORTED]
    assert aborted is not None
    assert aborted.cause is Cause.UNKNOWN
    assert not any(call.startswith("contribute") for call in work.calls)
    assert (await store.history(TASK))[-3:] == [RS.CONTRIBUTING, RS.CONTRIBUTE_FAILED, RS.ABORTED]
    record = await store.get(TASK)
    assert record is not None
    assert record.cause is Cause.UNKNOWN
    assert work.purged


async def test_the_chain_verdict_comes_before_the_missing_result(store: ReplicateStore) -> None:
    scheduler, work = FakeScheduler(), FakeWork()
    work.outcome = ComputeOutcome(exit_code=1, stdout="", stderr="", result_digest=None)
    work.fail[Stage.CONTRIBUTE] = Cause.CONTRIBUTION_TIMEOUT
    pipeline = ReplicatePipeline(TASK, PipelineDeps(store, scheduler, work, Recorder()))
    await _run_until_ended(pipeline)
    failed = [
        details.cause for status, details in scheduler.reported if status is RS.CONTRIBUTE_FAILED and details
    ]
    assert failed == [Cause.CONTRIBUTION_TIMEOUT]
    assert scheduler.history[-1] is RS.ABORTED


async def test_an_app_that_cannot_be_run_is_compute_failed(store: ReplicateStore) -> None:
    scheduler, work = FakeScheduler(), FakeWork()
    work.fail[Stage.COMPUTE] = Cause.APP_NOT_FOUND_LOCALLY
    pipeline = ReplicatePipeline(TASK, PipelineDeps(store, scheduler, work, Recorder()))
    await _run_until_ended(pipeline)
    assert scheduler.history[-2:] == [RS.COMPUTE_FAILED, RS.ABORTED]
    compute_failed = scheduler.details[RS.COMPUTE_FAILED]
    assert compute_failed is not None
    assert compute_failed.cause is Cause.APP_NOT_FOUND_LOCALLY


async def test_compute_logs_are_tailed_to_the_last_100000_utf16_units(store: ReplicateStore) -> None:
    scheduler, work = FakeScheduler(), FakeWork()
    # 60 000 astral characters are 120 000 UTF-16 code units: the last 50 000 characters are kept.
    work.outcome = ComputeOutcome(
        exit_code=0,
        stdout="a" * 150_000 + "END",
        stderr="\U0001f600" * 60_000,
        result_digest="0x" + "dd" * 32,
    )
    pipeline = ReplicatePipeline(TASK, PipelineDeps(store, scheduler, work, Recorder()))
    runner = asyncio.create_task(pipeline.run())
    pipeline.deliver(notification(TNT.PLEASE_START))
    await until(lambda: RS.COMPUTED in scheduler.history)
    runner.cancel()
    computed = scheduler.details[RS.COMPUTED]
    assert computed is not None
    assert computed.compute_logs is not None
    assert computed.compute_logs.stdout == ("a" * 150_000 + "END")[-100_000:]
    assert computed.compute_logs.stderr == "\U0001f600" * 50_000


@pytest.mark.parametrize("left_at", [RS.CONTRIBUTED, RS.COMPUTED, RS.REVEALING])
async def test_please_complete_reaches_a_replicate_in_any_state(
    store: ReplicateStore, left_at: ReplicateStatus
) -> None:
    """The scheduler broadcasts PLEASE_COMPLETE; from these states it refuses COMPLETING, the replicate aborts."""
    scheduler, work = FakeScheduler(), FakeWork()
    await store.set_status(TASK, left_at)
    scheduler.history = [RS.CREATED, left_at]
    pipeline = ReplicatePipeline(
        TASK, PipelineDeps(store, scheduler, work, Recorder()), ReplicateState(left_at)
    )
    pipeline.deliver(notification(TNT.PLEASE_COMPLETE))
    await asyncio.wait_for(pipeline.run(), 5)
    assert pipeline.finished
    assert scheduler.history[-1] is RS.ABORTED
    aborted = scheduler.details[RS.ABORTED]
    assert aborted is not None
    assert aborted.cause is Cause.UNKNOWN
    assert work.purged


async def test_trust_one_tee_task_ends_with_one_contribute_and_finalize(store: ReplicateStore) -> None:
    scheduler, work = FakeScheduler(contribute_and_finalize=True), FakeWork()
    work.finalizes = True
    pipeline = ReplicatePipeline(TASK, PipelineDeps(store, scheduler, work, Recorder()))
    runner = asyncio.create_task(pipeline.run())
    pipeline.deliver(notification(TNT.PLEASE_START))
    await until(lambda: pipeline.status is RS.CONTRIBUTE_AND_FINALIZE_DONE)
    pipeline.deliver(notification(TNT.PLEASE_COMPLETE))
    await asyncio.wait_for(runner, 5)

    assert scheduler.history[scheduler.history.index(RS.COMPUTED) :] == [
        RS.COMPUTED, RS.CONTRIBUTE_AND_FINALIZE_ONGOING, RS.CONTRIBUTE_AND_FINALIZE_DONE, RS.COMPLETING,
        RS.COMPLETED,
    ]  # fmt: skip
    assert [c for c in work.calls if c.startswith("contribute")] == [
        f"contribute_and_finalize:{'0x' + 'dd' * 32}"
    ]
    done = scheduler.details[RS.CONTRIBUTE_AND_FINALIZE_DONE]
    assert done is not None
    assert done.chain_receipt == ChainReceipt(block_number=11, tx_hash="0x" + "03" * 32)
    assert done.result_link == '{ "storage": "ipfs", "location": "/ipfs/Qm" }'
    stored = await store.get(TASK)
    assert stored is not None
    assert stored.result_link == done.result_link


async def test_refused_enclave_signature_fails_contribute_and_finalize(store: ReplicateStore) -> None:
    scheduler, work = FakeScheduler(contribute_and_finalize=True), FakeWork()
    work.finalizes = True
    work.fail[Stage.CONTRIBUTE_AND_FINALIZE] = Cause.ENCLAVE_SIGNATURE_NOT_FOUND
    pipeline = ReplicatePipeline(TASK, PipelineDeps(store, scheduler, work, Recorder()))
    pipeline.deliver(notification(TNT.PLEASE_START))
    await asyncio.wait_for(pipeline.run(), 5)
    assert scheduler.history[-3:] == [
        RS.CONTRIBUTE_AND_FINALIZE_ONGOING,
        RS.CONTRIBUTE_AND_FINALIZE_FAILED,
        RS.ABORTED,
    ]
    failed = scheduler.details[RS.CONTRIBUTE_AND_FINALIZE_FAILED]
    assert failed is not None
    assert failed.cause is Cause.ENCLAVE_SIGNATURE_NOT_FOUND


async def test_resumed_trust_one_tee_replicate_contributes_and_finalizes_again(store: ReplicateStore) -> None:
    # Killed after CONTRIBUTE_AND_FINALIZE_ONGOING was recorded: the stage runs again (the sender then
    # follows its journal), and a PLEASE_CONTRIBUTE from recovery is answered the same way, never by contribute.
    await store.update_fields(TASK, result_digest="0x" + "dd" * 32)
    for status in (RS.STARTING, RS.STARTED, RS.COMPUTED, RS.CONTRIBUTE_AND_FINALIZE_ONGOING):
        await store.set_status(TASK, status)
    record = await store.get(TASK)
    assert record is not None
    scheduler, work = FakeScheduler(contribute_and_finalize=True), FakeWork()
    work.finalizes = True
    scheduler.history += [RS.STARTING, RS.STARTED, RS.COMPUTED, RS.CONTRIBUTE_AND_FINALIZE_ONGOING]
    resumed, action = ReplicatePipeline.resume(record, PipelineDeps(store, scheduler, work, Recorder()))
    assert resumed.status is RS.COMPUTED
    assert action is not None
    assert action.task_notification_type is TNT.PLEASE_CONTRIBUTE_AND_FINALIZE
    runner = asyncio.create_task(resumed.run())
    resumed.deliver(notification(TNT.PLEASE_CONTRIBUTE))  # recovery's answer, delivered first
    resumed.deliver(action)
    await until(lambda: resumed.status is RS.CONTRIBUTE_AND_FINALIZE_DONE)
    runner.cancel()
    assert work.calls == [f"contribute_and_finalize:{'0x' + 'dd' * 32}"]
    assert RS.CONTRIBUTING not in scheduler.history


@pytest.mark.parametrize(
    ("abort_cause", "cause"),
    [
        (TaskAbortCause.CONSENSUS_REACHED, Cause.CONSENSUS_REACHED),
        (TaskAbortCause.CONTRIBUTION_TIMEOUT, Cause.CONTRIBUTION_TIMEOUT),
        (TaskAbortCause.REVEAL_TIMEOUT, Cause.REVEAL_TIMEOUT),
        (TaskAbortCause.TASK_NOT_ACTIVE, Cause.TASK_NOT_ACTIVE),
        (TaskAbortCause.UNKNOWN, Cause.UNKNOWN),
    ],
)
async def test_an_abort_reports_the_cause_of_its_notification(
    store: ReplicateStore, abort_cause: TaskAbortCause, cause: ReplicateStatusCause
) -> None:
    scheduler, work = FakeScheduler(), FakeWork()
    work.compute_gate = asyncio.Event()
    pipeline = ReplicatePipeline(TASK, PipelineDeps(store, scheduler, work, Recorder()))
    runner = asyncio.create_task(pipeline.run())
    pipeline.deliver(notification(TNT.PLEASE_START))
    await until(lambda: pipeline.status is RS.COMPUTING)
    pipeline.deliver(notification(TNT.PLEASE_ABORT, taskAbortCause=abort_cause.value))
    await asyncio.wait_for(runner, 5)
    aborted = scheduler.details[RS.ABORTED]
    assert aborted is not None
    assert aborted.cause is cause


@pytest.mark.parametrize("stored", [RS.CREATED, RS.STARTING])
async def test_a_replicate_resumed_before_started_while_the_scheduler_recovers_it_goes_on(
    store: ReplicateStore, stored: ReplicateStatus
) -> None:
    """iexec-core refuses STARTING after RECOVERING: the resumed start reports only STARTED, and the
    replicate carries on to its contribution instead of being aborted."""
    if stored is RS.STARTING:
        await store.set_status(TASK, RS.STARTING)
    record = await store.get(TASK)
    assert record is not None
    scheduler, work = FakeScheduler(), FakeWork()
    scheduler.history += [*([RS.STARTING] if stored is RS.STARTING else []), RS.RECOVERING]
    resumed, first = ReplicatePipeline.resume(
        record, PipelineDeps(store, scheduler, work, Recorder()), recovering=True
    )
    assert first is not None
    runner = asyncio.create_task(resumed.run())
    resumed.deliver(first)
    resumed.deliver(notification(TNT.PLEASE_CONTRIBUTE))  # the recovery's answer: dropped, too early
    await until(lambda: resumed.status is RS.CONTRIBUTED)
    runner.cancel()
    assert RS.STARTING not in [status for status, _ in scheduler.reported]
    assert scheduler.history[scheduler.history.index(RS.RECOVERING) + 1] is RS.STARTED
    assert scheduler.history[-1] is RS.CONTRIBUTED
    assert RS.STARTED in await store.history(TASK)


async def test_a_replicate_resumed_before_started_without_recovery_reports_starting_again(
    store: ReplicateStore,
) -> None:
    record = await store.get(TASK)
    assert record is not None
    scheduler, work = FakeScheduler(), FakeWork()
    resumed, first = ReplicatePipeline.resume(record, PipelineDeps(store, scheduler, work, Recorder()))
    assert first is not None
    runner = asyncio.create_task(resumed.run())
    resumed.deliver(first)
    await until(lambda: resumed.status is RS.STARTED or resumed.status.ordinal > RS.STARTED.ordinal)
    runner.cancel()
    assert scheduler.reported[0][0] is RS.STARTING


async def test_a_parked_pipeline_ends_the_stage_in_flight_and_starts_no_other(store: ReplicateStore) -> None:
    """A stop during the compute: COMPUTED is recorded and reported, the contribution waits for the next start."""
    scheduler, work = FakeScheduler(), FakeWork()
    work.compute_gate = asyncio.Event()
    pipeline = ReplicatePipeline(TASK, PipelineDeps(store, scheduler, work, Recorder()))
    runner = asyncio.create_task(pipeline.run())
    pipeline.deliver(notification(TNT.PLEASE_START))
    await until(lambda: pipeline.status is RS.COMPUTING)
    pipeline.park()
    work.compute_gate.set()
    await asyncio.wait_for(pipeline.wait_quiet(), 5)
    await until(lambda: pipeline.status is RS.COMPUTED)
    await asyncio.sleep(0.05)  # room for a next stage to start, were it allowed to
    assert pipeline.status is RS.COMPUTED
    assert scheduler.history[-1] is RS.COMPUTED
    assert not any(call.startswith("contribute") for call in work.calls)
    assert (await store.get(TASK)) is not None
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner


async def test_the_supervisor_drain_parks_replicates_and_says_which_wait_for_news(tmp_path: Path) -> None:
    """The views the missed-news poll relies on, and a drain that ends the stage in flight without a next one."""
    store = await ReplicateStore.open(tmp_path / "worker.db")
    scheduler, work = FakeScheduler(), FakeWork()
    work.compute_gate = asyncio.Event()

    async def hook(_: str) -> None:
        return None

    supervisor = Supervisor(
        PipelineDeps(store, scheduler, work, Recorder()), slots=1, wallet=AUTH.worker_wallet, subscribe=hook,
        unsubscribe=hook,
    )  # fmt: skip
    assert await supervisor.admit(AUTH)
    assert supervisor.not_started or supervisor.status_of(TASK) is not RS.CREATED
    await until(lambda: supervisor.status_of(TASK) is RS.COMPUTING)
    assert not supervisor.not_started
    assert supervisor.waiting_for_news == []  # computing: a stage runs

    draining = asyncio.create_task(supervisor.drain(5))
    work.compute_gate.set()
    await asyncio.wait_for(draining, 10)
    assert scheduler.history[-1] is RS.COMPUTED  # the compute ended and was reported
    assert not any(call.startswith("contribute") for call in work.calls)  # the contribution waits
    assert (await store.get(TASK)) is not None
    await store.close()
