"""End to end: this worker behaves as iexec-worker 9.2 where a mixed pool would see a difference.

Real anvil with the real PoCo contracts, real Docker with locally built apps (devnet/images.py), the
development scheduler and result proxy over HTTP on 127.0.0.1. What is checked is what iexec-core and
the chain see: statuses and their details, the app logs the scheduler stores, contributions on chain,
the result zip the requester downloads and its digest, recomputed here from the files themselves.
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from pathlib import Path

import pytest
from eth_utils.crypto import keccak

from devnet.core.state import StatusChange, TaskStatus
from devnet.images import FAIL, HELLO, LOUD, PARTIAL
from devnet.platform import Platform, buy
from tests.support import until
from tests.support.e2e import contribute_count, running_worker, unique_worker_name
from worker.protocol.crypto import to_hex
from worker.protocol.errors import ConfigurationError
from worker.protocol.models import MAX_LOG_LENGTH, TaskNotification
from worker.protocol.status import ReplicateStatus, ReplicateStatusCause, TaskNotificationType
from worker.replicate.store import ReplicateStore

pytestmark = pytest.mark.e2e

RS = ReplicateStatus
Cause = ReplicateStatusCause
WITHIN = 90.0
LOUD_LINE = b"iexec loud app: the quick brown fox jumps over the lazy dog\n"


def _history(platform: Platform, task_id: str, wallet: str) -> list[StatusChange]:
    replicate = platform.scheduler.state.replicate(task_id, wallet)
    return replicate.history if replicate else []


def _statuses(platform: Platform, task_id: str, wallet: str) -> list[ReplicateStatus]:
    return [change.status for change in _history(platform, task_id, wallet)]


def _ended(platform: Platform, task_id: str, wallet: str) -> bool:
    statuses = _statuses(platform, task_id, wallet)
    return bool(statuses) and statuses[-1] in (RS.ABORTED, RS.FAILED, RS.COMPLETED)


def _stored_result(platform: Platform, task_id: str) -> dict[str, bytes]:
    """The files of the result zip the requester gets from the result proxy."""
    content_id = (platform.base_dir / "results" / "tasks" / task_id).read_text().strip()
    with zipfile.ZipFile(
        io.BytesIO((platform.base_dir / "results" / "ipfs" / content_id).read_bytes())
    ) as zipped:
        return {name: zipped.read(name) for name in zipped.namelist()}


def _folder_digest(files: dict[str, bytes]) -> str:
    """The digest of a result folder, from its files (iexec-common ``FileHashUtils.getFileTreeSha256``):
    keccak256 over the sha256 of each file, in name order."""
    assert all("/" not in name for name in files)
    return to_hex(keccak(b"".join(hashlib.sha256(files[name]).digest() for name in sorted(files))))


async def test_an_app_exiting_3_after_writing_its_result_is_computed_and_contributed(
    platform: Platform, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wallet = platform.workers[0].address
    caplog.set_level(logging.INFO, logger="iexec.worker.work")
    developer = {"IEXEC_DEVELOPER_LOGGER_ENABLED": "true"}
    async with running_worker(platform, 0, tmp_path / "worker", env=developer) as worker:
        purchase = await buy(platform.info(), image=PARTIAL.tag, args="3")
        task_id = purchase.task_ids[0]
        await until(
            lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
            within=WITHIN,
            what=f"task {task_id} COMPLETED",
        )
        assert await worker.shutdown() == 0

    computed = next(change for change in _history(platform, task_id, wallet) if change.status is RS.COMPUTED)
    assert computed.details is not None
    assert computed.details.exit_code == 3
    assert computed.details.cause is None
    assert RS.COMPUTE_FAILED not in _statuses(platform, task_id, wallet)
    logs = platform.scheduler.task_logs(task_id)[wallet]
    assert logs.wallet_address == wallet
    assert logs.stdout == "partial: result written, exiting with code 3\n"
    assert logs.stderr == "partial: something went wrong after the result\n"
    assert await contribute_count(platform, task_id, wallet) == 1
    # As the reference: the logs join the result only after a success.
    assert _stored_result(platform, task_id) == {
        "computed.json": b'{"deterministic-output-path":"/iexec_out/result.txt"}\n',
        "result.txt": b"partial result\n",
    }
    chain_task = await platform.toolkit.view_task(task_id)
    assert chain_task.result_digest == "0x" + hashlib.sha256(b"partial result\n").hexdigest()
    # IEXEC_DEVELOPER_LOGGER_ENABLED: the reference's DEV MODE block after the run.
    [developer_log] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Developer logs")]
    assert developer_log.startswith(f"Developer logs of docker run [chainTaskId:{task_id}]\n####")
    assert "iexec_in folder\n--------------------\n├── iexec_in/\n" in developer_log
    assert "├── iexec_out/\n│   ├── computed.json\n│   ├── result.txt\n" in developer_log
    assert "stdout\n--------------------\npartial: result written, exiting with code 3\n" in developer_log


async def test_an_app_exiting_1_without_output_takes_the_reference_error_path(
    platform: Platform, tmp_path: Path
) -> None:
    """COMPUTED with exit code 1, no result: CONTRIBUTE_FAILED, which iexec-core refuses, then ABORTED."""
    wallet = platform.workers[0].address
    async with running_worker(platform, 0, tmp_path / "worker") as worker:
        purchase = await buy(platform.info(), image=FAIL.tag, args="1")
        task_id = purchase.task_ids[0]
        await until(
            lambda: _ended(platform, task_id, wallet), within=WITHIN, what=f"replicate of {task_id} ended"
        )
        assert await worker.shutdown() == 0

    history = _history(platform, task_id, wallet)
    assert [change.status for change in history][-4:] == [
        RS.COMPUTING,
        RS.COMPUTED,
        RS.CONTRIBUTING,
        RS.ABORTED,
    ]
    assert history[-1].cause is Cause.UNKNOWN
    assert history[-3].details is not None
    assert history[-3].details.exit_code == 1
    assert platform.scheduler.task_logs(task_id)[wallet].stderr == "fail: exiting with code 1 on purpose\n"
    assert await contribute_count(platform, task_id, wallet) == 0
    # Its computing slot was released at COMPUTED, as iexec-core does.
    assert task_id not in platform.scheduler.state.worker(wallet).computing
    assert not (tmp_path / "worker" / worker.name / task_id).exists()


async def test_a_500_kb_stdout_is_whole_in_the_result_and_in_its_digest(
    platform: Platform, tmp_path: Path
) -> None:
    wallet = platform.workers[0].address
    async with running_worker(platform, 0, tmp_path / "worker") as worker:
        purchase = await buy(platform.info(), image=LOUD.tag, args="500000")
        task_id = purchase.task_ids[0]
        await until(
            lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
            within=WITHIN,
            what=f"task {task_id} COMPLETED",
        )
        assert await worker.shutdown() == 0

    expected_stdout = (LOUD_LINE * (500_000 // len(LOUD_LINE) + 1))[:500_000]
    files = _stored_result(platform, task_id)
    assert sorted(files) == ["computed.json", "stderr.txt", "stdout.txt"]
    assert files["stdout.txt"] == expected_stdout
    assert files["stderr.txt"] == b"loud: wrote 500000 bytes to stdout\n"
    chain_task = await platform.toolkit.view_task(task_id)
    assert chain_task.result_digest == _folder_digest(files)
    # The scheduler gets the last 100 000 characters only.
    logs = platform.scheduler.task_logs(task_id)[wallet]
    assert logs.stdout == expected_stdout.decode()[-MAX_LOG_LENGTH:]


async def test_please_complete_reaches_a_replicate_left_at_contributed(
    platform: Platform, tmp_path: Path
) -> None:
    """iexec-core broadcasts PLEASE_COMPLETE to every worker of a completed task, a winner that never revealed
    included; the replicate then ends and its folder goes, as with the reference."""
    wallet = platform.workers[1].address
    base = tmp_path / "worker"
    async with running_worker(platform, 1, base) as worker:
        # Fresh workers weigh 2 each: trust 3 needs two contributions, so this one waits at CONTRIBUTED.
        purchase = await buy(platform.info(), image=HELLO.tag, args="left behind", trust=3)
        task_id = purchase.task_ids[0]
        await until(
            lambda: RS.CONTRIBUTED in _statuses(platform, task_id, wallet),
            within=WITHIN,
            what=f"replicate of {task_id} CONTRIBUTED",
        )
        folder = base / worker.name / task_id
        assert folder.is_dir()
        # What iexec-core's TaskListeners.onTaskCompletedEvent publishes: one notification, no worker named.
        completion = TaskNotification(
            chain_task_id=task_id,
            workers_address=[],
            task_notification_type=TaskNotificationType.PLEASE_COMPLETE,
        )
        await platform.scheduler.broker.publish(f"/topic/task/{task_id}", completion.to_json())
        await until(
            lambda: _ended(platform, task_id, wallet), within=30, what=f"replicate of {task_id} ended"
        )
        await until(lambda: not folder.exists(), within=10, what=f"{folder} purged")
        assert await worker.shutdown() == 0

    history = _history(platform, task_id, wallet)
    # COMPLETING is refused from CONTRIBUTED (202 PLEASE_ABORT), and the abort is what iexec-core keeps.
    assert [change.status for change in history][-2:] == [RS.CONTRIBUTED, RS.ABORTED]
    assert history[-1].cause is Cause.UNKNOWN
    store = await ReplicateStore.open(base / f"{worker.name}.sqlite3")
    try:
        record = await store.get(task_id)
    finally:
        await store.close()
    assert record is not None
    assert record.final
    assert RS.COMPLETING in await _store_history(base, worker.name, task_id)


async def _store_history(base: Path, name: str, task_id: str) -> list[ReplicateStatus]:
    store = await ReplicateStore.open(base / f"{name}.sqlite3")
    try:
        return await store.history(task_id)
    finally:
        await store.close()


async def test_folders_of_finished_or_unknown_tasks_are_purged_at_start_and_the_journal_kept(
    platform: Platform, tmp_path: Path
) -> None:
    base = tmp_path / "worker"
    name = unique_worker_name(2)
    root = base / name
    unknown = root / ("0x" + "ab" * 32)
    (unknown / "output" / "iexec_out").mkdir(parents=True)
    (unknown / "output" / "iexec_out" / "result.txt").write_text("left by a previous run")
    (root / "not-a-task").mkdir()
    (root / "notes.txt").write_text("an operator's file")
    journal = root / "state" / "journal.sqlite3"  # the store put inside the task root on purpose
    env = {"IEXEC_WORKER_NAME": name, "IEXEC_WORKER_DB_PATH": str(journal)}
    async with running_worker(platform, 2, base, env=env) as worker:
        await until(lambda: not unknown.exists(), within=30, what=f"{unknown} purged at start")
        assert not (root / "not-a-task").exists()
        assert (root / "notes.txt").read_text() == "an operator's file"
        assert journal.is_file()
        # The worker goes on serving: a task still completes.
        purchase = await buy(platform.info(), image=HELLO.tag, args="after purge")
        task_id = purchase.task_ids[0]
        await until(
            lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
            within=WITHIN,
            what=f"task {task_id} COMPLETED",
        )
        assert await worker.shutdown() == 0
    assert journal.is_file()
    assert not (root / task_id).exists()


async def test_a_scheduler_requiring_worker_version_9_2_0_takes_this_worker(
    platform: Platform, tmp_path: Path
) -> None:
    wallet = platform.workers[2].address
    platform.scheduler.require_worker_version("9.2.0")
    try:
        platform.scheduler.state.worker(wallet).registered = False
        async with running_worker(platform, 2, tmp_path / "accepted") as worker:
            await until(
                lambda: platform.scheduler.state.worker(wallet).registered,
                within=30,
                what="the worker registered",
            )
            assert await worker.shutdown() == 0

        platform.scheduler.require_worker_version("9.3.0")
        async with running_worker(platform, 2, tmp_path / "refused") as worker:
            with pytest.raises(ConfigurationError, match=r"requires worker version 9\.3\.0.*9\.2\.0"):
                await worker.task
        # The version a pool requires can be followed without a new release of this worker.
        env = {"IEXEC_WORKER_PROTOCOL_VERSION": "9.3.0"}
        platform.scheduler.state.worker(wallet).registered = False
        async with running_worker(platform, 2, tmp_path / "configured", env=env) as worker:
            await until(
                lambda: platform.scheduler.state.worker(wallet).registered,
                within=30,
                what="the worker registered",
            )
            assert await worker.shutdown() == 0
    finally:
        platform.scheduler.require_worker_version("")
