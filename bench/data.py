"""Dataset download and result digest of a 1 GiB file: throughput (MB/s) and peak memory of each.

The download goes through ``worker.data.download`` from a loopback aiohttp server that generates the
file on the fly; the digest is the result digest of that file (sha256, ``worker.result``), read back
from the page cache. Each run is a fresh subprocess, so its memory high-water mark (``VmHWM``, reset
through ``/proc/self/clear_refs`` just before the phase) is the phase's own; one extra run per phase
traces Python allocations (``tracemalloc``), which slows it, so its time is not counted.

Each download run is paired with ``curl`` fetching the same file from the same server into the same
folder: the ratio of the two throughputs, run by run, is the worker's download figure (the server, the
disk and the machine's load weigh on both alike).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench._figures import Figure
from bench._proc import reset_high_water_mark, status_kib
from worker.data import DownloadLimits, download
from worker.protocol.targets import TargetPolicy
from worker.result import ComputedFile, compute_result_digest

SIZE = 1024**3
CHUNK = 1024 * 1024
RUNS = 3
MB = 1e6
ROOT = Path(__file__).resolve().parent.parent
FILE_PATH = "/iexec_out/dataset.bin"

# The test servers listen on 127.0.0.1: allowlisted, as a devnet operator does.
LOOPBACK = TargetPolicy.allowing("127.0.0.0/8")


async def _serve(size: int) -> tuple[web.AppRunner, str]:
    # One pseudo-random chunk sent again and again: the server never holds the file.
    chunk = os.urandom(CHUNK)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        left = size
        while left:
            part = chunk[: min(left, CHUNK)]
            await response.write(part)
            left -= len(part)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/dataset.bin", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/dataset.bin"


async def _phase(phase: str, output: Path, url: str, size: int) -> float:
    started = time.perf_counter()
    if phase == "download":
        limits = DownloadLimits(max_bytes=size, total_timeout=3600, stall_timeout=60, targets=LOOPBACK)
        async with aiohttp.ClientSession() as session:
            downloaded = await download(session, url, output / FILE_PATH.lstrip("/"), limits)
        if downloaded.size != size:
            raise RuntimeError(f"downloaded {downloaded.size} bytes, expected {size}")
    else:
        computed = ComputedFile(deterministic_output_path=FILE_PATH)
        await asyncio.to_thread(compute_result_digest, output, computed, callback=False)
    return time.perf_counter() - started


def child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=["download", "digest"])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--url", default="")
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args(argv)
    baseline_kib = status_kib("VmRSS")
    reset = reset_high_water_mark()
    if args.trace:
        tracemalloc.start()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    seconds = asyncio.run(_phase(args.phase, args.output, args.url, args.size))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = after.ru_utime - cpu.ru_utime + after.ru_stime - cpu.ru_stime
    traced_peak = tracemalloc.get_traced_memory()[1] if args.trace else None
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "baseline_rss_kib": baseline_kib,
                "hwm_kib": status_kib("VmHWM"),
                "hwm_reset": reset,
                "traced_peak_bytes": traced_peak,
            }
        )
    )


async def _run_child(phase: str, output: Path, url: str, size: int, *, trace: bool = False) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.data", phase, "--output", str(output), "--size", str(size)]
    if url:
        argv += ["--url", url]
    if trace:
        argv.append("--trace")
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench.data {phase} failed ({proc.returncode}): {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def _report(phase: str, size: int, runs: list[dict[str, Any]], traced: dict[str, Any]) -> None:
    speeds = [size / run["seconds"] / MB for run in runs]
    peak = max(run["hwm_kib"] for run in runs) / 1024
    baseline = statistics.median(run["baseline_rss_kib"] for run in runs) / 1024
    note = "" if all(run["hwm_reset"] for run in runs) else " (VmHWM not reset: includes start-up)"
    print(
        f"{phase:8s} {size / 1024**3:.2f} GiB  median {statistics.median(speeds):7.1f} MB/s "
        f"(min {min(speeds):.1f}, max {max(speeds):.1f}, {len(runs)} runs)  "
        f"peak RSS {peak:.1f} MiB (process at start {baseline:.1f} MiB){note}  "
        f"tracemalloc peak {traced['traced_peak_bytes'] / 2**20:.2f} MiB"
    )


async def _curl(url: str, target: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``curl`` fetching ``url`` (the only child running meanwhile)."""
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "curl", "--silent", "--show-error", "--fail", "--output", str(target), url,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"curl {url} failed ({proc.returncode}): {err.decode()[-500:]}")
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    await asyncio.to_thread(target.unlink)
    return seconds, after.ru_utime - cpu.ru_utime + after.ru_stime - cpu.ru_stime


async def main() -> list[Figure]:
    size = int(os.environ.get("BENCH_DATA_BYTES", SIZE))
    runner, url = await _serve(size)
    ratios: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="iexec-bench-data-") as tmp:
            output = Path(tmp) / "output"
            await asyncio.to_thread((output / "iexec_out").mkdir, parents=True)
            results: dict[str, list[dict[str, Any]]] = {"download": [], "digest": []}
            curls: list[tuple[float, float]] = []
            for _ in range(RUNS):
                curls.append(await _curl(url, output / "curl.bin"))
                results["download"].append(await _run_child("download", output, url, size))
                ratios.append(curls[-1][0] / results["download"][-1]["seconds"])
                results["digest"].append(await _run_child("digest", output, "", size))
            traced = {
                "download": await _run_child("download", output, url, size, trace=True),
                "digest": await _run_child("digest", output, "", size, trace=True),
            }
            for phase in ("download", "digest"):
                _report(phase, size, results[phase], traced[phase])
            speeds = [size / seconds / MB for seconds, _ in curls]
            print(
                f"curl     {size / 1024**3:.2f} GiB  median {statistics.median(speeds):7.1f} MB/s "
                f"(min {min(speeds):.1f}, max {max(speeds):.1f}, {len(curls)} runs, each before a download run)"
            )
            gib = size / 1024**3
            print(
                "CPU seconds per GiB (user + system, all threads), median: "
                f"download {statistics.median(r['cpu_seconds'] for r in results['download']) / gib:.2f}, "
                f"curl {statistics.median(cpu for _, cpu in curls) / gib:.2f}"
            )
            print(
                f"download / curl throughput, run by run: median {statistics.median(ratios):.2f} "
                f"({', '.join(f'{ratio:.2f}' for ratio in ratios)})"
            )
    finally:
        await runner.cleanup()
    return [Figure("download_vs_curl_ratio", round(statistics.median(ratios), 2))]


if __name__ == "__main__":
    child(sys.argv[1:])
