"""Development scheduler, task progression and detectors (unit tests).

The chain is ``FakeChain`` (in memory, the ``SchedulerChain`` Protocol); HTTP is real on 127.0.0.1.
The replicate supply rule is checked directly on in-memory tasks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from eth_account import Account

from devnet.core import DevScheduler, TaskStatus
from devnet.core.state import DealParams, Modifier, Replicate, Task
from devnet.core.supply import needs_more_contributions, worker_weight
from tests.support import until
from tests.support.core_fakes import FAKE_DEPLOYMENT, WORKERPOOL, FakeChain, FakeResults, WorkerClient
from worker.protocol.crypto import chain_task_id, result_hash
from worker.protocol.status import ReplicateStatus, TaskNotificationType

DEAL = "0x" + "cd" * 32
TASK = chain_task_id(DEAL, 0)
DIGEST = "0x" + "11" * 32
LINK = '{ "storage": "ipfs", "location": "/ipfs/QmTest" }'
RS = ReplicateStatus
TNT = TaskNotificationType


@pytest_asyncio.fixture
async def chain() -> FakeChain:
    return FakeChain()


@pytest_asyncio.fixture
async def scheduler(chain: FakeChain) -> AsyncIterator[DevScheduler]:
    dev = await DevScheduler.start(
        toolkit=None,
        deployment=FAKE_DEPLOYMENT,
        rpc_url="http://127.0.0.1:8545",
        workerpool=WORKERPOOL,
        scheduler_account=Account.create(),
        result_proxy_url="http://127.0.0.1:1",
        ask_for_replicate_period_ms=600,
        poll_interval_s=0.05,
        worker_lost_after_s=0.5,
        chain=chain,
        results=FakeResults(),
    )
    yield dev
    await dev.stop()


@pytest_asyncio.fixture
async def worker(scheduler: DevScheduler, chain: FakeChain) -> AsyncIterator[WorkerClient]:
    async with aiohttp.ClientSession() as http:
        client = WorkerClient(http, scheduler.url, Account.create())
        await client.login()
        await client.register()
        chain.add_deal(DEAL)
        await until(lambda: scheduler.task_status(TASK) is TaskStatus.INITIALIZED, what="task initialized")

        async def granted() -> bool:
            return (await client.available()).status == 200

        await until(granted, within=5, every=0.15, what="a replicate")
        yield client


async def walk(worker: WorkerClient, *statuses: str) -> list[Any]:
    return [(await worker.update(TASK, status)).json() for status in statuses]


def sent(scheduler: DevScheduler, kind: TaskNotificationType) -> list[dict[str, Any]]:
    return [n.to_wire() for n in scheduler.notifications if n.task_notification_type is kind]


async def test_full_cycle_consensus_upload_finalize(
    scheduler: DevScheduler, chain: FakeChain, worker: WorkerClient
) -> None:
    await walk(worker, "STARTING", "STARTED", "APP_DOWNLOADING", "APP_DOWNLOADED", "DATA_DOWNLOADING",
               "DATA_DOWNLOADED", "COMPUTING", "COMPUTED", "CONTRIBUTING")  # fmt: skip
    chain.contribute(TASK, worker.wallet, result_hash(TASK, DIGEST))
    receipt = {"chainReceipt": {"blockNumber": chain.block.number, "txHash": "0x" + "aa" * 32}}
    assert (await worker.update(TASK, "CONTRIBUTED", receipt)).json() == "PLEASE_WAIT"

    await until(lambda: bool(sent(scheduler, TNT.PLEASE_REVEAL)), what="PLEASE_REVEAL")
    [reveal] = sent(scheduler, TNT.PLEASE_REVEAL)
    assert reveal["workersAddress"] == [worker.wallet]
    assert reveal["taskNotificationExtra"]["blockNumber"] == chain.consensus_blocks[TASK]
    assert scheduler.task_status(TASK) is TaskStatus.CONSENSUS_REACHED
    assert sent(scheduler, TNT.PLEASE_ABORT) == []

    assert (await worker.update(TASK, "REVEALING")).json() == "PLEASE_CONTINUE"
    chain.reveal(TASK, worker.wallet)
    assert (await worker.update(TASK, "REVEALED", receipt)).json() == "PLEASE_WAIT"
    await until(lambda: bool(sent(scheduler, TNT.PLEASE_UPLOAD)), what="PLEASE_UPLOAD")
    assert sent(scheduler, TNT.PLEASE_UPLOAD)[0]["workersAddress"] == [worker.wallet]

    assert (await worker.update(TASK, "RESULT_UPLOADING")).json() == "PLEASE_CONTINUE"
    uploaded = await worker.update(TASK, "RESULT_UPLOADED", {"resultLink": LINK, "chainCallbackData": None})
    assert uploaded.json() == "PLEASE_WAIT"
    await until(lambda: bool(sent(scheduler, TNT.PLEASE_COMPLETE)), what="PLEASE_COMPLETE")
    assert sent(scheduler, TNT.PLEASE_COMPLETE)[0]["workersAddress"] == []
    assert chain.finalized == [(TASK, LINK.encode(), b"")]
    assert scheduler.task_history(TASK) == [
        TaskStatus.RECEIVED, TaskStatus.INITIALIZING, TaskStatus.INITIALIZED, TaskStatus.RUNNING,
        TaskStatus.CONSENSUS_REACHED, TaskStatus.AT_LEAST_ONE_REVEALED, TaskStatus.RESULT_UPLOADING,
        TaskStatus.RESULT_UPLOADED, TaskStatus.FINALIZING, TaskStatus.FINALIZED, TaskStatus.COMPLETED,
    ]  # fmt: skip

    await walk(worker, "COMPLETING", "COMPLETED")
    assert scheduler.replicate_history(TASK, worker.wallet)[-6:] == [
        RS.REVEALED, RS.RESULT_UPLOAD_REQUESTED, RS.RESULT_UPLOADING, RS.RESULT_UPLOADED, RS.COMPLETING, RS.COMPLETED,
    ]  # fmt: skip
    assert (await worker.call("GET", "/workers/computing")).json() == []


async def test_contribution_timeout_fails_the_task_and_aborts_its_workers(
    scheduler: DevScheduler, chain: FakeChain, worker: WorkerClient
) -> None:
    await walk(worker, "STARTING", "STARTED")
    deadline = scheduler.state.tasks[TASK].contribution_deadline
    chain.mine(seconds=deadline - chain.block.timestamp)
    await until(lambda: scheduler.task_status(TASK) is TaskStatus.FAILED, what="task FAILED")
    assert TaskStatus.CONTRIBUTION_TIMEOUT in scheduler.task_history(TASK)
    [abort] = sent(scheduler, TNT.PLEASE_ABORT)
    assert abort["workersAddress"] == [worker.wallet]
    assert abort["taskAbortCause"] == "CONTRIBUTION_TIMEOUT"
    assert (await worker.available()).status == 204


async def test_final_deadline_aborts_everyone(
    scheduler: DevScheduler, chain: FakeChain, worker: WorkerClient
) -> None:
    await walk(worker, "STARTING", "STARTED", "APP_DOWNLOADING", "APP_DOWNLOADED", "DATA_DOWNLOADING",
               "DATA_DOWNLOADED", "COMPUTING", "COMPUTED", "CONTRIBUTING")  # fmt: skip
    chain.contribute(TASK, worker.wallet, result_hash(TASK, DIGEST))
    await worker.update(
        TASK, "CONTRIBUTED", {"chainReceipt": {"blockNumber": chain.block.number, "txHash": "0x1"}}
    )
    await until(lambda: scheduler.task_status(TASK) is TaskStatus.CONSENSUS_REACHED, what="consensus")
    chain.mine(seconds=scheduler.state.tasks[TASK].final_deadline - chain.block.timestamp)
    await until(lambda: scheduler.task_status(TASK) is TaskStatus.FAILED, what="task FAILED")
    assert TaskStatus.FINAL_DEADLINE_REACHED in scheduler.task_history(TASK)
    [abort] = sent(scheduler, TNT.PLEASE_ABORT)
    assert abort["workersAddress"] == []
    assert abort["taskAbortCause"] == "UNKNOWN"


async def test_silent_worker_is_lost(scheduler: DevScheduler, worker: WorkerClient) -> None:
    await walk(worker, "STARTING", "STARTED")
    await until(
        lambda: RS.WORKER_LOST in scheduler.replicate_history(TASK, worker.wallet), what="WORKER_LOST"
    )
    # Back from the dead, it may go on from where it was (WORKER_LOST allows any workflow status).
    assert (await worker.update(TASK, "APP_DOWNLOADING")).json() == "PLEASE_CONTINUE"


# -- replicate supply ---------------------------------------------------------------------------


def _task(trust: int) -> Task:
    return Task(
        task_id=TASK, deal_id=DEAL, index=0, trust=trust, tag="0x" + "00" * 32, callback="0x" + "00" * 20,
        deal_params=DealParams(), timeref=100, contribution_deadline=700, final_deadline=1000,
        initialization_block=1,
    )  # fmt: skip


def _add(
    task: Task, name: str, *statuses: ReplicateStatus, weight: int = 2, hash_: str | None = None
) -> None:
    replicate = Replicate(task.task_id, name, created_at=0, worker_weight=weight, contribution_hash=hash_)
    for status in statuses:
        replicate.append(status, Modifier.WORKER)
    task.replicates[name] = replicate


def test_worker_weight_follows_poco() -> None:
    assert [worker_weight(s) for s in (0, 8, 9, 12, 30)] == [2, 2, 2, 3, 9]


@pytest.mark.parametrize(
    ("trust", "pending", "expected"),
    [(1, 0, True), (1, 1, False), (3, 1, True), (3, 2, False), (3, 3, False)],
)
def test_supply_stops_when_pending_workers_can_reach_consensus(
    trust: int, pending: int, expected: bool
) -> None:
    # Weight 2 each, folded 2 -> 4 -> 8. Trust 3 wants best*3 > (1+best)*2, i.e. best > 2.
    task = _task(trust)
    for i in range(pending):
        _add(task, f"w{i}", RS.CREATED)
    assert needs_more_contributions(task, now=10) is expected


def test_stale_or_failed_replicates_do_not_count_as_pending() -> None:
    task = _task(1)
    _add(task, "old", RS.CREATED)
    assert not needs_more_contributions(task, now=50)
    assert needs_more_contributions(task, now=100)  # older than one maxExecutionTime
    task = _task(1)
    _add(task, "failed", RS.CREATED, RS.FAILED)
    assert needs_more_contributions(task, now=10)


def test_contributed_groups_weigh_against_each_other() -> None:
    task = _task(3)
    _add(task, "a", RS.CREATED, RS.CONTRIBUTED, hash_="0xaa")
    _add(task, "b", RS.CREATED, RS.CONTRIBUTED, hash_="0xbb")
    # best 2, others 2: 2*3 = 6 > (1+4)*2 = 10 fails, so more replicates are wanted.
    assert needs_more_contributions(task, now=10)
