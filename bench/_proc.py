"""What the benchmarks read of a process (this one's memory, a port to give a worker) and how they start a
worker process on a devnet platform and wait until it asks for work."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

from devnet.platform import Platform


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB (``VmRSS``, ``VmHWM``), 0 when absent."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_high_water_mark() -> bool:
    """Start ``VmHWM`` again from the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start_asking_worker(
    platform: Platform, wallet: str, env_file: Path, log_path: Path, *, launcher: list[str] | None = None
) -> asyncio.subprocess.Process:
    """``worker.cli run`` as its own process (``launcher`` before ``-m``, e.g. cProfile), once it has
    registered and asked the scheduler for work; its output goes to ``log_path``."""
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *(launcher or []), "-m", "worker.cli", "run", "--env-file", str(env_file),
            stdout=log_file, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    while True:
        record = platform.scheduler.state.workers.get(wallet)
        if record and record.registered and record.last_demand is not None:
            return proc
        if proc.returncode is not None:
            output = await asyncio.to_thread(log_path.read_text)
            raise RuntimeError(f"the worker exited with code {proc.returncode}: {output[-3000:]}")
        await asyncio.sleep(0.05)
