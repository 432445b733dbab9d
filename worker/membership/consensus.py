"""When the chain watcher may reveal on its own: once the scheduler has seen the consensus too.

iexec-core reaches its reveal phase only if every on-chain winner's replicate is still CONTRIBUTED when
it checks (``ReplicatesList.getNbValidContributedWinners``); a replicate already REVEALING or REVEALED
is not counted, and the task would stay RUNNING at the scheduler until its final deadline, every winner
losing its reward. The Java worker never meets this: it reveals only on PLEASE_REVEAL. This worker also
reveals on the consensus it reads on chain, to cover a PLEASE_REVEAL lost while the push channel was
down, but only once the scheduler's public view of the task says it is in its reveal phase.
"""

from __future__ import annotations

import logging
from typing import Protocol

from worker.protocol.errors import SchedulerError
from worker.protocol.status import SCHEDULER_REVEAL_PHASE

log = logging.getLogger("iexec.worker")


class TaskStatusSource(Protocol):
    async def get_task_status(self, chain_task_id: str) -> str | None: ...


class SchedulerConsensus:
    """``reveal_allowed`` of the chain watcher: True once the scheduler's task is in its reveal phase."""

    def __init__(self, scheduler: TaskStatusSource) -> None:
        self._scheduler = scheduler

    async def reached(self, task_id: str) -> bool:
        try:
            status = await self._scheduler.get_task_status(task_id)
        except SchedulerError as exc:
            log.warning("%s: cannot read the scheduler's task (%s); not revealing yet", task_id, exc)
            return False
        return status in SCHEDULER_REVEAL_PHASE
