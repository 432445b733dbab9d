"""The heartbeat policy, driven by fakes (unit tests: no service)."""

from __future__ import annotations

import asyncio

from tests.membership.fakes import FakePush, FakeReplicates, FakeScheduler, task_id
from worker.membership import Health, Heartbeat
from worker.metrics import Metrics
from worker.protocol.status import ReplicateStatus


def heartbeat(
    scheduler: FakeScheduler, replicates: FakeReplicates, push: FakePush, health: Health
) -> Heartbeat:
    return Heartbeat(scheduler, replicates, push, health, Metrics(), period=0.01)


async def test_a_ping_marks_the_worker_alive_and_records_the_push_channel() -> None:
    health = Health(joined=True)
    beat = heartbeat(FakeScheduler(), FakeReplicates(), FakePush(connected=False), health)
    assert await beat.beat() is False
    alive, body = health.report()
    assert alive
    assert body["pushChannelConnected"] is False
    assert body["problems"] == {}


async def test_a_failed_ping_is_a_problem_until_the_next_one_answers() -> None:
    scheduler, health = FakeScheduler(ping_error=True), Health(joined=True)
    beat = heartbeat(scheduler, FakeReplicates(), FakePush(), health)
    await beat.beat()
    assert "scheduler" in health.problems
    assert health.report()[0] is False  # never pinged successfully
    scheduler.ping_error = False
    await beat.beat()
    assert health.problems == {}


async def test_a_changed_configuration_asks_to_rejoin_once_no_replicate_computes() -> None:
    scheduler, replicates = FakeScheduler(), FakeReplicates(statuses={task_id(1): ReplicateStatus.COMPUTING})
    beat = heartbeat(scheduler, replicates, FakePush(), Health())
    assert await beat.beat() is False  # the first answer is the reference
    scheduler.config_hash = "0x" + "c1" * 32
    assert await beat.beat() is False  # a replicate still computes: wait
    replicates.statuses[task_id(1)] = ReplicateStatus.COMPUTED
    assert await beat.beat() is True


async def test_the_same_configuration_in_another_letter_case_is_no_change() -> None:
    scheduler = FakeScheduler()
    beat = heartbeat(scheduler, FakeReplicates(), FakePush(), Health())
    await beat.beat()
    scheduler.config_hash = (scheduler.config_hash or "").upper()
    assert await beat.beat() is False


async def test_run_sets_rejoin_and_returns_on_a_change_and_returns_on_stop() -> None:
    scheduler = FakeScheduler()
    beat = heartbeat(scheduler, FakeReplicates(), FakePush(), Health())
    stop, rejoin = asyncio.Event(), asyncio.Event()
    runner = asyncio.create_task(beat.run(stop, rejoin))
    await asyncio.sleep(0.03)
    scheduler.config_hash = "0x" + "c2" * 32
    await asyncio.wait_for(runner, 1)
    assert rejoin.is_set()

    stop2, rejoin2 = asyncio.Event(), asyncio.Event()
    runner = asyncio.create_task(
        heartbeat(FakeScheduler(), FakeReplicates(), FakePush(), Health()).run(stop2, rejoin2)
    )
    stop2.set()
    await asyncio.wait_for(runner, 1)
    assert not rejoin2.is_set()
