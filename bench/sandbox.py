"""Sandbox overhead: time from COMPUTING to COMPUTED of the demo task, without and with the sandbox.

Workers in turn on one local platform, each computing the demo task (the hello app) RUNS times: first with
bounds so high they never bind and no network (the devnet's setting), the closest this worker comes to no
sandbox; then the compatible profile without network; then the compatible and the strict profiles on the
isolated app network (its firewall rules checked before each run). The scheduler records when each status
arrived: the medians of COMPUTED minus COMPUTING are printed. Run as root (the isolated network installs
iptables rules; they and the network are removed at the end).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

from devnet.core.state import TaskStatus
from devnet.images import HELLO, ensure_images
from devnet.platform import Platform, buy, worker_env, write_env_file
from worker.compute import DockerEngine
from worker.compute.firewall import AppFirewall, DirectRunner, FirewallPlan, bridge_name
from worker.protocol.status import ReplicateStatus

RUNS = 7
HUGE = str(1 << 40)  # bounds no app reaches (the CPU bound is all the CPUs): the sandbox without its effect


def _computing_seconds(platform: Platform, task_id: str, wallet: str) -> float:
    replicate = platform.scheduler.state.replicate(task_id, wallet)
    assert replicate is not None
    times = {change.status: change.wall_time for change in replicate.history}
    return times[ReplicateStatus.COMPUTED] - times[ReplicateStatus.COMPUTING]


async def _measure(
    platform: Platform,
    base: Path,
    name: str,
    extra: dict[str, str],
    *,
    drop: tuple[str, ...] = (),
    process_env: dict[str, str] | None = None,
) -> list[float]:
    """Seconds from COMPUTING to COMPUTED of RUNS demo tasks computed by a worker with settings ``extra``;
    ``drop`` removes settings, ``process_env`` replaces the worker process's environment (another checkout)."""
    info = platform.info()
    wallet = info.workers[0].address
    env = {
        key: value for key, value in {**worker_env(info, 0, base / name), **extra}.items() if key not in drop
    }
    env_file = write_env_file(base / f"{name}.env", env)
    platform.scheduler.state.workers.pop(wallet, None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli", "run", "--env-file", str(env_file),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=process_env or dict(os.environ),
    )  # fmt: skip
    seconds = []
    try:
        for _ in range(RUNS):
            purchase = await buy(info, image=HELLO.tag, args="bench")
            task_id = purchase.task_ids[0]
            while platform.scheduler.task_status(task_id) is not TaskStatus.COMPLETED:
                if process.returncode is not None:
                    raise RuntimeError(f"worker {name} stopped (exit {process.returncode})")
                await asyncio.sleep(0.05)
            seconds.append(_computing_seconds(platform, task_id, wallet))
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()
    return seconds


async def main() -> None:
    async with await DockerEngine.open() as engine:
        await ensure_images(engine, [HELLO])
        network = f"bench-sandbox-{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            platform = await Platform.up(base / "platform", workers=1, ask_for_replicate_period_ms=300)
            try:
                unbounded = {
                    "IEXEC_WORKER_CONTAINER_MEMORY_LIMIT": HUGE, "IEXEC_WORKER_CONTAINER_CPU_LIMIT": str(os.cpu_count() or 1),
                    "IEXEC_WORKER_CONTAINER_OUTPUT_MAX_BYTES": HUGE, "IEXEC_WORKER_CONTAINER_PIDS_LIMIT": "1000000",
                }  # fmt: skip
                results = {
                    "no sandbox (no bounds, no network)": await _measure(platform, base, "baseline", unbounded),
                    "compatible, no network": await _measure(platform, base, "compatible", {}),
                    "compatible, isolated app network": await _measure(
                        platform, base, "isolated", {"IEXEC_WORKER_DOCKER_NETWORK_NAME": network}
                    ),
                    "strict, isolated app network": await _measure(
                        platform, base, "strict",
                        {"IEXEC_WORKER_DOCKER_NETWORK_NAME": network, "IEXEC_WORKER_SANDBOX_PROFILE": "strict"},
                    ),
                }  # fmt: skip
            finally:
                await platform.stop()
                await AppFirewall(FirewallPlan(bridge_name(network)), DirectRunner()).remove()
                await engine.remove_network(network)
    baseline = statistics.median(results["no sandbox (no bounds, no network)"])
    for label, seconds in results.items():
        median = statistics.median(seconds)
        print(
            f"COMPUTING -> COMPUTED, {label}: median {median:.3f} s (min {min(seconds):.3f}, max {max(seconds):.3f}, "
            f"{len(seconds)} runs), {median - baseline:+.3f} s against no sandbox"
        )
