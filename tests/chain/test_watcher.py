"""The chain watcher on real anvil + PoCo: consensus of its own result, deadlines, finalization seen in logs.

The replicates it watches come from a plain list (the supervisor's view in the worker), and its deliveries
are recorded instead of reaching a pipeline.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from devnet.accounts import Role, account
from devnet.contracts import DEVNET_TIMEREF, Devnet
from devnet.toolkit import Toolkit
from tests.support.chain import MemoryJournal, new_tasks, worker_account
from worker.chain.client import ChainClient
from worker.chain.transactions import TransactionSender
from worker.chain.watcher import ChainWatcher
from worker.protocol.crypto import authorization_hash, sign_eip191
from worker.protocol.status import ReplicateStatus, TaskAbortCause, TaskNotificationType

pytestmark = pytest.mark.e2e

DIGEST = "0x" + hashlib.sha256(b"watcher").hexdigest()
RS, TNT = ReplicateStatus, TaskNotificationType


@pytest_asyncio.fixture(loop_scope="session")
async def chain(net: Devnet) -> AsyncIterator[ChainClient]:
    async with await ChainClient.connect(net.rpc_url, net.deployment.hub) as client:
        yield client


class Held:
    def __init__(self) -> None:
        self.statuses: dict[str, ReplicateStatus] = {}
        self.delivered: list[tuple[str, TaskNotificationType, int, TaskAbortCause | None]] = []

    def tasks(self) -> list[tuple[str, ReplicateStatus | None]]:
        return list(self.statuses.items())

    def deliver(
        self, task_id: str, action: TaskNotificationType, block: int, cause: TaskAbortCause | None
    ) -> None:
        self.delivered.append((task_id, action, block, cause))


async def _contribute(chain: ChainClient, task_id: str, index: int) -> int:
    worker = worker_account(index)
    signature = sign_eip191(authorization_hash(worker.address, task_id), bytes(account(Role.SCHEDULER).key))
    sender = TransactionSender(chain, worker, MemoryJournal(), poll_interval=0.05)
    return (await sender.contribute(task_id, DIGEST, signature)).block_number


async def test_its_own_consensus_gives_one_local_please_reveal_with_the_block(
    net: Devnet, chain: ChainClient
) -> None:
    toolkit = Toolkit(net.w3, net.deployment)
    held = Held()
    watcher = ChainWatcher(chain, worker_account(12).address, held.tasks, held.deliver)
    ours, theirs = await new_tasks(net, toolkit, 2)
    held.statuses = {ours: RS.CONTRIBUTING, theirs: RS.COMPUTING}
    await watcher.poll()
    block = await _contribute(chain, ours, 12)  # trust 1: this contribution is the consensus
    await _contribute(chain, theirs, 13)  # another worker's consensus: not this worker's to reveal
    await net.anvil.mine(2)

    await watcher.poll()
    assert held.delivered == []  # still CONTRIBUTING locally: the pipeline would drop it
    held.statuses[ours] = RS.CONTRIBUTED
    await watcher.poll()
    await watcher.poll()

    assert held.delivered == [(ours, TNT.PLEASE_REVEAL, block, None)]


async def test_a_consensus_reached_before_the_watch_started_is_found_in_past_blocks(
    net: Devnet, chain: ChainClient
) -> None:
    toolkit = Toolkit(net.w3, net.deployment)
    (task_id,) = await new_tasks(net, toolkit, 1)
    block = await _contribute(chain, task_id, 14)
    await net.anvil.mine(5)
    held = Held()
    held.statuses = {task_id: RS.CONTRIBUTED}
    watcher = ChainWatcher(chain, worker_account(14).address, held.tasks, held.deliver)

    await watcher.poll()

    assert held.delivered == [(task_id, TNT.PLEASE_REVEAL, block, None)]


async def test_a_passed_contribution_deadline_aborts_locally(net: Devnet, chain: ChainClient) -> None:
    toolkit = Toolkit(net.w3, net.deployment)
    (task_id,) = await new_tasks(net, toolkit, 1)
    held = Held()
    held.statuses = {task_id: RS.COMPUTING}
    watcher = ChainWatcher(chain, worker_account(15).address, held.tasks, held.deliver)
    await watcher.poll()
    assert held.delivered == []

    await net.anvil.increase_time(7 * DEVNET_TIMEREF + 1)
    await net.anvil.mine()
    await watcher.poll()
    await watcher.poll()

    assert held.delivered == [(task_id, TNT.PLEASE_ABORT, 0, TaskAbortCause.CONTRIBUTION_TIMEOUT)]


async def test_its_own_consensus_is_revealed_only_once_the_scheduler_has_seen_it(
    net: Devnet, chain: ChainClient
) -> None:
    """iexec-core counts as winners only replicates still CONTRIBUTED when it sees the consensus."""
    toolkit = Toolkit(net.w3, net.deployment)
    (task_id,) = await new_tasks(net, toolkit, 1)
    block = await _contribute(chain, task_id, 16)
    await net.anvil.mine(2)
    held = Held()
    held.statuses = {task_id: RS.CONTRIBUTED}
    asked: list[str] = []
    scheduler_in_reveal_phase = False

    async def reveal_allowed(asked_for: str) -> bool:
        asked.append(asked_for)
        return scheduler_in_reveal_phase

    watcher = ChainWatcher(
        chain, worker_account(16).address, held.tasks, held.deliver, reveal_allowed=reveal_allowed
    )
    await watcher.poll()
    await watcher.poll()
    assert held.delivered == []
    assert asked == [task_id, task_id]  # asked again at every poll

    scheduler_in_reveal_phase = True
    await watcher.poll()
    await watcher.poll()
    assert held.delivered == [(task_id, TNT.PLEASE_REVEAL, block, None)]
    assert len(asked) == 3


async def test_a_passed_reveal_deadline_aborts_with_reveal_timeout(net: Devnet, chain: ChainClient) -> None:
    """The cause iexec-core gives a replicate that missed its reveal deadline, not UNKNOWN."""
    toolkit = Toolkit(net.w3, net.deployment)
    (task_id,) = await new_tasks(net, toolkit, 1)
    await _contribute(chain, task_id, 17)  # trust 1: the consensus, and its reveal deadline, start now
    held = Held()
    held.statuses = {task_id: RS.REVEALING}  # a reveal that never got mined
    watcher = ChainWatcher(chain, worker_account(17).address, held.tasks, held.deliver)
    await watcher.poll()
    assert held.delivered == []

    await net.anvil.increase_time(2 * DEVNET_TIMEREF + 1)
    await net.anvil.mine()
    await watcher.poll()

    assert held.delivered == [(task_id, TNT.PLEASE_ABORT, 0, TaskAbortCause.REVEAL_TIMEOUT)]


async def test_a_passed_final_deadline_is_named_by_what_the_worker_lacked(
    net: Devnet, chain: ChainClient
) -> None:
    toolkit = Toolkit(net.w3, net.deployment)
    contributed, idle = await new_tasks(net, toolkit, 2)
    await _contribute(chain, contributed, 18)
    held = Held()
    held.statuses = {contributed: RS.REVEALED, idle: RS.COMPUTING}
    watcher = ChainWatcher(chain, worker_account(18).address, held.tasks, held.deliver)
    await watcher.poll()
    held.delivered.clear()

    await net.anvil.increase_time(10 * DEVNET_TIMEREF + 1)
    await net.anvil.mine()
    await watcher.poll()

    assert sorted(held.delivered) == sorted([
        (contributed, TNT.PLEASE_ABORT, 0, TaskAbortCause.REVEAL_TIMEOUT),
        (idle, TNT.PLEASE_ABORT, 0, TaskAbortCause.CONTRIBUTION_TIMEOUT),
    ])  # fmt: skip
