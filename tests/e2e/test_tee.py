"""End to end: TEE tasks (SCONE, Gramine, TDX) from purchase to COMPLETED on the EMULATED TEE devnet.

Real anvil with PoCo, real Docker, the development scheduler, the result proxy and the worker as in
production; the SMS, the enclaves (plain containers running the devnet's emulated pre/post-compute), the
TDX secret provider agent and the SGX devices (character devices with /dev/null's numbers, made by the
devnet or the test) are the emulated parts (docs/tee.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from devnet.core.state import TaskStatus
from devnet.images import HELLO, ensure_images
from devnet.platform import Platform, buy
from tests.support import until
from tests.support.devnet import devnet_cache_dir
from tests.support.e2e import running_worker
from worker.compute import DockerEngine
from worker.protocol.status import ChainTaskStatus, ReplicateStatus
from worker.protocol.tee import TeeFramework

pytestmark = pytest.mark.e2e

RS = ReplicateStatus


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def platform(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    base = tmp_path_factory.mktemp("tee-platform")
    async with await DockerEngine.open() as engine:
        await ensure_images(engine, [HELLO])
    up = await Platform.up(base, cache_dir=devnet_cache_dir(), workers=3, ask_for_replicate_period_ms=300, tee=True)
    try:
        yield up
    finally:
        await up.stop()


async def test_tdx_task_completes_with_one_contribute_and_finalize(platform: Platform, tmp_path: Path) -> None:
    wallet = platform.workers[0].address
    async with running_worker(platform, 0, tmp_path / "worker", tee="tdx"):
        purchase = await buy(platform.info(), image=HELLO.tag, args="tdx", tee=TeeFramework.TDX)
        task_id = purchase.task_ids[0]
        await until(
            lambda: platform.scheduler.task_status(task_id) in (TaskStatus.COMPLETED, TaskStatus.FAILED),
            within=120,
            what=f"task {task_id} COMPLETED",
        )
    assert platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED
    assert platform.scheduler.replicate_history(task_id, wallet)[-4:] == [
        RS.CONTRIBUTE_AND_FINALIZE_ONGOING, RS.CONTRIBUTE_AND_FINALIZE_DONE, RS.COMPLETING, RS.COMPLETED
    ]
    assert (await platform.toolkit.view_task(task_id)).status is ChainTaskStatus.COMPLETED
