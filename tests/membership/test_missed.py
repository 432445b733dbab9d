"""The poll for news the push channel would have brought, driven by fakes (unit tests: no service)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.membership.fakes import WALLET, FakeChain, FakePush, task_id
from worker.membership import MissedNews
from worker.protocol.errors import SchedulerError
from worker.protocol.models import TaskNotification
from worker.protocol.status import TaskNotificationType

TNT = TaskNotificationType


@dataclass
class RecoveringScheduler:
    task_statuses: dict[str, str] = field(default_factory=dict)
    interrupted: list[TaskNotification] = field(default_factory=list)
    recovery_calls: int = 0
    down: bool = False

    async def get_interrupted(self, block_number: int) -> list[TaskNotification]:
        if self.down:
            raise SchedulerError("connection refused")
        self.recovery_calls += 1
        return self.interrupted

    async def get_task_status(self, chain_task_id: str) -> str | None:
        if self.down:
            raise SchedulerError("connection refused")
        return self.task_statuses.get(chain_task_id)


@dataclass
class WaitingReplicates:
    waiting_for_news: list[str] = field(default_factory=list)
    not_started: bool = False
    notified: list[tuple[str, TNT]] = field(default_factory=list)

    def notify(self, notification: TaskNotification) -> None:
        self.notified.append((notification.chain_task_id, notification.task_notification_type))


def upload(n: int) -> TaskNotification:
    return TaskNotification(
        chain_task_id=task_id(n), workers_address=[WALLET], task_notification_type=TNT.PLEASE_UPLOAD
    )


def missed(scheduler: RecoveringScheduler, replicates: WaitingReplicates, push: FakePush) -> MissedNews:
    return MissedNews(scheduler, FakeChain(), replicates, push, period=0.01)


async def test_with_the_channel_down_the_recovery_news_of_a_waiting_replicate_is_delivered() -> None:
    scheduler = RecoveringScheduler(interrupted=[upload(1)])
    replicates = WaitingReplicates(waiting_for_news=[task_id(1)])
    await missed(scheduler, replicates, FakePush(connected=False)).poll_once()
    assert replicates.notified == [(task_id(1), TNT.PLEASE_UPLOAD)]


async def test_a_task_completed_at_the_scheduler_completes_without_the_recovery_call() -> None:
    scheduler = RecoveringScheduler(task_statuses={task_id(1): "COMPLETED"})
    replicates = WaitingReplicates(waiting_for_news=[task_id(1)])
    await missed(scheduler, replicates, FakePush(connected=False)).poll_once()
    assert replicates.notified == [(task_id(1), TNT.PLEASE_COMPLETE)]
    assert scheduler.recovery_calls == 0


async def test_no_poll_while_the_channel_works_nothing_waits_or_a_replicate_is_not_started() -> None:
    scheduler = RecoveringScheduler(interrupted=[upload(1)])
    cases = [
        (WaitingReplicates(waiting_for_news=[task_id(1)]), FakePush(connected=True)),
        (WaitingReplicates(waiting_for_news=[]), FakePush(connected=False)),
        # The recovery call would make a CREATED replicate's STARTING refused: not while one is there.
        (WaitingReplicates(waiting_for_news=[task_id(1)], not_started=True), FakePush(connected=False)),
    ]
    for replicates, push in cases:
        assert await missed(scheduler, replicates, push).poll_once() == []
        assert replicates.notified == []
    assert scheduler.recovery_calls == 0


async def test_a_scheduler_that_cannot_answer_is_asked_again_at_the_next_poll() -> None:
    scheduler = RecoveringScheduler(interrupted=[upload(1)], down=True)
    replicates = WaitingReplicates(waiting_for_news=[task_id(1)])
    news = missed(scheduler, replicates, FakePush(connected=False))
    assert await news.poll_once() == []
    scheduler.down = False
    assert [n.task_notification_type for n in await news.poll_once()] == [TNT.PLEASE_UPLOAD]
