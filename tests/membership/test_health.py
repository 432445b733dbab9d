"""What /livez, /readyz and /health say through start-up (unit tests: no service)."""

from __future__ import annotations

import asyncio
import time

import pytest

from worker.membership import Health, StopRequested, retry_until_stopped
from worker.membership.health import StartStage
from worker.protocol.errors import SchedulerError


def test_alive_from_the_start_ready_only_once_joined_and_pinged() -> None:
    health = Health()
    assert health.liveness() == {"status": "alive", "stage": "starting", "detail": "starting"}
    health.enter(StartStage.WALLET, "decrypting the wallet /w.json")
    ready, body = health.readiness()
    assert not ready
    assert body == {"status": "not ready", "stage": "wallet", "waitingFor": "decrypting the wallet /w.json"}
    health.joined = True
    assert health.readiness()[1]["waitingFor"] == "a successful ping of the scheduler"
    health.last_ping_ok = time.time()
    assert health.readiness() == (True, {"status": "ready", "stage": "wallet"})
    alive, report = health.report()
    assert alive
    assert report["stage"] == "wallet"


async def test_the_retry_says_what_it_waits_for_at_which_attempt() -> None:
    health, stop, calls = Health(), asyncio.Event(), 0
    details: list[str] = []

    async def config() -> str:
        nonlocal calls
        calls += 1
        details.append(health.detail)
        if calls < 3:
            raise SchedulerError("connection refused")
        return "ok"

    import worker.membership.join as join

    join.FIRST_RETRY_DELAY, saved = 0.001, join.FIRST_RETRY_DELAY
    try:
        assert (
            await retry_until_stopped("read the configuration", config, stop, health=health, where="X")
            == "ok"
        )
    finally:
        join.FIRST_RETRY_DELAY = saved
    assert (
        details[1]
        == "waiting for X (attempt 1, next in 0 s): cannot read the configuration: connection refused"
    )
    assert details[2].startswith("waiting for X (attempt 2, next in 0 s)")


async def test_a_stop_during_the_retry_ends_it() -> None:
    stop = asyncio.Event()
    stop.set()

    async def down() -> None:
        raise SchedulerError("down")

    with pytest.raises(StopRequested):
        await retry_until_stopped("x", down, stop)
