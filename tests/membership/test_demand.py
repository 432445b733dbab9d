"""The replicate demand policy, driven by fakes (unit tests: no service)."""

from __future__ import annotations

import asyncio

from eth_account import Account

from tests.membership.fakes import (
    POOL,
    WALLET,
    FakeChain,
    FakeReplicates,
    FakeScheduler,
    authorization,
    task_id,
)
from tests.support import until
from worker.membership import Health, ReplicateDemand
from worker.metrics import Metrics
from worker.protocol.models import ReplicateTaskSummary
from worker.protocol.status import ChainTaskStatus, ReplicateStatus


def demand(
    scheduler: FakeScheduler, chain: FakeChain, replicates: FakeReplicates, health: Health | None = None
) -> ReplicateDemand:
    return ReplicateDemand(
        scheduler, chain, replicates, health or Health(), Metrics(), pool_address=POOL, wallet=WALLET,
        ask_period=0.01,
    )  # fmt: skip


def offer(n: int, **kwargs: object) -> ReplicateTaskSummary:
    return ReplicateTaskSummary(workerpool_authorization=authorization(task_id(n), **kwargs))  # type: ignore[arg-type]


async def test_a_valid_offer_is_taken_at_the_latest_block() -> None:
    scheduler = FakeScheduler(offers=[offer(1)])
    chain, replicates = FakeChain(block=42, tasks={task_id(1): ChainTaskStatus.ACTIVE}), FakeReplicates()
    assert await demand(scheduler, chain, replicates).ask_once() is True
    assert replicates.admitted == [task_id(1)]
    assert scheduler.asked_at_blocks == [42]


async def test_no_demand_without_a_free_slot_or_while_out_of_gas() -> None:
    scheduler, chain = FakeScheduler(offers=[offer(1)]), FakeChain(tasks={task_id(1): ChainTaskStatus.ACTIVE})
    busy = FakeReplicates(slots=1, statuses={task_id(9): ReplicateStatus.COMPUTING})
    assert await demand(scheduler, chain, busy).ask_once() is False
    assert await demand(scheduler, chain, FakeReplicates(), Health(out_of_gas=True)).ask_once() is False
    assert scheduler.asked_at_blocks == []


async def test_an_offer_signed_by_someone_else_than_the_pool_owner_is_refused() -> None:
    stranger = Account.create()
    scheduler = FakeScheduler(offers=[offer(1, signer=stranger)])
    chain, replicates = FakeChain(tasks={task_id(1): ChainTaskStatus.ACTIVE}), FakeReplicates()
    assert await demand(scheduler, chain, replicates).ask_once() is False
    assert replicates.admitted == []


async def test_an_offer_for_another_wallet_is_refused() -> None:
    scheduler = FakeScheduler(offers=[offer(1, wallet="0x" + "99" * 20)])
    chain, replicates = FakeChain(tasks={task_id(1): ChainTaskStatus.ACTIVE}), FakeReplicates()
    assert await demand(scheduler, chain, replicates).ask_once() is False


async def test_an_offer_for_a_task_not_on_chain_is_skipped() -> None:
    scheduler, replicates = FakeScheduler(offers=[offer(1)]), FakeReplicates()
    assert await demand(scheduler, FakeChain(), replicates).ask_once() is False
    assert replicates.admitted == []


async def test_an_unreachable_node_skips_the_round_without_asking() -> None:
    scheduler, metrics = FakeScheduler(offers=[offer(1)]), Metrics()
    policy = ReplicateDemand(
        scheduler, FakeChain(down=True), FakeReplicates(), Health(), metrics, pool_address=POOL, wallet=WALLET,
        ask_period=0.01,
    )  # fmt: skip
    assert await policy.ask_once() is False
    assert scheduler.offers  # not consumed
    assert (
        metrics.registry.get_sample_value("iexec_worker_scheduler_errors_total", {"call": "available"}) == 1
    )


async def test_run_keeps_asking_until_stopped() -> None:
    scheduler = FakeScheduler(offers=[offer(1), offer(2)])
    chain = FakeChain(tasks={task_id(1): ChainTaskStatus.ACTIVE, task_id(2): ChainTaskStatus.ACTIVE})
    replicates = FakeReplicates(slots=2)
    stop = asyncio.Event()
    runner = asyncio.create_task(demand(scheduler, chain, replicates).run(stop))
    await until(lambda: len(replicates.admitted) == 2, within=2, what="two replicates taken")
    stop.set()
    await asyncio.wait_for(runner, 1)
    assert replicates.admitted == [task_id(1), task_id(2)]
