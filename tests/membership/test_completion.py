"""Completing replicates whose task was finalized while the worker was down (unit tests: fakes)."""

from __future__ import annotations

from tests.membership.fakes import FakeChain, FakeReplicates, task_id
from worker.membership import complete_finalized
from worker.protocol.status import ChainTaskStatus, ReplicateStatus, TaskNotificationType

RS = ReplicateStatus


async def test_every_replicate_of_a_completed_task_is_completed_whatever_its_state() -> None:
    replicates = FakeReplicates(
        statuses={
            task_id(1): RS.REVEALED,
            task_id(2): RS.RESULT_UPLOADED,
            task_id(3): RS.REVEALED,
            task_id(4): RS.CONTRIBUTED,
        }
    )
    chain = FakeChain(
        tasks={
            task_id(1): ChainTaskStatus.COMPLETED,
            task_id(2): ChainTaskStatus.COMPLETED,
            task_id(3): ChainTaskStatus.REVEALING,
            task_id(4): ChainTaskStatus.COMPLETED,
        }
    )
    # A winner that never revealed (CONTRIBUTED) is completed too, as PLEASE_COMPLETE reaches it.
    assert await complete_finalized(chain, replicates) == [task_id(1), task_id(2), task_id(4)]
    assert [(n.chain_task_id, n.task_notification_type) for n in replicates.notified] == [
        (task_id(1), TaskNotificationType.PLEASE_COMPLETE),
        (task_id(2), TaskNotificationType.PLEASE_COMPLETE),
        (task_id(4), TaskNotificationType.PLEASE_COMPLETE),
    ]


async def test_an_unreachable_node_leaves_the_replicates_to_the_scheduler() -> None:
    replicates = FakeReplicates(statuses={task_id(1): RS.REVEALED})
    assert await complete_finalized(FakeChain(down=True), replicates) == []
    assert replicates.notified == []
