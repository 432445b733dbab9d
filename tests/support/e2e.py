"""Helpers of the end-to-end scenarios: reading the scheduler's records, a local registry, counting logs."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from devnet.platform import Platform, start_worker_process, worker_env, write_env_file
from tests.support import free_port, until
from tests.support.docker import start_registry
from worker.app import run_worker
from worker.chain.abi import TASK_CONTRIBUTE_TOPIC
from worker.config import load_settings
from worker.protocol.status import ReplicateStatus

RS = ReplicateStatus


def unique_worker_name(index: int) -> str:
    """A worker name no concurrent run shares: a worker removes every container labelled with its name at start."""
    return f"e2e-{uuid.uuid4().hex[:8]}-worker-{index}"


def status_time(platform: Platform, task_id: str, wallet: str, status: ReplicateStatus) -> float:
    """When the scheduler recorded ``status`` for this replicate (wall clock); fails if it never did."""
    replicate = platform.scheduler.state.replicate(task_id, wallet)
    assert replicate is not None, f"no replicate of {task_id} for {wallet}"
    times = [change.wall_time for change in replicate.history if change.status is status]
    assert times, f"{task_id}: {status} never recorded for {wallet} (history {replicate.statuses})"
    return times[0]


def computing_interval(platform: Platform, task_id: str, wallet: str) -> tuple[float, float]:
    return (
        status_time(platform, task_id, wallet, RS.COMPUTING),
        status_time(platform, task_id, wallet, RS.COMPUTED),
    )


@contextlib.asynccontextmanager
async def local_registry(root: Path) -> AsyncIterator[str]:
    """A Debian ``docker-registry`` serving ``127.0.0.1:<free port>`` without authentication."""
    port = free_port()
    config = root / "config.yml"
    text = (
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )

    def write() -> None:
        root.mkdir(parents=True, exist_ok=True)
        config.write_text(text)

    await asyncio.to_thread(write)
    process = await start_registry(config, port)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await process.wait()


async def contribute_count(platform: Platform, task_id: str, wallet: str) -> int:
    """TaskContribute logs on chain for this task from this wallet: what a second contribution would add to."""
    w3 = platform.devnet.w3
    logs = await w3.eth.get_logs({
        "fromBlock": 0,
        "toBlock": "latest",
        "address": w3.to_checksum_address(platform.devnet.deployment.hub),
        "topics": [TASK_CONTRIBUTE_TOPIC, task_id, "0x" + wallet.lower().removeprefix("0x").rjust(64, "0")],
    })  # fmt: skip
    return len(logs)


class RunningWorker:
    def __init__(
        self, task: asyncio.Task[int], stop: asyncio.Event, address: str, base_dir: Path, name: str = ""
    ) -> None:
        self.task = task
        self.stop = stop
        self.address = address
        self.base_dir = base_dir
        self.name = name

    async def shutdown(self) -> int:
        self.stop.set()
        return await asyncio.wait_for(self.task, 60)


@contextlib.asynccontextmanager
async def running_worker(
    platform: Platform,
    index: int,
    base_dir: Path,
    *,
    slots: int = 1,
    env: dict[str, str] | None = None,
    tee: str | None = None,
) -> AsyncIterator[RunningWorker]:
    """A worker of the platform running in this event loop; ``env`` adds or overrides settings, ``tee``
    ("sgx" or "tdx") makes it a worker of the platform's emulated TEE side.

    Its name is unique: at start a worker removes every container labelled with its name, so two runs
    of the suite on one Docker engine must not share names.
    """
    unique = {"IEXEC_WORKER_NAME": f"e2e-{uuid.uuid4().hex[:8]}-worker-{index}"}
    env = {**worker_env(platform.info(), index, base_dir, slots=slots, tee=tee), **unique, **(env or {})}
    settings = await asyncio.to_thread(load_settings, write_env_file(base_dir / ".env", env))
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop=stop, install_signals=False), name=f"worker-{index}")
    worker = RunningWorker(task, stop, platform.workers[index].address, base_dir, env["IEXEC_WORKER_NAME"])
    try:
        yield worker
    finally:
        if not task.done():
            stop.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 60)
        if not task.done():
            task.cancel()


class WorkerProcess:
    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    async def until(
        self,
        predicate: Callable[[], bool | Awaitable[bool]],
        *,
        within: float,
        every: float = 0.02,
        what: str,
    ) -> None:
        """``until``, failing with the end of the worker's log: what it did is the diagnosis."""
        try:
            await until(predicate, within=within, every=every, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.output()}") from None

    async def kill_9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(self.process.wait(), 10) == -signal.SIGKILL

    async def stop(self) -> None:
        """SIGTERM, as an orchestrator stops the worker: it drains and exits 0."""
        self.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(self.process.wait(), 60) == 0, self.output()


@contextlib.asynccontextmanager
async def worker_process(env_file: Path, log: Path) -> AsyncIterator[WorkerProcess]:
    process = await start_worker_process(env_file, log)
    try:
        yield WorkerProcess(process, log)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def local_status(db: Path, task_id: str) -> ReplicateStatus | None:
    """The worker's own record, read as an operator would with the sqlite3 shell."""
    if not db.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:
        try:
            row = conn.execute("SELECT status FROM replicates WHERE task_id = ?", (task_id,)).fetchone()
        except sqlite3.OperationalError:  # the worker has not created its tables yet
            return None
    return ReplicateStatus(row[0]) if row else None
