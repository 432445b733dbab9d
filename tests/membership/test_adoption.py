"""Taking back a replicate received but never stored, driven by fakes (unit tests: no service)."""

from __future__ import annotations

from dataclasses import dataclass, field

from eth_account import Account
from eth_account.signers.local import LocalAccount

from tests.membership.fakes import OWNER, POOL, WALLET, FakeChain, authorization, task_id
from worker.membership import adopt_unstored
from worker.protocol.models import TaskNotification, TaskNotificationExtra, WorkerpoolAuthorization
from worker.protocol.status import ChainTaskStatus, TaskNotificationType

TNT = TaskNotificationType


@dataclass
class Admitting:
    active: list[str] = field(default_factory=list)
    admitted: list[tuple[str, bool]] = field(default_factory=list)

    async def admit(
        self, authorization: WorkerpoolAuthorization, *, sms_url: str | None = None, recovering: bool = False
    ) -> bool:
        self.admitted.append((authorization.chain_task_id, recovering))
        self.active.append(authorization.chain_task_id)
        return True


def recovered(
    n: int, action: TNT = TNT.PLEASE_CONTRIBUTE, *, signer: LocalAccount = OWNER, wallet: str = WALLET
) -> TaskNotification:
    signed = authorization(task_id(n), signer=signer, wallet=wallet)
    return TaskNotification(
        chain_task_id=task_id(n),
        workers_address=[WALLET],
        task_notification_type=action,
        task_notification_extra=TaskNotificationExtra(workerpool_authorization=signed),
    )


async def test_an_unstored_replicate_recovered_with_please_contribute_is_taken_back_as_recovering() -> None:
    chain = FakeChain(tasks={task_id(1): ChainTaskStatus.ACTIVE})
    replicates = Admitting()
    taken = await adopt_unstored(chain, replicates, [recovered(1)], pool_address=POOL, wallet=WALLET)
    assert taken == [task_id(1)]
    assert replicates.admitted == [(task_id(1), True)]


async def test_held_replicates_later_actions_and_bad_authorizations_are_left_to_the_scheduler() -> None:
    chain = FakeChain(tasks={task_id(n): ChainTaskStatus.ACTIVE for n in range(1, 5)})
    replicates = Admitting(active=[task_id(1)])
    stranger = Account.create()
    interrupted = [
        recovered(1),  # already resumed from the store
        recovered(2, TNT.PLEASE_REVEAL),  # nothing to reveal without the stored result
        recovered(3, signer=stranger),  # not signed by the pool owner
        recovered(4, wallet="0x" + "99" * 20),  # for another worker
    ]
    assert await adopt_unstored(chain, replicates, interrupted, pool_address=POOL, wallet=WALLET) == []
    assert replicates.admitted == []


async def test_a_chain_that_cannot_be_read_leaves_it_to_the_scheduler() -> None:
    chain = FakeChain(tasks={task_id(1): ChainTaskStatus.ACTIVE}, down=True)
    replicates = Admitting()
    assert await adopt_unstored(chain, replicates, [recovered(1)], pool_address=POOL, wallet=WALLET) == []
