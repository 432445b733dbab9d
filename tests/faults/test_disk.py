"""Faults of the disk holding the worker's base dir: a small tmpfs made by the test fills up at download, at
compute, at zip and at a write of the replicate store; and the free-space minimum that pauses the demand.

Real platform (anvil with the PoCo contracts, development scheduler, result proxy), a real worker in this
event loop, real Docker apps whose /iexec_out lies on that tmpfs. A full disk is the worker's failure: the
replicate ends with ABORTED_BY_WORKER (a message naming the disk), nothing is contributed, nothing is left
behind and the worker goes on; a store write waits for space, then the task completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from devnet.core.state import TaskStatus
from devnet.images import SHELL, SLEEP
from devnet.platform import Platform, buy
from tests.support import free_port, until
from tests.support.docker import container_exists
from tests.support.e2e import RunningWorker, contribute_count, local_status, running_worker
from worker.compute import container_name
from worker.protocol.status import ReplicateStatus, ReplicateStatusCause

pytestmark = pytest.mark.e2e

RS = ReplicateStatus
MIB = 1 << 20
DISK_FULL = ReplicateStatusCause.ABORTED_BY_WORKER
FINAL = frozenset({RS.COMPLETED, RS.FAILED, RS.ABORTED})


@contextlib.contextmanager
def small_disk(where: Path, size_mib: int) -> Iterator[Path]:
    """A tmpfs of ``size_mib`` MiB mounted at ``where``, unmounted at the end."""
    where.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Write a file until the file system has ``leave`` bytes free (ENOSPC when ``leave`` is 0)."""
    filler = folder / "filler"
    with filler.open("wb") as out:
        while True:
            free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
            if free <= leave:
                break
            try:
                out.write(b"\0" * min(MIB, free - leave))
                out.flush()
            except OSError:
                break
    return filler


def script(text: str) -> str:
    """``iexec_args`` that hand ``text`` to the shell image as its single argument."""
    assert "'" not in text
    return f"'{text}'"


