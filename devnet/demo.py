"""``make demo``: a task goes from purchase to COMPLETED on a local platform, watched live.

Starts the devnet (anvil + PoCo, development scheduler, result proxy), builds the demo app image
locally, starts a worker as its own process (``iexec-worker run``), buys a task, prints each
replicate status as the scheduler records it, then the on-chain result link and the reward, and
stops everything. Timings split the run into the worker's own work and the waits on chain and
scheduler. ``--tee scone|gramine|tdx`` (``make demo TEE=tdx``) buys a trust-1 TEE task instead, run by a
worker of the devnet's EMULATED TEE side (stand-in SGX devices, emulated SMS and enclaves) and ended by
one contributeAndFinalize.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path

from devnet.core.state import TaskStatus
from devnet.images import HELLO, ensure_images
from devnet.platform import RLC, Platform, buy, start_worker_process, worker_env, write_env_file
from worker.compute import DockerEngine
from worker.protocol.status import ReplicateStatus
from worker.protocol.tee import TeeFramework

RS = ReplicateStatus
DEMO_DIR = Path(".devnet/demo")
# Statuses during which the worker itself is busy; the gaps between them are waits on others.
_WORKER_SPANS = (
    (RS.STARTING, RS.CONTRIBUTED),
    (RS.REVEALING, RS.REVEALED),
    (RS.RESULT_UPLOADING, RS.RESULT_UPLOADED),
    (RS.COMPLETING, RS.COMPLETED),
)
_TEE_WORKER_SPANS = ((RS.STARTING, RS.CONTRIBUTE_AND_FINALIZE_DONE), (RS.COMPLETING, RS.COMPLETED))


def say(text: str) -> None:
    print(text, flush=True)


async def demo(base: Path, tee: TeeFramework | None = None) -> int:
    started = time.monotonic()
    say("== building the demo app image (busybox, no registry needed)")
    async with await DockerEngine.open() as engine:
        await ensure_images(engine, [HELLO])
    if tee is None:
        say("== starting the devnet: anvil with PoCo 6.1.0, development scheduler, result proxy")
    else:
        say(
            f"== starting the devnet with its EMULATED TEE side for a {tee.value} task (no SGX nor TDX needed)"
        )
    platform = await Platform.up(
        base / "platform", workers=1, ask_for_replicate_period_ms=500, tee=tee is not None
    )
    worker: asyncio.subprocess.Process | None = None
    try:
        info = platform.info()
        say(f"   chain {info.rpc_url}  hub {info.hub}")
        say(f"   scheduler {info.scheduler_url}  result proxy {info.result_proxy_url}")
        say(f"   ready in {time.monotonic() - started:.1f} s")

        kind = None if tee is None else "tdx" if tee is TeeFramework.TDX else "sgx"
        env_file = await asyncio.to_thread(
            write_env_file, base / "worker.env", worker_env(info, 0, base / "worker", slots=1, tee=kind)
        )
        log_path = base / "worker.log"
        say(f"== starting a worker process (settings {env_file}, log {log_path})")
        worker = await start_worker_process(env_file, log_path)
        wallet = info.workers[0].address
        launched = time.monotonic()
        while not _joined(platform, wallet):
            if worker.returncode is not None or time.monotonic() - launched > 60:
                say(f"!! the worker did not join the scheduler; see {log_path}")
                return 1
            await asyncio.sleep(0.05)
        say(
            f"   worker {wallet} joined the pool in {time.monotonic() - launched:.2f} s (process start included)"
        )
        stake_before, _ = await platform.toolkit.view_account(wallet)

        what = "a task" if tee is None else f"a trust-1 {tee.value} task"
        say(f"== buying {what}: app {HELLO.tag}, args 'devnet', workerpool price 2 RLC")
        bought_at = time.time()
        purchase = await buy(info, image=HELLO.tag, args="devnet", workerpool_price=2 * RLC, tee=tee)
        task_id = purchase.task_ids[0]
        say(f"   deal {purchase.deal_id}")
        say(f"   task {task_id}")

        say("== replicate statuses, live:")
        shown = 0
        deadline = time.monotonic() + 180
        while platform.scheduler.task_status(task_id) is not TaskStatus.COMPLETED:
            if worker.returncode is not None:
                say(f"!! the worker exited with code {worker.returncode}; see {log_path}")
                return 1
            if time.monotonic() > deadline:
                say(f"!! no completion within 180 s; see {log_path}")
                return 1
            shown = _print_new(platform, task_id, wallet, shown, bought_at)
            await asyncio.sleep(0.1)
        completed_at = time.time()
        # The task is COMPLETED on chain; the worker still purges and reports its own COMPLETED.
        settle = time.monotonic() + 30
        while not _replicate_done(platform, task_id, wallet) and time.monotonic() < settle:
            shown = _print_new(platform, task_id, wallet, shown, bought_at)
            await asyncio.sleep(0.05)
        _print_new(platform, task_id, wallet, shown, bought_at)

        chain_task = await platform.toolkit.view_task(task_id)
        stake_after, locked = await platform.toolkit.view_account(wallet)
        say("== on chain")
        say(f"   task status  {chain_task.status.name}")
        say(f"   result link  {chain_task.results.decode()}")
        say(
            f"   reward       +{(stake_after - stake_before) / RLC:.2f} RLC to {wallet} (locked stake now {locked})"
        )
        spans = _WORKER_SPANS if tee is None else _TEE_WORKER_SPANS
        worker_time, total = _timings(platform, task_id, wallet, bought_at, completed_at, spans)
        say("== timings")
        say(f"   purchase to COMPLETED  {total:.2f} s")
        say(f"   worker busy            {worker_time:.2f} s")
        say(f"   waiting (chain, scheduler) {total - worker_time:.2f} s")
        return 0
    finally:
        if worker is not None and worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(worker.wait(), 60)
                say(f"== worker stopped (exit code {code})")
            except TimeoutError:
                worker.kill()
        await platform.stop()
        say("== devnet stopped")


def _replicate_done(platform: Platform, task_id: str, wallet: str) -> bool:
    replicate = platform.scheduler.state.replicate(task_id, wallet)
    return bool(
        replicate and replicate.history and replicate.last_status in (RS.COMPLETED, RS.FAILED, RS.ABORTED)
    )


def _joined(platform: Platform, wallet: str) -> bool:
    record = platform.scheduler.state.workers.get(wallet)
    return bool(record and record.registered and record.last_demand is not None)


def _print_new(platform: Platform, task_id: str, wallet: str, shown: int, since: float) -> int:
    replicate = platform.scheduler.state.replicate(task_id, wallet)
    history = replicate.history if replicate else []
    for change in history[shown:]:
        cause = f" {{{change.details.cause.value}}}" if change.details and change.details.cause else ""
        say(f"   +{change.wall_time - since:6.2f} s  {change.status.value}{cause}")
    return len(history)


def _timings(
    platform: Platform,
    task_id: str,
    wallet: str,
    bought: float,
    completed: float,
    spans: tuple[tuple[ReplicateStatus, ReplicateStatus], ...],
) -> tuple[float, float]:
    replicate = platform.scheduler.state.replicate(task_id, wallet)
    at = {change.status: change.wall_time for change in replicate.history} if replicate else {}
    busy = sum(at[end] - at[start] for start, end in spans if start in at and end in at)
    return busy, completed - bought


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devnet.demo", description="a task from purchase to COMPLETED"
    )
    parser.add_argument(
        "--tee", choices=[f.value.lower() for f in TeeFramework], help="buy a trust-1 TEE task (emulated TEE)"
    )
    args = parser.parse_args(argv)
    tee = TeeFramework(args.tee.upper()) if args.tee else None
    base = DEMO_DIR.resolve()
    base.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(demo(base, tee))
    return 130


if __name__ == "__main__":
    sys.exit(main())
