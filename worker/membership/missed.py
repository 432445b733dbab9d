"""Polls for the news the push channel would have brought, while it is down.

iexec-core sends some next actions only through the push channel: PLEASE_UPLOAD to the replicate it
picks for the result, PLEASE_COMPLETE once the task is finalized (its answer to REVEALED or
RESULT_UPLOADED is PLEASE_WAIT). The chain watcher covers PLEASE_REVEAL; nothing else would. While
the channel is down and a replicate waits for such news, the worker asks the scheduler: first the
task's status (``GET /tasks/{id}``, public, no side effect): COMPLETED there means the scheduler has
seen the finalization, so a local PLEASE_COMPLETE is valid (a completed task leaves the recovery's
list, as a worker's participation ends with it); otherwise the scheduler's recovery
(``GET /replicates/interrupted``), which computes each replicate's next action from the task's state.
What they answer is delivered; the pipelines drop what no longer fits.

That call marks the listed replicates RECOVERING, from which iexec-core accepts every status but
CREATED and STARTING. So it is made only while no replicate of this worker is before STARTED, and
only while one waits for news (quiet in CONTRIBUTED, REVEALED, RESULT_UPLOADED …): never while the
channel works, never for a replicate in the middle of a stage.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from worker.membership.ports import Push
from worker.membership.waiting import sleep_or_stop
from worker.protocol.errors import WorkerError
from worker.protocol.models import TaskNotification
from worker.protocol.status import TaskNotificationType
from worker.replicate.pipeline import local_notification

log = logging.getLogger("iexec.worker")

MISSED_NEWS_PERIOD = 15.0


class RecoveryScheduler(Protocol):
    async def get_interrupted(self, block_number: int) -> list[TaskNotification]: ...

    async def get_task_status(self, chain_task_id: str) -> str | None: ...


class BlockReader(Protocol):
    async def latest_block_number(self) -> int: ...


class Waiting(Protocol):
    @property
    def waiting_for_news(self) -> list[str]:
        """Replicates with no stage running, in a status where only the scheduler's news moves them."""
        ...

    @property
    def not_started(self) -> bool:
        """True while a replicate is before STARTED (the scheduler would refuse its STARTING after RECOVERING)."""
        ...

    def notify(self, notification: TaskNotification) -> None: ...


class MissedNews:
    def __init__(
        self,
        scheduler: RecoveryScheduler,
        chain: BlockReader,
        replicates: Waiting,
        push: Push,
        *,
        period: float = MISSED_NEWS_PERIOD,
    ) -> None:
        self._scheduler = scheduler
        self._chain = chain
        self._replicates = replicates
        self._push = push
        self._period = period

    async def poll_once(self) -> list[TaskNotification]:
        """Ask once if the channel is down and a replicate waits; the notifications delivered."""
        if self._push.is_connected or self._replicates.not_started:
            return []
        waiting = self._replicates.waiting_for_news
        if not waiting:
            return []
        news: list[TaskNotification] = []
        try:
            for task_id in waiting:
                if await self._scheduler.get_task_status(task_id) == "COMPLETED":
                    news.append(local_notification(task_id, TaskNotificationType.PLEASE_COMPLETE))
            if len(news) < len(waiting):
                news += await self._scheduler.get_interrupted(await self._chain.latest_block_number())
        except WorkerError as exc:
            log.warning("push channel down and cannot ask the scheduler for missed news: %s", exc)
            return []
        for notification in news:
            log.info(
                "%s: %s found by polling while the push channel is down",
                notification.chain_task_id, notification.task_notification_type,
            )  # fmt: skip
            self._replicates.notify(notification)
        return news

    async def run(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, self._period):
            await self.poll_once()