async def health(port: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/health") as response:
        body: dict[str, Any] = await response.json()
        return body


async def metric(port: int, name: str) -> float | None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


@contextlib.asynccontextmanager
async def serving(body: bytes) -> AsyncIterator[str]:
    """``body`` served at ``http://127.0.0.1:<port>/dataset.bin``."""

    async def dataset(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/dataset.bin", dataset)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/dataset.bin"
    finally:
        await runner.cleanup()


def _db(worker: RunningWorker) -> Path:
    return worker.base_dir / f"{worker.name}.sqlite3"


async def _ends_on_a_full_disk(
    platform: Platform,
    worker: RunningWorker,
    task_id: str,
    failed: RS,
    caplog: pytest.LogCaptureFixture,
    said: str,
) -> None:
    """The outcome every stage that meets a full disk must have; ``said`` is what the worker's log names."""
    db = _db(worker)
    await until(lambda: local_status(db, task_id) in FINAL, within=180, what=f"replicate {task_id} ended")
    replicate = platform.scheduler.state.replicate(task_id, worker.address.lower())
    assert replicate is not None
    causes = [(change.status, change.cause) for change in replicate.history]
    assert (failed, DISK_FULL) in causes, causes
    assert RS.CONTRIBUTED not in replicate.statuses
    failure = next(r.getMessage() for r in caplog.records if "ABORTED_BY_WORKER (" in r.getMessage())
    assert said in failure
    assert "is full" in failure
    assert "IEXEC_WORKER_BASE_DIR" in failure
    assert await contribute_count(platform, task_id, worker.address) == 0
    assert not worker.task.done(), "the worker stopped on a full disk"
    assert not await container_exists(container_name(worker.name, task_id))
    await until(
        lambda: not (worker.base_dir / worker.name / task_id).exists(), within=60, what="task folder removed"
    )


async def test_disk_full_while_the_app_writes_its_output(
    platform: Platform, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_disk(tmp_path / "disk", 16) as disk:
        env = {"IEXEC_WORKER_BASE_DIR_MIN_FREE_BYTES": "0"}
        async with running_worker(platform, 0, disk / "worker", env=env) as worker:
            app = "dd if=/dev/zero of=/iexec_out/fill bs=1M count=64; echo done > /iexec_out/result.txt"
            task_id = (await buy(platform.info(), image=SHELL.tag, args=script(app))).task_ids[0]
            await _ends_on_a_full_disk(platform, worker, task_id, RS.COMPUTE_FAILED, caplog, str(disk))
            assert await worker.shutdown() == 0


async def test_disk_full_while_the_result_is_zipped(
    platform: Platform, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_disk(tmp_path / "disk", 16) as disk:
        env = {"IEXEC_WORKER_BASE_DIR_MIN_FREE_BYTES": "0"}
        async with running_worker(platform, 0, disk / "worker", env=env) as worker:
            # 10 MiB that do not compress: written whole, but no room left for their zip.
            app = (
                "head -c 10485760 /dev/urandom > /iexec_out/result.bin && "
                'printf "{\\"deterministic-output-path\\":\\"/iexec_out/result.bin\\"}" > /iexec_out/computed.json'
            )
            task_id = (await buy(platform.info(), image=SHELL.tag, args=script(app))).task_ids[0]
            await _ends_on_a_full_disk(
                platform, worker, task_id, RS.COMPUTE_FAILED, caplog, "cannot be zipped"
            )
            assert await worker.shutdown() == 0


async def test_disk_full_while_the_dataset_downloads(
    platform: Platform, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_disk(tmp_path / "disk", 16) as disk:
        async with serving(os.urandom(32 * MIB)) as url:
            env = {"IEXEC_WORKER_BASE_DIR_MIN_FREE_BYTES": "0"}
            async with running_worker(platform, 0, disk / "worker", env=env) as worker:
                purchase = await buy(platform.info(), image=SHELL.tag, args=script("true"), dataset_url=url)
                task_id = purchase.task_ids[0]
                await _ends_on_a_full_disk(
                    platform, worker, task_id, RS.DATA_DOWNLOAD_FAILED, caplog, "No space left on device"
                )
                assert await worker.shutdown() == 0


async def test_store_write_on_a_full_disk_waits_for_space_then_completes(
    platform: Platform, tmp_path: Path
) -> None:
    port = free_port()
    with small_disk(tmp_path / "disk", 16) as disk:
        env = {"IEXEC_WORKER_BASE_DIR_MIN_FREE_BYTES": "0", "IEXEC_WORKER_PORT": str(port)}
        async with running_worker(platform, 0, disk / "worker", env=env) as worker:
            await until(lambda: _db(worker).exists(), within=120, what="replicate store created")
            await until(lambda: platform.scheduler.state.workers.get(worker.address.lower()) is not None,
                        within=120, what="worker joined")  # fmt: skip
            filler = await asyncio.to_thread(fill, disk)
            task_id = (await buy(platform.info(), image=SLEEP.tag, args="1")).task_ids[0]

            async def waiting_for_space() -> bool:
                return "store" in (await health(port)).get("problems", {})

            await until(
                waiting_for_space, within=120, every=0.2, what="/health naming the store waiting for space"
            )
            report = await health(port)
            assert "is full" in report["problems"]["store"]
            assert await metric(port, "iexec_worker_store_waiting_for_space") == 1
            assert not worker.task.done(), "the worker stopped on a full disk"

            await asyncio.to_thread(filler.unlink)
            await until(
                lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
                within=180,
                what=f"task {task_id} COMPLETED once space is back",
            )
            await until(
                lambda: local_status(_db(worker), task_id) is RS.COMPLETED, within=30, what="COMPLETED"
            )
            assert "store" not in (await health(port)).get("problems", {})
            assert await worker.shutdown() == 0

        with contextlib.closing(sqlite3.connect(_db(worker))) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            history = [
                s for (s,) in conn.execute("SELECT status FROM status_log WHERE task_id = ?", (task_id,))
            ]
        assert history.count(RS.CREATED.value) == 1
        assert history[-1] == RS.COMPLETED.value
    assert await contribute_count(platform, task_id, worker.address) == 1


async def test_below_the_free_space_minimum_no_replicate_is_taken_until_space_is_freed(
    platform: Platform, tmp_path: Path
) -> None:
    port = free_port()
    with small_disk(tmp_path / "disk", 32) as disk:
        filler = await asyncio.to_thread(fill, disk, 8 * MIB)
        env = {"IEXEC_WORKER_BASE_DIR_MIN_FREE_BYTES": str(16 * MIB), "IEXEC_WORKER_PORT": str(port)}
        async with running_worker(platform, 0, disk / "worker", env=env) as worker:

            async def low() -> bool:
                try:
                    return bool((await health(port)).get("diskLow"))
                except aiohttp.ClientError:
                    return False

            await until(low, within=120, every=0.2, what="/health reporting the disk low")
            problem = (await health(port))["problems"]["disk"]
            assert str(disk) in problem
            assert str(16 * MIB) in problem
            assert "IEXEC_WORKER_BASE_DIR_MIN_FREE_BYTES" in problem
            assert await metric(port, "iexec_worker_disk_low") == 1
            task_id = (await buy(platform.info(), image=SLEEP.tag, args="1")).task_ids[0]
            # Twenty looks, each after more than one asking period: the offer stays untaken while the disk is low.
            for _ in range(20):
                await asyncio.sleep(0.5)
                assert platform.scheduler.replicate_history(task_id, worker.address) == []
                assert await low()

            await asyncio.to_thread(filler.unlink)
            await until(
                lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
                within=180,
                what=f"task {task_id} COMPLETED once space is freed",
            )
            assert not await low()
            assert await metric(port, "iexec_worker_disk_low") == 0
            assert await worker.shutdown() == 0
    assert await contribute_count(platform, task_id, worker.address) == 1
