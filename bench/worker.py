"""Worker process start-up (launch to joined) and memory (resident size once joined, peak) on the local platform.

"Joined": the scheduler has the worker registered and has had its first replicate demand, which the
worker sends one ask period (here 0.5 s) after it logged in. The keystore's key derivation runs in a
child process from the first instant of ``run``, beside the worker's imports; its own time (scrypt,
set by the keystore's parameters) is measured apart, in this process, as the floor it puts under any
start. Figures are medians of several runs (the machine is shared: single runs drift).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from eth_account import Account

from bench._figures import Figure
from devnet.core.state import TaskStatus
from devnet.images import HELLO, ensure_images
from devnet.platform import Platform, buy, worker_env, write_env_file
from worker.compute import DockerEngine

RUNS = 7
ASK_PERIOD_MS = 500


def _vm(pid: int, key: str) -> int:
    """VmRSS / VmHWM of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _derivation(keystore: str, password_file: str) -> float:
    """Seconds of eth-account's decryption of the worker's keystore: the key derivation alone."""
    document = json.loads(Path(keystore).read_text())
    password = Path(password_file).read_text().rstrip("\r\n")
    started = time.perf_counter()
    Account.decrypt(document, password)
    return time.perf_counter() - started


async def main() -> list[Figure]:
    async with await DockerEngine.open() as engine:
        await ensure_images(engine, [HELLO])
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        platform = await Platform.up(base / "platform", workers=1, ask_for_replicate_period_ms=ASK_PERIOD_MS)
        try:
            info = platform.info()
            wallet = info.workers[0].address
            registered: list[float] = []
            joins: list[float] = []
            rss_idle: list[int] = []
            rss_peak: list[int] = []
            kdf: list[float] = []
            for run in range(RUNS):
                env = worker_env(info, 0, base / f"worker{run}")
                env_file = write_env_file(base / f"w{run}.env", env)
                platform.scheduler.state.workers.pop(wallet, None)
                started = time.monotonic()
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "worker.cli", "run", "--env-file", str(env_file),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=dict(os.environ),
                )  # fmt: skip
                seen_registered: float | None = None
                while True:
                    record = platform.scheduler.state.workers.get(wallet)
                    if record and record.registered and seen_registered is None:
                        seen_registered = time.monotonic() - started
                    if record and record.registered and record.last_demand is not None:
                        break
                    await asyncio.sleep(0.01)
                joins.append(time.monotonic() - started)
                registered.append(seen_registered or joins[-1])
                rss_idle.append(_vm(proc.pid, "VmRSS"))
                purchase = await buy(info, image=HELLO.tag, args="bench")
                while platform.scheduler.task_status(purchase.task_ids[0]) is not TaskStatus.COMPLETED:  # noqa: ASYNC110 - polls the scheduler state
                    await asyncio.sleep(0.05)
                rss_peak.append(_vm(proc.pid, "VmHWM"))
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
                kdf.append(
                    _derivation(env["IEXEC_WORKER_WALLET_PATH"], env["IEXEC_WORKER_WALLET_PASSWORD_FILE"])
                )
        finally:
            await platform.stop()
    median = statistics.median(joins)
    print(f"start-up, process launch to joined the pool: median {median:.2f} s "
          f"(min {min(joins):.2f}, max {max(joins):.2f}, {RUNS} runs)")  # fmt: skip
    print(f"  of which launch to registered (logged in): median {statistics.median(registered):.2f} s; "
          f"the first demand follows one ask period ({ASK_PERIOD_MS} ms) later")  # fmt: skip
    print(f"key derivation alone (the keystore's scrypt, eth-account): median {statistics.median(kdf):.2f} s")
    print(f"resident memory once joined: median {statistics.median(rss_idle) / 1024:.0f} MiB")
    print(f"peak resident memory through one task: median {statistics.median(rss_peak) / 1024:.0f} MiB")
    return [
        Figure("startup_median", round(median, 2), "s"),
        Figure("startup_registered_median", round(statistics.median(registered), 2), "s"),
        Figure("startup_kdf", round(statistics.median(kdf), 2), "s"),
        Figure("idle_rss", round(statistics.median(rss_idle) / 1024), "MiB"),
        Figure("peak_rss", round(statistics.median(rss_peak) / 1024), "MiB"),
    ]
