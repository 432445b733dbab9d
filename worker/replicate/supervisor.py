"""Holds the running replicate pipelines: admission, routing of notifications, resume, and drain.

One asyncio task per replicate. The supervisor counts computing slots the way the scheduler does
(a replicate holds a slot until it is COMPUTED or has failed before), routes every notification to
its pipeline, subscribes each task's push topic before the replicate's first status is sent, and on
stop waits a grace period for in-flight replicates before cancelling them. State lives in the
store, so a cancelled replicate resumes at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from worker.protocol.models import TaskNotification, WorkerpoolAuthorization
from worker.protocol.status import ReplicateStatus, TaskNotificationType
from worker.replicate.pipeline import PipelineDeps, ReplicatePipeline, local_notification

log = logging.getLogger("iexec.worker.supervisor")

TopicHook = Callable[[str], Awaitable[None]]

# After these, iexec-core sends the next action (PLEASE_REVEAL, PLEASE_UPLOAD, PLEASE_COMPLETE) by push only.
_WAITING_FOR_NEWS = frozenset({
    ReplicateStatus.CONTRIBUTED, ReplicateStatus.REVEALED, ReplicateStatus.RESULT_UPLOADED,
    ReplicateStatus.RESULT_UPLOAD_FAILED, ReplicateStatus.CONTRIBUTE_AND_FINALIZE_DONE,
})  # fmt: skip


class Supervisor:
    def __init__(
        self,
        deps: PipelineDeps,
        *,
        slots: int,
        wallet: str,
        subscribe: TopicHook,
        unsubscribe: TopicHook,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._deps = deps
        self.slots = slots
        self._wallet = wallet
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self._on_change = on_change or (lambda: None)
        self._pipelines: dict[str, ReplicatePipeline] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # -- capacity ---------------------------------------------------------------------------------

    @property
    def computing(self) -> int:
        return sum(1 for p in self._pipelines.values() if p.computing)

    @property
    def free_slots(self) -> int:
        return max(self.slots - self.computing, 0)

    @property
    def active(self) -> list[str]:
        return list(self._pipelines)

    @property
    def waiting_for_news(self) -> list[str]:
        """Replicates with no stage running, in a status only the scheduler's next news moves on from."""
        return [t for t, p in self._pipelines.items() if p.quiet and p.status in _WAITING_FOR_NEWS]

    @property
    def not_started(self) -> bool:
        return any(
            p.status in (ReplicateStatus.CREATED, ReplicateStatus.STARTING) for p in self._pipelines.values()
        )

    def status_of(self, task_id: str) -> ReplicateStatus | None:
        pipeline = self._pipelines.get(task_id)
        return pipeline.status if pipeline else None

    # -- admission and resume ---------------------------------------------------------------------

    async def admit(
        self, authorization: WorkerpoolAuthorization, *, sms_url: str | None = None, recovering: bool = False
    ) -> bool:
        """Take a new replicate: persist it, subscribe its topic, then start it. False if known.

        ``sms_url`` (TEE tasks) is stored with it: the scheduler does not send it again after a restart.
        ``recovering``: the scheduler holds it RECOVERING (taken back at start-up), so STARTING is not sent.
        """
        task_id = authorization.chain_task_id
        if task_id in self._pipelines:
            return False
        if not await self._deps.store.add(task_id, authorization.to_wire(), sms_url=sms_url):
            log.warning("%s: already in the local store, not started twice", task_id)
            return False
        await self._subscribe(task_id)
        pipeline = ReplicatePipeline(task_id, self._deps, recovering=recovering)
        self._launch(pipeline)
        pipeline.deliver(local_notification(task_id, TaskNotificationType.PLEASE_START))
        log.info("%s: replicate taken", task_id)
        return True

    async def resume(self, interrupted: list[TaskNotification]) -> int:
        """Restart every unfinished replicate of the store, then deliver the scheduler's recovery news."""
        records = await self._deps.store.unfinished()
        recovering = {n.chain_task_id for n in interrupted}  # the scheduler marked them RECOVERING
        for record in records:
            pipeline, first = ReplicatePipeline.resume(
                record, self._deps, recovering=record.task_id in recovering
            )
            await self._subscribe(record.task_id)
            self._launch(pipeline)
            if first is not None:
                pipeline.deliver(first)
            log.info("%s: resumed from %s", record.task_id, record.status)
        for notification in interrupted:
            if notification.chain_task_id in self._pipelines:
                self.notify(notification)
            else:  # received but never stored: see worker/membership/adoption.py
                log.debug(
                    "%s: the scheduler asks for %s but this worker has no record of it",
                    notification.chain_task_id,
                    notification.task_notification_type,
                )
        return len(records)

    def notify(self, notification: TaskNotification) -> None:
        if not notification.concerns(self._wallet):
            return
        pipeline = self._pipelines.get(notification.chain_task_id)
        if pipeline is None:
            log.debug(
                "%s: %s for a replicate this worker does not run",
                notification.chain_task_id,
                notification.task_notification_type,
            )
            return
        pipeline.deliver(notification)

    def _launch(self, pipeline: ReplicatePipeline) -> None:
        task_id = pipeline.task_id
        self._pipelines[task_id] = pipeline
        self._deps.observer.replicate_held(pipeline.status, True)
        task = asyncio.create_task(self._drive(pipeline), name=f"replicate:{task_id}")
        self._tasks[task_id] = task
        self._on_change()

    async def _drive(self, pipeline: ReplicatePipeline) -> None:
        task_id = pipeline.task_id
        try:
            await pipeline.run()
            log.info("%s: replicate ended %s", task_id, pipeline.status)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A replicate's failure fails that replicate only; it stays unfinished in the store and is
            # resumed at the next start.
            log.exception("%s: replicate pipeline crashed in %s", task_id, pipeline.status)
        finally:
            self._deps.observer.replicate_held(pipeline.status, False)
            self._pipelines.pop(task_id, None)
            self._tasks.pop(task_id, None)
            self._on_change()
            with contextlib.suppress(Exception):
                await asyncio.shield(self._unsubscribe(task_id))

    # -- stop -------------------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for stages in flight, then cancel every pipeline.

        Every pipeline is parked first: the stage in flight ends (its outcome recorded and reported),
        no next stage starts. Replicates that only wait for a notification have nothing in flight:
        their state is in the store and they resume at the next start, so they are not waited for.
        """
        pipelines = list(self._pipelines.values())
        for pipeline in pipelines:
            pipeline.park()
        if pipelines:
            log.info(
                "stopping: waiting up to %.0f s for the stages in flight of %d replicate(s)",
                grace,
                len(pipelines),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(p.wait_quiet() for p in pipelines)), grace)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("stopped %d replicate(s); they resume at the next start", len(tasks))
