"""One worker, 64 slots, 64 tasks of one deal at once: completion, throughput, CPU per replicate, loop lag, memory.

The worker runs as its own process (``iexec-worker run``) on the local platform with 64 slots
(``IEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT``) and buys one deal of volume 64 of the sleep app, which runs
long enough, and asked for often enough (every 100 ms), for all 64 replicates to run side by side. Figures:

- time from the purchase to the last task COMPLETED, and tasks per minute;
- the worker's CPU seconds per replicate: ``utime + stime`` of the process (``/proc/<pid>/stat``) over the run,
  minus what the same process spends idle over as long (measured once joined, before the purchase), over 64;
- the event loop's lag over the run, from the worker's own histogram ``iexec_worker_event_loop_lag_seconds``
  (the run's samples only: the difference of two scrapes; quantiles interpolated inside buckets, as
  Prometheus does) and its maximum gauge;
- the largest number of replicates computing at once (``iexec_worker_replicates{status="COMPUTING"}``, polled);
- the worker's peak RSS (``VmHWM``).

``BENCH_PROFILE=<file>`` runs the worker under cProfile and writes its profile there (figures then include the
profiler's own cost); ``BENCH_CONCURRENT_TASKS`` and ``BENCH_CONCURRENT_SLEEP`` change the volume and the app's
duration (seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench._figures import Figure
from bench._proc import free_port, start_asking_worker
from devnet.core.state import TaskStatus
from devnet.images import SLEEP, ensure_images
from devnet.platform import Platform, buy, worker_env, write_env_file
from worker.compute import DockerEngine

TASKS = int(os.environ.get("BENCH_CONCURRENT_TASKS", "64"))
SLEEP_SECONDS = int(os.environ.get("BENCH_CONCURRENT_SLEEP", "60"))
ASK_PERIOD_MS = 100
IDLE_SECONDS = 20.0
RUN_TIMEOUT = 1200.0
LAG = "iexec_worker_event_loop_lag_seconds"
_FINAL = {TaskStatus.COMPLETED, TaskStatus.FAILED}
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    # Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _vm_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class _Scrape:
    """The worker's metrics at one moment: the lag histogram's cumulative buckets and the gauges read here."""

    def __init__(self, text: str) -> None:
        self.buckets: dict[float, float] = {}
        self.lag_max = 0.0
        self.computing = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == f"{LAG}_bucket":
                    self.buckets[float(sample.labels["le"])] = sample.value
                elif sample.name == "iexec_worker_event_loop_lag_max_seconds":
                    self.lag_max = sample.value
                elif sample.name == "iexec_worker_replicates" and sample.labels.get("status") == "COMPUTING":
                    self.computing = sample.value


async def _scrape(session: aiohttp.ClientSession, url: str) -> _Scrape:
    async with session.get(url) as response:
        return _Scrape(await response.text())


def run_max_bound(before: dict[float, float], after: dict[float, float]) -> float:
    """The upper bound of the highest bucket a sample of the run fell in (inf: above the last bound)."""
    bounds = sorted(after)
    previous = 0.0
    highest = 0.0
    for bound in bounds:
        count = after[bound] - before.get(bound, 0.0)
        if count > previous:
            highest = bound
        previous = count
    return highest


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """``histogram_quantile`` over the samples taken between two scrapes of a cumulative histogram."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if total <= 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower  # beyond the last finite bucket: its bound is all that is known
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


async def main() -> list[Figure]:
    async with await DockerEngine.open() as engine:
        await ensure_images(engine, [SLEEP])
    with tempfile.TemporaryDirectory(prefix="iexec-bench-concurrent-") as tmp:
        base = Path(tmp)
        platform = await Platform.up(base / "platform", workers=1, ask_for_replicate_period_ms=ASK_PERIOD_MS)
        proc: asyncio.subprocess.Process | None = None
        try:
            info = platform.info()
            wallet = info.workers[0].address
            port = free_port()
            env = worker_env(info, 0, base / "worker", slots=TASKS, port=port)
            # A name of its own: other devnet workers on this Docker engine purge the containers of theirs.
            env["IEXEC_WORKER_NAME"] = f"bench-concurrent-{os.getpid()}"
            env_file = write_env_file(base / "worker.env", env)
            profile = os.environ.get("BENCH_PROFILE")
            launcher = ["-m", "cProfile", "-o", profile] if profile else []
            log_path = base / "worker.log"
            proc = await start_asking_worker(platform, wallet, env_file, log_path, launcher=launcher)
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            async with aiohttp.ClientSession() as session:
                # What the worker costs doing nothing but asking for work, sampling its loop and pinging.
                idle_cpu = _cpu_seconds(proc.pid)
                await asyncio.sleep(IDLE_SECONDS)
                idle_rate = (_cpu_seconds(proc.pid) - idle_cpu) / IDLE_SECONDS

                before = await _scrape(session, metrics_url)
                cpu_before = _cpu_seconds(proc.pid)
                started = time.monotonic()
                purchase = await buy(
                    info, image=SLEEP.tag, args=str(SLEEP_SECONDS), volume=TASKS,
                    category=platform.devnet.deployment.categories["XS"],
                )  # fmt: skip
                peak_computing = 0.0
                statuses: list[TaskStatus | None] = []
                while time.monotonic() - started < RUN_TIMEOUT:
                    statuses = [platform.scheduler.task_status(t) for t in purchase.task_ids]
                    if all(s in _FINAL for s in statuses):
                        break
                    if proc.returncode is not None:
                        raise RuntimeError(f"the worker exited with code {proc.returncode}; see {log_path}")
                    with contextlib.suppress(aiohttp.ClientError):
                        peak_computing = max(peak_computing, (await _scrape(session, metrics_url)).computing)
                    await asyncio.sleep(0.25)
                elapsed = time.monotonic() - started
                cpu = _cpu_seconds(proc.pid) - cpu_before
                after = await _scrape(session, metrics_url)
            peak_rss = _vm_kib(proc.pid, "VmHWM") / 1024
        finally:
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 120)
                except TimeoutError:
                    proc.kill()
            await platform.stop()
    completed = sum(1 for s in statuses if s is TaskStatus.COMPLETED)
    per_replicate = (cpu - idle_rate * elapsed) / TASKS
    lag = {q: quantile(q, before.buckets, after.buckets) * 1000 for q in (0.5, 0.99)}
    print(f"{completed} of {TASKS} tasks COMPLETED in {elapsed:.1f} s ({completed / elapsed * 60:.1f} per minute); "
          f"at most {peak_computing:.0f} computing at once; app: sleep {SLEEP_SECONDS} s")  # fmt: skip
    print(f"worker CPU over the run {cpu:.2f} s, idle rate {idle_rate * 1000:.1f} ms/s "
          f"-> {per_replicate:.3f} s per replicate")  # fmt: skip
    print(f"event loop lag over the run: p50 {lag[0.5]:.2f} ms, p99 {lag[0.99]:.2f} ms, "
          f"max over the run <= {run_max_bound(before.buckets, after.buckets) * 1000:g} ms (its bucket), "
          f"max since start {after.lag_max * 1000:.1f} ms")  # fmt: skip
    print(f"worker peak RSS {peak_rss:.0f} MiB")
    return [
        Figure("concurrent64_completed", completed),
        Figure("concurrent64_lag_p99", round(lag[0.99], 2), "ms"),
        Figure("concurrent64_tasks_per_min", round(completed / elapsed * 60, 1)),
        Figure("replicate_cpu", round(per_replicate, 3), "s"),
        Figure("concurrent64_peak_rss", round(peak_rss, 1), "MiB"),
    ]
