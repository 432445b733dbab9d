"""Result of 256 MiB: zipped, then uploaded to the development result proxy; the worker side's peak memory.

The app's output is one incompressible file, so the zip is as large as the maximum result size allows.
Each phase (the standard post-compute's zip, then ``upload_result``: token, upload, IPFS hash) runs in a
fresh subprocess, as in the worker, whose memory high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs`` just before the phase) is the phase's own. The proxy runs in this process over a
chain stand-in where the task is revealing and the worker's contribution proved: it recomputes the digest
from the zip it received, so an upload it accepts is byte for byte the zip.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from eth_account import Account
from eth_account.signers.local import LocalAccount

from bench._figures import Figure
from bench._proc import reset_high_water_mark, status_kib
from devnet.resultproxy import ProxyContribution, ProxyDeal, ProxyTask, ResultProxy
from worker.protocol.crypto import ZERO_ADDRESS, ZERO_BYTES32, authorization_hash, result_hash, sign_eip191
from worker.protocol.models import Signature, WorkerpoolAuthorization
from worker.protocol.status import ChainContributionStatus, ChainTaskStatus
from worker.protocol.targets import TargetPolicy
from worker.result import (
    ComputedFile,
    compute_result_digest,
    run_standard_post_compute,
    upload_result,
)

MAX_RESULT = 256 * 1024 * 1024
# Deflate stores incompressible data with a few bytes per 64 KiB block: the zip stays under the limit.
PAYLOAD = MAX_RESULT - 1024 * 1024
RUNS = 3
ROOT = Path(__file__).resolve().parent.parent
TASK_ID = "0x" + "5e" * 32
DEAL_ID = "0x" + "d1" * 32
MIB = 1024 * 1024


class _RevealingChain:
    """The task is revealing and ``worker`` proved ``proved_hash``; the pool belongs to ``owner``."""

    def __init__(self, worker: str, owner: str, proved_hash: str) -> None:
        self._worker, self._owner, self._proved = worker.lower(), owner, proved_hash

    async def task(self, chain_task_id: str) -> ProxyTask:
        return ProxyTask(ChainTaskStatus.REVEALING, int(time.time()) + 3600, DEAL_ID)

    async def deal(self, deal_id: str) -> ProxyDeal:
        return ProxyDeal(workerpool_owner=self._owner, tag=ZERO_BYTES32)

    async def contribution(self, chain_task_id: str, worker: str) -> ProxyContribution:
        if worker.lower() != self._worker:
            return ProxyContribution(ChainContributionStatus.UNSET, ZERO_BYTES32)
        return ProxyContribution(ChainContributionStatus.PROVED, self._proved)

    async def now(self) -> int:
        return int(time.time())


async def _upload(args: argparse.Namespace) -> str:
    worker: LocalAccount = Account.from_key(os.environ["BENCH_WORKER_KEY"])
    authorization = WorkerpoolAuthorization.model_validate_json(args.authorization)
    async with aiohttp.ClientSession() as session:
        return await upload_result(
            session, task_id=TASK_ID, authorization=authorization, account=worker,
            zip_path=args.output / "iexec_out.zip", result_digest=args.digest, callback=None,
            storage_proxy=None, result_repository_url=args.proxy, storage_provider="ipfs",
            attempts=1, max_seconds=3600, targets=TargetPolicy.allowing("127.0.0.0/8"),
        )  # fmt: skip


def child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=["zip", "upload"])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--proxy", default="")
    parser.add_argument("--digest", default="")
    parser.add_argument("--authorization", default="")
    args = parser.parse_args(argv)
    baseline = status_kib("VmRSS")
    reset = reset_high_water_mark()
    started = time.perf_counter()
    answer = ""
    if args.phase == "zip":
        (args.output / "iexec_out.zip").unlink(missing_ok=True)
        (args.output / "computed.json").unlink(missing_ok=True)
        run_standard_post_compute(args.output, max_zip_bytes=MAX_RESULT)
    else:
        answer = asyncio.run(_upload(args))
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "baseline_kib": baseline, "hwm_kib": status_kib("VmHWM"),
                      "hwm_reset": reset, "answer": answer}))  # fmt: skip


async def _run_child(
    phase: str, output: Path, *extra: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.upload", phase, "--output", str(output), *extra, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench.upload {phase} failed ({proc.returncode}): {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def _write_output(output: Path) -> None:
    (output / "iexec_out").mkdir(parents=True)
    with open(output / "iexec_out" / "result.bin", "wb") as handle:
        left = PAYLOAD
        while left:
            handle.write(os.urandom(min(left, MIB)))
            left -= min(left, MIB)
    (output / "iexec_out" / "computed.json").write_text(
        '{"deterministic-output-path": "/iexec_out/result.bin"}'
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def _line(phase: str, runs: list[dict[str, Any]], size: int) -> str:
    peak = statistics.median(run["hwm_kib"] for run in runs) / 1024
    start = statistics.median(run["baseline_kib"] for run in runs) / 1024
    speed = statistics.median(size / run["seconds"] / 1e6 for run in runs)
    note = "" if all(run["hwm_reset"] for run in runs) else " (VmHWM not reset: includes start-up)"
    return (
        f"{phase:6s} {size / MIB:.0f} MiB  median {speed:6.1f} MB/s  peak RSS median {peak:.0f} MiB "
        f"(max {max(run['hwm_kib'] for run in runs) / 1024:.0f}, process at start {start:.0f} MiB, "
        f"{len(runs)} runs){note}"
    )


async def main() -> list[Figure]:
    worker: LocalAccount = Account.create()
    owner: LocalAccount = Account.create()
    authorization = WorkerpoolAuthorization(
        chain_task_id=TASK_ID, deal_id=DEAL_ID, task_index=0, worker_wallet=worker.address,
        enclave_challenge=ZERO_ADDRESS,
        signature=Signature(value=sign_eip191(authorization_hash(worker.address, TASK_ID, ZERO_ADDRESS), owner.key)),
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="iexec-bench-upload-") as tmp:
        output = Path(tmp) / "output"
        await asyncio.to_thread(_write_output, output)
        computed = ComputedFile(deterministic_output_path="/iexec_out/result.bin")
        digest = await asyncio.to_thread(compute_result_digest, output, computed, callback=False)
        chain = _RevealingChain(worker.address, owner.address, result_hash(TASK_ID, digest))
        zips: list[dict[str, Any]] = []
        uploads: list[dict[str, Any]] = []
        for run in range(RUNS):
            zips.append(await _run_child("zip", output))
            zip_path = output / "iexec_out.zip"
            zip_size = zip_path.stat().st_size
            # A fresh proxy each run: it keeps the first result of a task and refuses a second.
            async with ResultProxy(chain, Path(tmp) / f"proxy{run}", max_result_bytes=MAX_RESULT) as proxy:
                uploads.append(
                    await _run_child(
                        "upload", output, "--proxy", proxy.url, "--digest", digest,
                        "--authorization", authorization.model_dump_json(by_alias=True),
                        env={"BENCH_WORKER_KEY": worker.key.hex()},
                    )
                )  # fmt: skip
                location = json.loads(uploads[-1]["answer"])["location"]  # the link: /ipfs/<cid>
                stored = Path(tmp) / f"proxy{run}" / "ipfs" / location.removeprefix("/ipfs/")
                if await asyncio.to_thread(_sha256, stored) != await asyncio.to_thread(_sha256, zip_path):
                    raise RuntimeError("the proxy stored other bytes than the zip")
    print(_line("zip", zips, PAYLOAD))
    print(_line("upload", uploads, zip_size))
    return [
        Figure("zip256_peak_rss", round(statistics.median(run["hwm_kib"] for run in zips) / 1024, 1), "MiB"),
        Figure(
            "upload256_peak_rss", round(statistics.median(run["hwm_kib"] for run in uploads) / 1024, 1), "MiB"
        ),
    ]


if __name__ == "__main__":
    child(sys.argv[1:])
