"""Sends a replicate's statuses to the scheduler and turns its answer into the next action.

The scheduler answers some statuses only through the push channel, so a report waits for the channel
while it is down, but never forever: the chain watcher and recovery cover a lost notification. One
wait per outage: once the channel failed to come back, later reports of every replicate go straight
out until it is up again, so a long outage does not slow each status by the wait.

The client retries a failed update until the task's final deadline. When even that fails, the status
stays recorded locally and the replicate goes on without the scheduler's answer, as the reference
worker's does (a null next action): the chain watcher, the missed-news poll and the recovery at the
next start carry it. It never raises into the pipeline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from worker.membership.ports import Push, Scheduler
from worker.metrics import Metrics
from worker.protocol.errors import SchedulerError
from worker.protocol.models import ReplicateStatusDetails, ReplicateStatusUpdate
from worker.protocol.status import ReplicateStatus, TaskNotificationType, next_action
from worker.scheduler import UpdateKind

log = logging.getLogger("iexec.worker")

PUSH_READY_WAIT = 10.0
# Without a known final deadline, status updates are retried for an hour.
DEFAULT_REPORT_WINDOW = 3600.0


class SchedulerReporter:
    def __init__(
        self,
        scheduler: Scheduler,
        push: Push,
        deadline_of: Callable[[str], float | None],
        metrics: Metrics,
        *,
        push_wait: float = PUSH_READY_WAIT,
    ) -> None:
        self._scheduler = scheduler
        self._push = push
        self._deadline_of = deadline_of
        self._metrics = metrics
        self._push_wait = push_wait
        self._outage_waited = False

    async def report(
        self, task_id: str, status: ReplicateStatus, details: ReplicateStatusDetails | None = None
    ) -> TaskNotificationType | None:
        if self._push.is_connected:
            self._outage_waited = False
        elif not self._outage_waited and not await self._push.wait_connected(self._push_wait):
            self._outage_waited = True
            log.warning("push channel down: reporting without it (the chain watcher covers reveals)")
        update = ReplicateStatusUpdate(status=status, details=details)
        deadline = self._deadline_of(task_id) or time.time() + DEFAULT_REPORT_WINDOW
        try:
            outcome = await self._scheduler.update_status(task_id, update, deadline=deadline)
        except SchedulerError as exc:
            self._metrics.scheduler_errors.labels("updateStatus").inc()
            log.error(
                "%s: the scheduler did not take %s (%s); the replicate goes on without its answer. "
                "Check the scheduler's logs and that IEXEC_CORE_URL reaches it",
                task_id, status.value, exc,
            )  # fmt: skip
            return None
        if outcome.kind is UpdateKind.ABORT:
            return TaskNotificationType.PLEASE_ABORT
        if outcome.kind is UpdateKind.ALREADY_REPORTED:
            return next_action(status, details.cause if details else None)
        return outcome.action
