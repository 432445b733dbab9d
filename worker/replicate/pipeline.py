"""One replicate's pipeline: an asyncio task that turns notifications into stages.

A notification (pushed by the scheduler, returned as the next action of a status update, found by
the chain watcher, or replayed at start-up) names an action. Each action reports an ongoing status,
does the stage's I/O through the ``Work`` port, records the outcome in the store, moves the
transition table, and reports the final status, whose answer is the next action. PLEASE_ABORT
interrupts whatever stage is running. Notifications that no longer fit the replicate's state
(a second PLEASE_REVEAL, say) are dropped, so every source may deliver the same news.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from worker.protocol.errors import StepFailed
from worker.protocol.models import (
    ComputeLogs,
    ReplicateStatusDetails,
    TaskNotification,
    TaskNotificationExtra,
    WorkerpoolAuthorization,
)
from worker.protocol.status import (
    ReplicateStatus,
    ReplicateStatusCause,
    TaskAbortCause,
    TaskNotificationType,
)
from worker.replicate.machine import ReplicateState
from worker.replicate.ports import Observer, Reporter, Stage, Work
from worker.replicate.store import ReplicateRecord, ReplicateStore

RS = ReplicateStatus
TNT = TaskNotificationType
Cause = ReplicateStatusCause
log = logging.getLogger("iexec.worker.replicate")

# Causes after which a failed download is contributed as an error result (the Java workers do the same).
_ERROR_RESULT_CAUSES = frozenset({
    Cause.APP_IMAGE_DOWNLOAD_FAILED,
    Cause.DATASET_FILE_DOWNLOAD_FAILED,
    Cause.DATASET_FILE_BAD_CHECKSUM,
    Cause.INPUT_FILES_DOWNLOAD_FAILED,
})  # fmt: skip

# Which status each action enters first: used to drop notifications that no longer apply.
_ENTERS: dict[TaskNotificationType, ReplicateStatus] = {
    TNT.PLEASE_START: RS.STARTING,
    TNT.PLEASE_DOWNLOAD_APP: RS.APP_DOWNLOADING,
    TNT.PLEASE_DOWNLOAD_DATA: RS.DATA_DOWNLOADING,
    TNT.PLEASE_COMPUTE: RS.COMPUTING,
    TNT.PLEASE_CONTRIBUTE: RS.CONTRIBUTING,
    TNT.PLEASE_CONTRIBUTE_AND_FINALIZE: RS.CONTRIBUTE_AND_FINALIZE_ONGOING,
    TNT.PLEASE_REVEAL: RS.REVEALING,
    TNT.PLEASE_UPLOAD: RS.RESULT_UPLOADING,
    TNT.PLEASE_COMPLETE: RS.COMPLETING,
    TNT.PLEASE_ABORT: RS.ABORTED,
}

# After a restart, a replicate caught inside a stage goes back to the last status it had finished,
# and runs that stage again (statuses the scheduler already has are answered 208 and cost nothing).
_RESUME: dict[ReplicateStatus, tuple[ReplicateStatus, TaskNotificationType | None]] = {
    RS.CREATED: (RS.CREATED, TNT.PLEASE_START),
    RS.STARTING: (RS.CREATED, TNT.PLEASE_START),
    RS.STARTED: (RS.STARTED, TNT.PLEASE_DOWNLOAD_APP),
    RS.APP_DOWNLOADING: (RS.STARTED, TNT.PLEASE_DOWNLOAD_APP),
    RS.APP_DOWNLOADED: (RS.APP_DOWNLOADED, TNT.PLEASE_DOWNLOAD_DATA),
    RS.APP_DOWNLOAD_FAILED: (RS.APP_DOWNLOAD_FAILED, TNT.PLEASE_CONTRIBUTE),
    RS.DATA_DOWNLOADING: (RS.APP_DOWNLOADED, TNT.PLEASE_DOWNLOAD_DATA),
    RS.DATA_DOWNLOADED: (RS.DATA_DOWNLOADED, TNT.PLEASE_COMPUTE),
    RS.DATA_DOWNLOAD_FAILED: (RS.DATA_DOWNLOAD_FAILED, TNT.PLEASE_CONTRIBUTE),
    RS.COMPUTING: (RS.DATA_DOWNLOADED, TNT.PLEASE_COMPUTE),
    RS.COMPUTED: (RS.COMPUTED, TNT.PLEASE_CONTRIBUTE),
    RS.CONTRIBUTING: (RS.COMPUTED, TNT.PLEASE_CONTRIBUTE),
    RS.CONTRIBUTED: (RS.CONTRIBUTED, None),
    RS.REVEALING: (RS.CONTRIBUTED, TNT.PLEASE_REVEAL),
    RS.REVEALED: (RS.REVEALED, None),
    RS.RESULT_UPLOADING: (RS.REVEALED, TNT.PLEASE_UPLOAD),
    RS.RESULT_UPLOADED: (RS.RESULT_UPLOADED, None),
    RS.RESULT_UPLOAD_FAILED: (RS.RESULT_UPLOAD_FAILED, None),
    # The sender follows its journal: a contributeAndFinalize broadcast before the crash is never signed twice.
    RS.CONTRIBUTE_AND_FINALIZE_ONGOING: (RS.COMPUTED, TNT.PLEASE_CONTRIBUTE_AND_FINALIZE),
    RS.CONTRIBUTE_AND_FINALIZE_DONE: (RS.CONTRIBUTE_AND_FINALIZE_DONE, None),
    RS.COMPLETING: (RS.REVEALED, TNT.PLEASE_COMPLETE),
}


# The scheduler's abort causes as iexec-common ``getReplicateAbortCause`` maps them, and the chain
# watcher's deadline causes (REVEAL_TIMEOUT as iexec-core sets it on a replicate past its reveal deadline).
_ABORT_CAUSES: dict[TaskAbortCause, ReplicateStatusCause] = {
    TaskAbortCause.CONSENSUS_REACHED: Cause.CONSENSUS_REACHED,
    TaskAbortCause.CONTRIBUTION_TIMEOUT: Cause.CONTRIBUTION_TIMEOUT,
    TaskAbortCause.REVEAL_TIMEOUT: Cause.REVEAL_TIMEOUT,
    TaskAbortCause.TASK_NOT_ACTIVE: Cause.TASK_NOT_ACTIVE,
}


def _abort_cause(notification: TaskNotification) -> ReplicateStatusCause:
    return _ABORT_CAUSES.get(notification.task_abort_cause, Cause.UNKNOWN)


def local_notification(
    task_id: str,
    action: TaskNotificationType,
    *,
    block_number: int = 0,
    abort_cause: TaskAbortCause | None = None,
) -> TaskNotification:
    """A notification raised by the worker itself (start, resume, chain watcher), shaped like a pushed one
    so the pipeline treats both alike and drops a duplicate."""
    has_extra = bool(block_number or abort_cause)
    extra = (
        TaskNotificationExtra(block_number=block_number, task_abort_cause=abort_cause) if has_extra else None
    )
    return TaskNotification(
        chain_task_id=task_id,
        workers_address=[],
        task_notification_type=action,
        task_notification_extra=extra,
    )


@dataclass
class PipelineDeps:
    store: ReplicateStore
    reporter: Reporter
    work: Work
    observer: Observer


class ReplicatePipeline:
    """Carries one replicate until it is COMPLETED, ABORTED or FAILED."""

    def __init__(
        self,
        task_id: str,
        deps: PipelineDeps,
        state: ReplicateState | None = None,
        *,
        recovering: bool = False,
    ) -> None:
        self.task_id = task_id
        self._deps = deps
        self._state = state or ReplicateState()
        # The scheduler moved the replicate to RECOVERING (interrupted-replicates call), from which it
        # accepts every status but CREATED and STARTING: a start is then not reported, only its outcome.
        self._recovering = recovering
        self._inbox: asyncio.Queue[TaskNotification] = asyncio.Queue()
        self._quiet = asyncio.Event()  # set while no stage runs: the replicate only waits for news
        self._quiet.set()
        self._parked = False  # stopping: the stage in flight ends, no other starts
        self._log = logging.LoggerAdapter(log, {"task_id": task_id})
        handlers: dict[
            TaskNotificationType,
            Callable[[TaskNotification], Coroutine[Any, Any, TaskNotificationType | None]],
        ]
        handlers = {
            TNT.PLEASE_START: self._start,
            TNT.PLEASE_DOWNLOAD_APP: self._download_app,
            TNT.PLEASE_DOWNLOAD_DATA: self._download_data,
            TNT.PLEASE_COMPUTE: self._compute,
            TNT.PLEASE_CONTRIBUTE: self._contribute,
            TNT.PLEASE_CONTRIBUTE_AND_FINALIZE: self._contribute_and_finalize,
            TNT.PLEASE_REVEAL: self._reveal,
            TNT.PLEASE_UPLOAD: self._upload,
            TNT.PLEASE_COMPLETE: self._complete,
        }
        self._handlers = handlers

    @classmethod
    def resume(
        cls, record: ReplicateRecord, deps: PipelineDeps, *, recovering: bool = False
    ) -> tuple[ReplicatePipeline, TaskNotification | None]:
        """Rebuild a pipeline from its stored record; returns the action to run first, if any.

        ``recovering``: the scheduler listed the replicate as interrupted, so it is RECOVERING there.
        """
        base, action = _RESUME.get(record.status, (record.status, None))
        pipeline = cls(record.task_id, deps, ReplicateState(base), recovering=recovering)
        first = None
        if action is TNT.PLEASE_REVEAL:
            first = local_notification(record.task_id, action, block_number=record.consensus_block or 0)
        elif action is not None:
            first = local_notification(record.task_id, action)
        return pipeline, first

    @property
    def status(self) -> ReplicateStatus:
        return self._state.status

    @property
    def finished(self) -> bool:
        return self._state.terminal

    @property
    def computing(self) -> bool:
        """True while the replicate holds a computing slot (the scheduler's definition)."""
        return self._state.status.ordinal < RS.COMPUTED.ordinal and not self._state.terminal

    @property
    def quiet(self) -> bool:
        """True while no stage runs: the replicate only waits for news."""
        return self._quiet.is_set()

    async def wait_quiet(self) -> None:
        """Return once no stage is running (a replicate waiting for a notification has nothing in flight)."""
        await self._quiet.wait()

    def deliver(self, notification: TaskNotification) -> None:
        self._inbox.put_nowait(notification)

    def park(self) -> None:
        """Let the stage in flight end, then start no other: the worker is stopping.

        What the replicate would do next is in the store (its status) and is done again at the next
        start, so a stop never cuts a stage it could have avoided starting.
        """
        self._parked = True

    def accepts(self, action: TaskNotificationType) -> bool:
        if action in (TNT.PLEASE_CONTINUE, TNT.PLEASE_WAIT):
            return False
        target = _ENTERS.get(action)
        return target is not None and self._state.can_move(target)

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        current: asyncio.Task[TaskNotificationType | None] | None = None
        pending: list[TaskNotification] = []
        try:
            while not self.finished:
                notification = pending.pop(0) if pending else await self._inbox.get()
                action = notification.task_notification_type
                if action is TNT.PLEASE_ABORT:
                    await self._abort(notification)
                    continue
                if not self.accepts(action):
                    self._log.debug("%s ignored in %s", action, self.status)
                    continue
                if self._parked:
                    self._log.info("stopping: %s left for the next start (%s recorded)", action, self.status)
                    await asyncio.Event().wait()  # until the supervisor cancels it
                self._quiet.clear()
                current = asyncio.create_task(
                    self._handlers[action](notification), name=f"{action}:{self.task_id}"
                )
                while True:
                    getter = asyncio.ensure_future(self._inbox.get())
                    done, _ = await asyncio.wait({current, getter}, return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        incoming = getter.result()
                        if incoming.task_notification_type is TNT.PLEASE_ABORT:
                            current.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await current
                            current = None
                            await self._abort(incoming)
                            self._quiet.set()
                            break
                        pending.append(incoming)
                        continue
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await getter
                    next_action = current.result()
                    current = None
                    self._quiet.set()
                    if next_action is not None and next_action not in (TNT.PLEASE_WAIT, TNT.PLEASE_CONTINUE):
                        pending.insert(0, local_notification(self.task_id, next_action))
                    break
        finally:
            if current is not None and not current.done():
                current.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await current

    # -- helpers ----------------------------------------------------------------------------------

    async def _enter(
        self,
        status: ReplicateStatus,
        cause: ReplicateStatusCause | None = None,
        details: ReplicateStatusDetails | None = None,
    ) -> TaskNotificationType | None:
        """Record locally first (a crash then resumes from here), then tell the scheduler."""
        old = self._state.status
        if old is not status:
            self._state.move(status)
            await self._deps.store.set_status(self.task_id, status, cause)
            self._deps.observer.status_changed(self.task_id, old, status, cause)
        if cause is not None and details is None:
            details = ReplicateStatusDetails(cause=cause)
        return await self._deps.reporter.report(self.task_id, status, details)

    async def _ongoing(self, status: ReplicateStatus) -> bool:
        """Report an ongoing status; False when the scheduler answers that the replicate must stop."""
        answer = await self._enter(status)
        if answer is TNT.PLEASE_ABORT:
            self._log.warning("scheduler refused %s: aborting the replicate", status)
            return False
        return True

    async def _record(self) -> ReplicateRecord:
        record = await self._deps.store.get(self.task_id)
        if record is None:  # the store is written before any pipeline starts
            raise RuntimeError(f"replicate {self.task_id} is missing from the store")
        return record

    async def _authorization(self) -> WorkerpoolAuthorization:
        return WorkerpoolAuthorization.model_validate((await self._record()).authorization)

    def _timed(self, stage: Stage) -> _StageTimer:
        return _StageTimer(stage, self._deps.observer)

    # -- stages -----------------------------------------------------------------------------------

    async def _start(self, _: TaskNotification) -> TaskNotificationType | None:
        if self._recovering:
            # iexec-core refuses STARTING after RECOVERING (and a Java worker drops such a replicate):
            # record it here only, then report where the start ends, which RECOVERING accepts.
            self._state.move(RS.STARTING)
            await self._deps.store.set_status(self.task_id, RS.STARTING, None)
            self._deps.observer.status_changed(self.task_id, RS.CREATED, RS.STARTING, None)
            self._log.info(
                "resumed while the scheduler recovers it: starting again without reporting STARTING"
            )
        elif not await self._ongoing(RS.STARTING):
            return TNT.PLEASE_ABORT
        with self._timed(Stage.START) as timer:
            try:
                await self._deps.work.precheck(self.task_id, Stage.START)
            except StepFailed as failure:
                timer.failed()
                self._log.warning("cannot start: %s (%s)", failure.cause, failure)
                return await self._enter(RS.START_FAILED, failure.cause)
        return await self._enter(RS.STARTED)

    async def _download_app(self, _: TaskNotification) -> TaskNotificationType | None:
        if not await self._ongoing(RS.APP_DOWNLOADING):
            return TNT.PLEASE_ABORT
        with self._timed(Stage.DOWNLOAD_APP) as timer:
            try:
                await self._deps.work.precheck(self.task_id, Stage.DOWNLOAD_APP)
                await self._deps.work.download_app(self.task_id)
            except StepFailed as failure:
                timer.failed()
                return await self._download_failed(RS.APP_DOWNLOAD_FAILED, failure)
        return await self._enter(RS.APP_DOWNLOADED)

    async def _download_data(self, _: TaskNotification) -> TaskNotificationType | None:
        if not await self._ongoing(RS.DATA_DOWNLOADING):
            return TNT.PLEASE_ABORT
        with self._timed(Stage.DOWNLOAD_DATA) as timer:
            try:
                await self._deps.work.precheck(self.task_id, Stage.DOWNLOAD_DATA)
                await self._deps.work.download_data(self.task_id)
            except StepFailed as failure:
                timer.failed()
                return await self._download_failed(RS.DATA_DOWNLOAD_FAILED, failure)
        return await self._enter(RS.DATA_DOWNLOADED)

    async def _download_failed(
        self, status: ReplicateStatus, failure: StepFailed
    ) -> TaskNotificationType | None:
        cause = failure.cause
        self._log.warning("%s: %s (%s)", status, cause, failure)
        if cause in _ERROR_RESULT_CAUSES:
            try:
                digest = await self._deps.work.write_error_result(self.task_id, status, cause)
            except StepFailed as post:
                cause = post.cause
            else:
                await self._deps.store.update_fields(self.task_id, result_digest=digest)
        return await self._enter(status, cause)

    async def _compute(self, _: TaskNotification) -> TaskNotificationType | None:
        """COMPUTE_FAILED only when the app could not be run at all (pre-checks, image missing).

        Once the app ran, COMPUTED is reported with its exit code and logs, whatever it did, as the
        reference does since 9.2 ("maximize chances to go from compute to result contribution"): an app
        that failed after writing a valid result is contributed like any other; one that left none fails
        at the contribution with DETERMINISM_HASH_NOT_FOUND.
        """
        if not await self._ongoing(RS.COMPUTING):
            return TNT.PLEASE_ABORT
        with self._timed(Stage.COMPUTE) as timer:
            try:
                await self._deps.work.precheck(self.task_id, Stage.COMPUTE)
                outcome = await self._deps.work.compute(self.task_id)
            except StepFailed as failure:
                timer.failed()
                self._log.warning("compute failed: %s (%s)", failure.cause, failure)
                return await self._enter(RS.COMPUTE_FAILED, failure.cause)
            if outcome.failures:
                timer.failed()
        if outcome.app_seconds is not None:
            self._deps.observer.app_computed(self.task_id, outcome.app_seconds)
        await self._deps.store.update_fields(
            self.task_id, result_digest=outcome.result_digest, callback_data=outcome.callback_data
        )
        logs = ComputeLogs(stdout=outcome.stdout or None, stderr=outcome.stderr or None)
        details = ReplicateStatusDetails(exit_code=outcome.exit_code, compute_logs=logs.tailed())
        return await self._enter(RS.COMPUTED, details=details)

    async def _contribute(self, notification: TaskNotification) -> TaskNotificationType | None:
        if self.status is RS.COMPUTED and await self._deps.work.contributes_and_finalizes(self.task_id):
            # A trust-1 TEE task after COMPUTED (a resumed replicate, a recovery): the scheduler's rule.
            return await self._contribute_and_finalize(notification)
        if not await self._ongoing(RS.CONTRIBUTING):
            return TNT.PLEASE_ABORT
        record = await self._record()
        with self._timed(Stage.CONTRIBUTE) as timer:
            try:
                # The reference's order: the chain's verdict and the gas first, then the result.
                await self._deps.work.precheck(self.task_id, Stage.CONTRIBUTE)
                if not record.result_digest:
                    raise StepFailed(
                        Cause.DETERMINISM_HASH_NOT_FOUND, "the compute left no result to contribute"
                    )
                receipt = await self._deps.work.contribute(
                    self.task_id, record.result_digest, await self._authorization()
                )
            except StepFailed as failure:
                timer.failed()
                self._log.warning("cannot contribute: %s (%s)", failure.cause, failure)
                return await self._enter(RS.CONTRIBUTE_FAILED, failure.cause)
        return await self._enter(RS.CONTRIBUTED, details=ReplicateStatusDetails(chain_receipt=receipt))

    async def _contribute_and_finalize(self, _: TaskNotification) -> TaskNotificationType | None:
        if not await self._ongoing(RS.CONTRIBUTE_AND_FINALIZE_ONGOING):
            return TNT.PLEASE_ABORT
        record = await self._record()
        with self._timed(Stage.CONTRIBUTE_AND_FINALIZE) as timer:
            try:
                # The reference's order: the chain's verdict and the gas first, then the result.
                await self._deps.work.precheck(self.task_id, Stage.CONTRIBUTE_AND_FINALIZE)
                if not record.result_digest:
                    raise StepFailed(
                        Cause.DETERMINISM_HASH_NOT_FOUND, "the compute left no result to contribute"
                    )
                outcome = await self._deps.work.contribute_and_finalize(
                    self.task_id, record.result_digest, await self._authorization()
                )
            except StepFailed as failure:
                timer.failed()
                self._log.warning("cannot contribute and finalize: %s (%s)", failure.cause, failure)
                return await self._enter(RS.CONTRIBUTE_AND_FINALIZE_FAILED, failure.cause)
        await self._deps.store.update_fields(self.task_id, result_link=outcome.result_link)
        details = ReplicateStatusDetails(
            chain_receipt=outcome.receipt,
            result_link=outcome.result_link,
            chain_callback_data=outcome.callback_data,
        )
        return await self._enter(RS.CONTRIBUTE_AND_FINALIZE_DONE, details=details)

    async def _reveal(self, notification: TaskNotification) -> TaskNotificationType | None:
        extra = notification.task_notification_extra
        block = extra.block_number if extra else 0
        if block:
            await self._deps.store.update_fields(self.task_id, consensus_block=block)
        if not await self._ongoing(RS.REVEALING):
            return TNT.PLEASE_ABORT
        record = await self._record()
        with self._timed(Stage.REVEAL) as timer:
            try:
                if not block:
                    raise StepFailed(
                        Cause.CONSENSUS_BLOCK_MISSING, "PLEASE_REVEAL carried no consensus block"
                    )
                if not record.result_digest:
                    raise StepFailed(Cause.DETERMINISM_HASH_NOT_FOUND, "no result digest was computed")
                receipt = await self._deps.work.reveal(self.task_id, record.result_digest, block)
            except StepFailed as failure:
                timer.failed()
                self._log.warning("cannot reveal: %s (%s)", failure.cause, failure)
                return await self._enter(RS.REVEAL_FAILED, failure.cause)
        return await self._enter(RS.REVEALED, details=ReplicateStatusDetails(chain_receipt=receipt))

    async def _upload(self, _: TaskNotification) -> TaskNotificationType | None:
        if not await self._ongoing(RS.RESULT_UPLOADING):
            return TNT.PLEASE_ABORT
        with self._timed(Stage.UPLOAD) as timer:
            try:
                outcome = await self._deps.work.upload(self.task_id, await self._authorization())
            except StepFailed as failure:
                timer.failed()
                self._log.warning("result upload failed: %s (%s)", failure.cause, failure)
                return await self._enter(RS.RESULT_UPLOAD_FAILED, failure.cause)
        await self._deps.store.update_fields(self.task_id, result_link=outcome.result_link)
        details = ReplicateStatusDetails(
            result_link=outcome.result_link, chain_callback_data=outcome.callback_data
        )
        return await self._enter(RS.RESULT_UPLOADED, details=details)

    async def _complete(self, _: TaskNotification) -> TaskNotificationType | None:
        if not await self._ongoing(RS.COMPLETING):
            return TNT.PLEASE_ABORT
        with self._timed(Stage.COMPLETE) as timer:
            try:
                await self._deps.work.purge(self.task_id)
            except StepFailed as failure:
                timer.failed()
                return await self._enter(RS.COMPLETE_FAILED, failure.cause)
        return await self._enter(RS.COMPLETED)

    async def _abort(self, notification: TaskNotification) -> None:
        if self.finished:
            return
        cause = _abort_cause(notification)
        self._log.info("aborting: %s", cause)
        with self._timed(Stage.ABORT), contextlib.suppress(StepFailed):
            await self._deps.work.purge(self.task_id)
        await self._enter(RS.ABORTED, cause)


class _StageTimer:
    def __init__(self, stage: Stage, observer: Observer) -> None:
        self._stage = stage
        self._observer = observer
        self._ok = True
        self._started = 0.0

    def failed(self) -> None:
        self._ok = False

    def __enter__(self) -> _StageTimer:
        self._started = time.monotonic()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        ok = self._ok and exc_type is None
        self._observer.stage_finished(self._stage, time.monotonic() - self._started, ok)
