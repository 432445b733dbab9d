"""Per-replicate overhead: the worker's own work on the demo task, as a ratio to the floor (app run + chain trips).

A worker process with one slot runs the demo app (hello) ``RUNS`` times, one task after the other, on the
local platform. Each task's purchase-to-COMPLETED time is split with the replicate statuses the scheduler
recorded (the time it received each report):

- busy: the spans where the worker works (STARTING..CONTRIBUTED, REVEALING..REVEALED,
  RESULT_UPLOADING..RESULT_UPLOADED, COMPLETING..COMPLETED), as ``make demo`` prints them;
- the floor inside them: the app's run (from its container's start to its exit as the engine records them,
  the worker's app compute duration, the reference's ``appComputeDurations``) and the chain round trips of
  its transactions (CONTRIBUTING..CONTRIBUTED and REVEALING..REVEALED: checked, simulated, signed, sent,
  mined, receipt read);
- the worker's own work: busy minus the floor (pull check, download, the container's creation and removal,
  bookkeeping, zip, digest, reports, token and upload, purge);
- waiting: the rest (the scheduler's turns and the chain outside the worker's spans).

``replicate_overhead_ratio`` is the worker's own work over the floor, median of the runs: 0 would be a worker
that adds nothing to what the app and the chain take.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench._figures import Figure
from bench._proc import free_port, start_asking_worker
from devnet.core.state import TaskStatus
from devnet.images import HELLO, ensure_images
from devnet.platform import Platform, buy, worker_env, write_env_file
from worker.compute import DockerEngine
from worker.protocol.status import ReplicateStatus

RS = ReplicateStatus
RUNS = int(os.environ.get("BENCH_OVERHEAD_RUNS", "3"))
TIMEOUT = 180.0
_BUSY = (
    (RS.STARTING, RS.CONTRIBUTED),
    (RS.REVEALING, RS.REVEALED),
    (RS.RESULT_UPLOADING, RS.RESULT_UPLOADED),
    (RS.COMPLETING, RS.COMPLETED),
)
_CHAIN = ((RS.CONTRIBUTING, RS.CONTRIBUTED), (RS.REVEALING, RS.REVEALED))
_DONE = (RS.COMPLETED, RS.FAILED, RS.ABORTED)


@dataclass(frozen=True)
class Split:
    total: float
    busy: float
    app: float
    chain: float

    @property
    def floor(self) -> float:
        return self.app + self.chain

    @property
    def own(self) -> float:
        return self.busy - self.floor

    @property
    def ratio(self) -> float:
        return self.own / self.floor


async def _app_millis(session: aiohttp.ClientSession, url: str) -> float:
    """Sum of the app compute durations the worker recorded (count x mean of its window)."""
    async with session.get(url) as response:
        durations = json.loads(await response.text())["appComputeDurations"]
    count = durations["durationSamplesCount"]
    return float(count * durations["averageDuration"]) if count else 0.0


async def _one_task(
    platform: Platform, session: aiohttp.ClientSession, metrics_url: str, wallet: str
) -> Split:
    app_before = await _app_millis(session, metrics_url)
    bought = time.time()
    purchase = await buy(platform.info(), image=HELLO.tag, args="bench")
    task_id = purchase.task_ids[0]
    deadline = time.monotonic() + TIMEOUT
    while True:
        replicate = platform.scheduler.state.replicate(task_id, wallet)
        if (
            platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED
            and replicate is not None
            and replicate.history
            and replicate.last_status in _DONE
        ):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {task_id} not COMPLETED within {TIMEOUT:.0f} s")
        await asyncio.sleep(0.05)
    at = {change.status: change.wall_time for change in replicate.history}
    if replicate.last_status is not RS.COMPLETED:
        raise RuntimeError(f"replicate of task {task_id} ended {replicate.last_status.value}")

    def spans(pairs: tuple[tuple[RS, RS], ...]) -> float:
        return sum(at[end] - at[start] for start, end in pairs if start in at and end in at)

    app = (await _app_millis(session, metrics_url) - app_before) / 1000
    return Split(total=at[RS.COMPLETED] - bought, busy=spans(_BUSY), app=app, chain=spans(_CHAIN))


async def main() -> list[Figure]:
    async with await DockerEngine.open() as engine:
        await ensure_images(engine, [HELLO])
    splits: list[Split] = []
    with tempfile.TemporaryDirectory(prefix="iexec-bench-overhead-") as tmp:
        base = Path(tmp)
        platform = await Platform.up(base / "platform", workers=1, ask_for_replicate_period_ms=500)
        proc: asyncio.subprocess.Process | None = None
        try:
            info = platform.info()
            wallet = info.workers[0].address
            port = free_port()
            env = worker_env(info, 0, base / "worker", port=port)
            # A name of its own: other devnet workers on this Docker engine purge the containers of theirs.
            env["IEXEC_WORKER_NAME"] = f"bench-overhead-{os.getpid()}"
            env_file = write_env_file(base / "worker.env", env)
            log_path = base / "worker.log"
            proc = await start_asking_worker(platform, wallet, env_file, log_path)
            async with aiohttp.ClientSession() as session:
                for _ in range(RUNS):
                    splits.append(
                        await _one_task(platform, session, f"http://127.0.0.1:{port}/metrics/worker", wallet)
                    )
        finally:
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 60)
                except TimeoutError:
                    proc.kill()
            await platform.stop()
    for split in splits:
        print(f"purchase to COMPLETED {split.total:6.2f} s: worker busy {split.busy:5.2f} s = app {split.app:.2f} s "
              f"+ chain trips {split.chain:.2f} s + own work {split.own:.2f} s; waiting {split.total - split.busy:.2f} s; "
              f"own / floor {split.ratio:.2f}")  # fmt: skip

    def median(values: list[float]) -> float:
        return statistics.median(values)

    print(f"median over {len(splits)} tasks: own work {median([s.own for s in splits]):.2f} s, "
          f"floor {median([s.floor for s in splits]):.2f} s (app {median([s.app for s in splits]):.2f} s, "
          f"chain trips {median([s.chain for s in splits]):.2f} s), own / floor {median([s.ratio for s in splits]):.2f}")  # fmt: skip
    return [Figure("replicate_overhead_ratio", round(median([s.ratio for s in splits]), 2))]
