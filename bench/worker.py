"""Worker process start-up (launch to joined) and memory (peak RSS) on the local platform."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from devnet.core.state import TaskStatus
from devnet.images import HELLO, ensure_images
from devnet.platform import Platform, buy, worker_env, write_env_file
from worker.compute import DockerEngine

RUNS = 5


def _vm(pid: int, key: str) -> int:
    """VmRSS / VmHWM of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


async def main() -> None:
    async with await DockerEngine.open() as engine:
        await ensure_images(engine, [HELLO])
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        platform = await Platform.up(base / "platform", workers=1, ask_for_replicate_period_ms=500)
        try:
            info = platform.info()
            wallet = info.workers[0].address
            joins: list[float] = []
            rss_idle: list[int] = []
            rss_peak: list[int] = []
            for run in range(RUNS):
                env_file = write_env_file(base / f"w{run}.env", worker_env(info, 0, base / f"worker{run}"))
                platform.scheduler.state.workers.pop(wallet, None)
                started = time.monotonic()
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "worker.cli", "run", "--env-file", str(env_file),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=dict(os.environ),
                )  # fmt: skip
                while True:
                    record = platform.scheduler.state.workers.get(wallet)
                    if record and record.registered and record.last_demand is not None:
                        break
                    await asyncio.sleep(0.01)
                joins.append(time.monotonic() - started)
                rss_idle.append(_vm(proc.pid, "VmRSS"))
                purchase = await buy(info, image=HELLO.tag, args="bench")
                while platform.scheduler.task_status(purchase.task_ids[0]) is not TaskStatus.COMPLETED:  # noqa: ASYNC110 - polls the scheduler state
                    await asyncio.sleep(0.05)
                rss_peak.append(_vm(proc.pid, "VmHWM"))
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
        finally:
            await platform.stop()
    print(f"start-up, process launch to joined the pool: median {statistics.median(joins):.2f} s "
          f"(min {min(joins):.2f}, max {max(joins):.2f}, {RUNS} runs)")  # fmt: skip
    print(f"resident memory once joined: median {statistics.median(rss_idle) / 1024:.0f} MiB")
    print(f"peak resident memory through one task: median {statistics.median(rss_peak) / 1024:.0f} MiB")
