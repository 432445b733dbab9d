"""Completes resumed replicates whose task was finalized while this worker was down.

The scheduler's PLEASE_COMPLETE then reached nobody, and its recovery no longer lists a completed
task (a worker's participation ends with the task): without this the replicate would wait forever.
As PLEASE_COMPLETE itself, it applies in any state: a replicate that never revealed is completed too,
which purges its folder; the scheduler refuses COMPLETING from there and the replicate ends ABORTED,
as a Java worker's does.
"""

from __future__ import annotations

import logging

from worker.membership.ports import Chain, Replicates
from worker.protocol.errors import WorkerError
from worker.protocol.status import ChainTaskStatus, ReplicateStatus, TaskNotificationType
from worker.replicate.pipeline import local_notification

log = logging.getLogger("iexec.worker")


async def complete_finalized(chain: Chain, replicates: Replicates) -> list[str]:
    """Deliver PLEASE_COMPLETE to each held replicate whose task is COMPLETED on chain."""
    completed: list[str] = []
    for task_id in replicates.active:
        if replicates.status_of(task_id) in (None, ReplicateStatus.COMPLETING):
            continue
        try:
            task = await chain.task(task_id)
        except WorkerError as exc:
            log.warning("%s: cannot read the task on chain (%s); waiting for the scheduler", task_id, exc)
            continue
        if task.status is ChainTaskStatus.COMPLETED:
            log.info("%s: completed on chain while this worker was down: completing the replicate", task_id)
            replicates.notify(local_notification(task_id, TaskNotificationType.PLEASE_COMPLETE))
            completed.append(task_id)
    return completed
