"""Soak: many tasks in a row on one worker process, sampling what a leak would grow (memory, fds, containers, disk).

One worker process (``python -m worker.cli run``, one slot) works BENCH_SOAK_TASKS tasks (default 200)
of the short hello app on the local platform, fed a few tasks at a time so that none waits past its
deadline. After every 50 completed tasks it prints the worker's resident memory (VmRSS), its open file
descriptors, the containers labelled with its name, the bytes of its SQLite journal (with the -wal and
-shm files) and the bytes of everything else under its base dir. It ends with the slope per 100 tasks of
each, by least squares over those samples: a leak shows as a slope that does not stay near zero.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench._figures import Figure
from devnet.core.state import TaskStatus
from devnet.images import HELLO, ensure_images
from devnet.platform import Platform, buy, worker_env, write_env_file
from worker.compute import WORKER_LABEL, DockerEngine

TASKS = int(os.environ.get("BENCH_SOAK_TASKS", "200"))
EVERY = 50  # tasks between samples
BATCH = 4  # tasks per deal: few enough that each is worked well before its deal's deadlines
WORKER_NAME = "soak-worker"


@dataclass(frozen=True)
class Sample:
    tasks: int
    rss_kib: int
    fds: int
    containers: int
    db_bytes: int
    other_bytes: int


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _tree_bytes(base: Path, db: Path) -> tuple[int, int]:
    """(bytes of the journal and its -wal/-shm, bytes of every other file under ``base``)."""
    journal = {db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")}
    db_bytes = other = 0
    for path in base.rglob("*"):
        try:
            if not path.is_file() or path.is_symlink():
                continue
            size = path.stat().st_size
        except OSError:  # a task folder removed while walking
            continue
        if path in journal:
            db_bytes += size
        else:
            other += size
    return db_bytes, other


async def _containers(name: str) -> int:
    process = await asyncio.create_subprocess_exec(
        "docker", "ps", "-a", "-q", "--filter", f"label={WORKER_LABEL}={name}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    output, _ = await process.communicate()
    return len(output.split())


async def _sample(tasks: int, pid: int, base: Path, db: Path) -> Sample:
    db_bytes, other = await asyncio.to_thread(_tree_bytes, base, db)
    return Sample(
        tasks=tasks,
        rss_kib=_rss_kib(pid),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        containers=await _containers(WORKER_NAME),
        db_bytes=db_bytes,
        other_bytes=other,
    )


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x; 0 with fewer than two distinct x."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


async def _soak(platform: Platform, base: Path) -> tuple[list[Sample], float]:
    info = platform.info()
    env = worker_env(info, 0, base / "worker") | {"IEXEC_WORKER_NAME": WORKER_NAME}
    env_file = write_env_file(base / "worker.env", env)
    db = base / "worker" / f"{WORKER_NAME}.sqlite3"
    log = await asyncio.to_thread((base / "worker.log").open, "wb")
    with log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker.cli", "run", "--env-file", str(env_file),
            stdout=log, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    samples: list[Sample] = []
    try:
        bought: list[str] = []
        done = 0
        started = time.monotonic()
        while done < TASKS:
            if process.returncode is not None:
                tail = (base / "worker.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the worker exited ({process.returncode}):\n{tail}")
            completed = sum(platform.scheduler.task_status(t) is TaskStatus.COMPLETED for t in bought)
            if len(bought) - completed < 2 and len(bought) < TASKS:
                volume = min(BATCH, TASKS - len(bought))
                bought += (await buy(info, image=HELLO.tag, args="soak", volume=volume)).task_ids
            if completed > done:
                for reached in range(done + 1, completed + 1):
                    if reached % EVERY == 0 or reached == TASKS:
                        sample = await _sample(reached, process.pid, base / "worker", db)
                        samples.append(sample)
                        _print(sample, time.monotonic() - started)
                done = completed
            failed = [t for t in bought if platform.scheduler.task_status(t) is TaskStatus.FAILED]
            if failed:
                tail = (base / "worker.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"task {failed[0]} FAILED:\n{tail}")
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - started
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 90)
    return samples, elapsed


def _print(sample: Sample, elapsed: float) -> None:
    print(
        f"{sample.tasks:4d} tasks ({elapsed:6.1f} s): rss {sample.rss_kib / 1024:7.1f} MiB, fds {sample.fds:3d}, "
        f"containers {sample.containers}, journal {sample.db_bytes / 1024:8.1f} KiB, "
        f"other files {sample.other_bytes / 1024:8.1f} KiB",
        flush=True,
    )


async def main() -> list[Figure]:
    async with await DockerEngine.open() as engine:
        await ensure_images(engine, [HELLO])
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        platform = await Platform.up(base / "platform", workers=1, ask_for_replicate_period_ms=200)
        try:
            samples, elapsed = await _soak(platform, base)
        finally:
            await platform.stop()

    def per_100(value: float) -> float:
        return round(value * 100, 3)

    rss = per_100(slope([(s.tasks, s.rss_kib / 1024) for s in samples]))
    fds = per_100(slope([(s.tasks, s.fds) for s in samples]))
    db = per_100(slope([(s.tasks, s.db_bytes / 1024) for s in samples]))
    disk = per_100(slope([(s.tasks, s.other_bytes / 1024) for s in samples]))
    containers = samples[-1].containers if samples else 0
    print(
        f"slopes per 100 tasks: rss {rss:+.2f} MiB, fds {fds:+.2f}, journal {db:+.2f} KiB, "
        f"other files {disk:+.2f} KiB; containers left {containers}; {elapsed / TASKS:.2f} s per task"
    )
    return [
        Figure("soak_tasks", TASKS),
        Figure("soak_rss_slope", rss, "MiB/100tasks"),
        Figure("soak_fd_slope", fds, "fds/100tasks"),
        Figure("soak_containers_left", containers),
        Figure("soak_db_slope", db, "KiB/100tasks"),
        Figure("soak_disk_slope", disk, "KiB/100tasks"),
        Figure("soak_seconds_per_task", round(elapsed / TASKS, 3), "s"),
    ]
