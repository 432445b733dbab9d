"""The free-space watch and the demand pause it causes, over a fake file system (unit tests: no service)."""

from __future__ import annotations

from pathlib import Path

from tests.membership.fakes import (
    POOL,
    WALLET,
    FakeChain,
    FakeReplicates,
    FakeScheduler,
    authorization,
    task_id,
)
from worker.membership import Health, ReplicateDemand
from worker.membership.disk import DiskSpace
from worker.membership.engine import EngineWaits
from worker.metrics import Metrics
from worker.protocol.models import ReplicateTaskSummary
from worker.protocol.status import ChainTaskStatus

FOLDER = Path("/srv/iexec-worker")
GIB = 1 << 30


class FakeDisk:
    def __init__(self, free: int | None) -> None:
        self.free = free
        self.asked: list[Path] = []

    def __call__(self, folder: Path) -> int | None:
        self.asked.append(folder)
        return self.free


def _value(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


async def test_below_the_minimum_health_names_the_folder_the_bytes_and_the_fix_and_metrics_flag_it() -> None:
    health, metrics, disk = Health(), Metrics(), FakeDisk(GIB // 2)
    space = DiskSpace(FOLDER, GIB, health, metrics, measure=disk)

    assert await space.check() is True

    assert disk.asked == [FOLDER]
    problem = health.report()[1]["problems"]["disk"]
    assert str(FOLDER) in problem
    assert str(GIB // 2) in problem
    assert str(GIB) in problem
    assert "IEXEC_WORKER_BASE_DIR_MIN_FREE_BYTES" in problem
    assert "delete" in problem
    assert health.report()[1]["diskLow"] is True
    assert _value(metrics, "iexec_worker_disk_free_bytes") == GIB // 2
    assert _value(metrics, "iexec_worker_disk_min_free_bytes") == GIB
    assert _value(metrics, "iexec_worker_disk_low") == 1


async def test_space_freed_clears_the_problem_and_the_flag() -> None:
    health, metrics, disk = Health(), Metrics(), FakeDisk(0)
    space = DiskSpace(FOLDER, GIB, health, metrics, measure=disk)
    await space.check()
    disk.free = 2 * GIB

    assert await space.check() is False

    assert "disk" not in health.problems
    assert health.disk_low is False
    assert _value(metrics, "iexec_worker_disk_low") == 0


async def test_a_minimum_of_zero_never_pauses_and_an_unreadable_disk_is_not_low() -> None:
    assert await DiskSpace(FOLDER, 0, Health(), Metrics(), measure=FakeDisk(0)).check() is False
    assert await DiskSpace(FOLDER, GIB, Health(), Metrics(), measure=FakeDisk(None)).check() is False


async def test_a_store_write_waiting_for_space_shows_in_health_and_metrics_until_it_went_through() -> None:
    health, metrics = Health(), Metrics()
    waiting: list[str | None] = ["the disk holding the replicate store /srv/w.sqlite3 is full"]
    space = DiskSpace(FOLDER, 0, health, metrics, store_full=lambda: waiting[0], measure=FakeDisk(GIB))

    await space.check()
    assert "replicate store" in health.problems["store"]
    assert _value(metrics, "iexec_worker_store_waiting_for_space") == 1

    waiting[0] = None
    await space.check()
    assert "store" not in health.problems
    assert _value(metrics, "iexec_worker_store_waiting_for_space") == 0


async def test_no_replicate_is_asked_for_while_the_disk_is_low_and_demand_resumes_once_space_is_freed() -> (
    None
):
    summary = ReplicateTaskSummary(workerpool_authorization=authorization(task_id(1)))
    scheduler = FakeScheduler(offers=[summary])
    chain, replicates = FakeChain(tasks={task_id(1): ChainTaskStatus.ACTIVE}), FakeReplicates()
    health, metrics, disk = Health(), Metrics(), FakeDisk(1)
    demand = ReplicateDemand(
        scheduler, chain, replicates, health, metrics, pool_address=POOL, wallet=WALLET, ask_period=0.01,
        disk=DiskSpace(FOLDER, GIB, health, metrics, measure=disk),
    )  # fmt: skip

    assert await demand.ask_once() is False
    assert scheduler.asked_at_blocks == []

    disk.free = GIB
    assert await demand.ask_once() is True
    assert replicates.admitted == [task_id(1)]


def test_replicates_waiting_for_the_engine_show_in_health_and_metrics_until_none_waits() -> None:
    health, metrics = Health(), Metrics()
    waits = EngineWaits(health, metrics)

    waits({"0xaa"}, "run of app:1: ServerDisconnectedError")
    assert "run of app:1" in health.problems["engine"]
    assert "dockerd" in health.problems["engine"]
    assert _value(metrics, "iexec_worker_engine_waits") == 1

    waits(set(), None)
    assert "engine" not in health.problems
    assert _value(metrics, "iexec_worker_engine_waits") == 0
