"""End-to-end fixtures: a whole platform (anvil + PoCo, development scheduler, result proxy) and real workers.

Everything here is real: the chain, the contracts, Docker and HTTP on 127.0.0.1. Each test module gets
its own platform, because the scheduler owns every deal of its workerpool.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from devnet.images import ensure_images
from devnet.platform import Platform, worker_env, write_env_file
from tests.conftest import devnet_cache_dir
from worker.app import run_worker
from worker.compute import DockerEngine
from worker.config import load_settings


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def platform(tmp_path_factory: object) -> AsyncIterator[Platform]:
    base = Path(str(tmp_path_factory.mktemp("platform")))  # type: ignore[attr-defined]
    async with await DockerEngine.open() as engine:
        await ensure_images(engine)
    up = await Platform.up(base, cache_dir=devnet_cache_dir(), workers=3, ask_for_replicate_period_ms=300)
    try:
        yield up
    finally:
        await up.stop()


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
    platform: Platform, index: int, base_dir: Path, *, slots: int = 1, env: dict[str, str] | None = None
) -> AsyncIterator[RunningWorker]:
    """A worker of the platform running in this event loop; ``env`` adds or overrides settings.

    Its name is unique: at start a worker removes every container labelled with its name, so two runs
    of the suite on one Docker engine must not share names.
    """
    unique = {"IEXEC_WORKER_NAME": f"e2e-{uuid.uuid4().hex[:8]}-worker-{index}"}
    env = {**worker_env(platform.info(), index, base_dir, slots=slots), **unique, **(env or {})}
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
