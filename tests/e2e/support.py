"""Helpers of the end-to-end scenarios: reading the scheduler's records, a local registry, counting logs."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from devnet.platform import Platform
from tests.compute.conftest import _start_registry
from tests.support import free_port
from worker.chain.abi import TASK_CONTRIBUTE_TOPIC
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
    process = await _start_registry(config, port)
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
