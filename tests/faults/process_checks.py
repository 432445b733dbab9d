"""What the scheduler and worker-process fault tests check after each run, as an operator would.

The replicate completed with exactly one contribution and one reveal (the TaskContribute logs of the
wallet, the wallet's nonce moved by two), the scheduler's history ends COMPLETED with one CONTRIBUTED,
and the worker left no container, task folder or held wallet lock behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from devnet.core.state import TaskStatus
from devnet.images import SLEEP
from devnet.platform import Platform, buy, worker_env, write_env_file
from tests.support.docker import container_exists
from tests.support.e2e import WorkerProcess, contribute_count, local_status, unique_worker_name
from worker.compute import container_name
from worker.protocol.status import ChainTaskStatus, ReplicateStatus

RS = ReplicateStatus


@dataclass
class WorkerFolder:
    """One worker's settings file, folder and database, reused by every process started on it."""

    name: str
    base: Path
    env_file: Path
    wallet: str

    @property
    def db(self) -> Path:
        return self.base / f"{self.name}.sqlite3"

    def status(self, task_id: str) -> ReplicateStatus | None:
        return local_status(self.db, task_id)


def worker_folder(platform: Platform, tmp_path: Path, index: int = 0, **env: str) -> WorkerFolder:
    info = platform.info()
    name = unique_worker_name(index)
    base = tmp_path / "worker"
    settings = {**worker_env(info, index, base), "IEXEC_WORKER_NAME": name, **env}
    return WorkerFolder(
        name, base, write_env_file(tmp_path / "worker.env", settings), info.workers[index].address
    )


async def nonce(platform: Platform, wallet: str) -> int:
    w3 = platform.devnet.w3
    return int(await w3.eth.get_transaction_count(w3.to_checksum_address(wallet)))


async def buy_sleep(platform: Platform, seconds: int = 0) -> str:
    """A one-task deal of the sleep app: short runs keep the fault suite short."""
    purchase = await buy(platform.info(), image=SLEEP.tag, args=str(seconds))
    return purchase.task_ids[0]


async def until_completed(
    platform: Platform, process: WorkerProcess, folder: WorkerFolder, task_id: str
) -> None:
    await process.until(
        lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
        within=120,
        every=0.2,
        what=f"task {task_id} COMPLETED at the scheduler",
    )
    await process.until(
        lambda: folder.status(task_id) is RS.COMPLETED,
        within=60,
        every=0.1,
        what="replicate COMPLETED locally",
    )


def lock_is_free(folder: WorkerFolder) -> bool:
    path = folder.base / f".wallet-{folder.wallet.lower()}.lock"
    if not path.exists():
        return True
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


async def assert_completed_once(
    platform: Platform, folder: WorkerFolder, task_id: str, nonce_before: int
) -> None:
    """Completed on chain and at the scheduler, one contribute and one reveal, nothing left behind."""
    assert (await platform.toolkit.view_task(task_id)).status is ChainTaskStatus.COMPLETED
    assert await contribute_count(platform, task_id, folder.wallet) == 1
    assert await nonce(platform, folder.wallet) - nonce_before == 2, (
        "one contribute and one reveal, nothing else"
    )
    history = platform.scheduler.replicate_history(task_id, folder.wallet)
    assert history.count(RS.CONTRIBUTED) == 1, history
    assert history[-1] is RS.COMPLETED, history
    await assert_nothing_left(folder, task_id)


async def assert_nothing_left(folder: WorkerFolder, task_id: str) -> None:
    assert not await container_exists(container_name(folder.name, task_id))
    assert not (folder.base / folder.name / task_id).exists(), "task folder left behind"
    assert await asyncio.to_thread(lock_is_free, folder), "wallet lock still held"


def log_text(log: Path) -> str:
    with contextlib.suppress(FileNotFoundError):
        return log.read_text(errors="replace")
    return ""
