"""End to end: datasets, input files, error results, callbacks and hostile outputs on the real platform.

Real anvil with the real PoCo contracts, real Docker running the devnet ``shell`` image, the development
scheduler and result proxy, and a file server on 127.0.0.1 that serves datasets and input files.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from devnet.core.state import StatusChange, TaskStatus
from devnet.images import SHELL
from devnet.platform import Platform, buy
from tests.support import serving_app, until
from tests.support.e2e import running_worker
from worker.protocol.crypto import keccak_hex, result_hash
from worker.protocol.status import (
    ChainContributionStatus,
    ChainTaskStatus,
    ReplicateStatus,
    ReplicateStatusCause,
)

pytestmark = pytest.mark.e2e

RS = ReplicateStatus
Cause = ReplicateStatusCause
CALLBACK = "0x" + "ca11bac0" + "00" * 16  # an address without code: PoCo's low-level call to it succeeds
TASK_WITHIN = 90.0


@dataclass
class FileServer:
    """Serves ``files`` (path → bytes) on 127.0.0.1; a test may change a file after it is registered."""

    files: dict[str, bytes] = field(default_factory=dict)
    url: str = ""

    def link(self, path: str) -> str:
        return f"{self.url}/{path}"


@pytest_asyncio.fixture(loop_scope="session")
async def files() -> AsyncIterator[FileServer]:
    server = FileServer()

    async def serve(request: web.Request) -> web.Response:
        body = server.files.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="application/octet-stream")

    async def gateway(request: web.Request) -> web.Response:
        body = server.files.get("ipfs/" + request.match_info["cid"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    app.router.add_get("/ipfs/{cid}", gateway)
    async with serving_app(app) as url:
        server.url = url
        yield server


def script_args(script: str) -> str:
    """``iexec_args`` that hand ``script`` to the shell image as its single argument."""
    # The reference splitter groups single-quoted text literally, newlines included.
    assert "'" not in script
    return f"'{script}'"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def proxy_zip(platform: Platform, link: bytes) -> zipfile.ZipFile:
    location = json.loads(link.decode())["location"]
    stored = platform.base_dir / "results" / "ipfs" / location.removeprefix("/ipfs/")
    return zipfile.ZipFile(io.BytesIO(stored.read_bytes()))


def changes(platform: Platform, task_id: str, wallet: str) -> list[StatusChange]:
    """The statuses the scheduler recorded for this worker's replicate, with their causes."""
    replicate = platform.scheduler.state.replicate(task_id, wallet)
    assert replicate is not None, f"no replicate of {task_id} for {wallet}"
    return replicate.history


async def completed(platform: Platform, task_id: str) -> None:
    await until(
        lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
        within=TASK_WITHIN,
        what=f"task {task_id} COMPLETED",
    )


async def test_task_with_a_dataset_and_two_input_files_completes(
    platform: Platform, files: FileServer, tmp_path: Path
) -> None:
    dataset, first, second = b"dataset bytes\n" * 1000, b"first input\n", bytes(range(256)) * 64
    files.files.update({"dataset.bin": dataset, "one.txt": first, "two.bin": second})
    inputs = [files.link("one.txt"), files.link("two.bin")]
    app = script_args(
        "set -e\n"
        'cd "$IEXEC_IN"\n'
        'echo "$IEXEC_INPUT_FILES_NUMBER $IEXEC_INPUT_FILE_NAME_1 $IEXEC_INPUT_FILE_NAME_2" > /iexec_out/result.txt\n'
        'cat "$IEXEC_DATASET_FILENAME" "$IEXEC_INPUT_FILE_NAME_1" "$IEXEC_INPUT_FILE_NAME_2" | sha256sum'
        " >> /iexec_out/result.txt\n"
        'printf "{\\"deterministic-output-path\\":\\"/iexec_out/result.txt\\"}" > /iexec_out/computed.json\n'
    )
    async with running_worker(platform, 0, tmp_path / "worker"):
        purchase = await buy(
            platform.info(),
            image=SHELL.tag,
            args=app,
            dataset_url=files.link("dataset.bin"),
            input_files=inputs,
        )
        task_id = purchase.task_ids[0]
        await completed(platform, task_id)

    names = [f"0x{sha256_hex(url.encode())}" for url in inputs]
    expected = f"2 {names[0]} {names[1]}\n{sha256_hex(dataset + first + second)}  -\n".encode()
    chain_task = await platform.toolkit.view_task(task_id)
    assert chain_task.status is ChainTaskStatus.COMPLETED
    assert chain_task.result_digest == "0x" + sha256_hex(expected)
    with proxy_zip(platform, chain_task.results) as archive:
        assert archive.read("result.txt") == expected


async def test_dataset_with_a_wrong_checksum_contributes_the_error_result(
    platform: Platform, files: FileServer, tmp_path: Path
) -> None:
    files.files["changing.bin"] = b"the dataset as registered"
    wallet = platform.workers[0].address
    async with running_worker(platform, 0, tmp_path / "worker") as worker:
        purchase = await buy(
            platform.info(), image=SHELL.tag, args="true", dataset_url=files.link("changing.bin")
        )
        # The owner replaces the file after registering its checksum.
        files.files["changing.bin"] = b"the dataset as served today"
        task_id = purchase.task_ids[0]
        await completed(platform, task_id)
        assert await worker.shutdown() == 0

    history = changes(platform, task_id, wallet)
    failure = next(change for change in history if change.status is RS.DATA_DOWNLOAD_FAILED)
    assert failure.cause is Cause.DATASET_FILE_BAD_CHECKSUM
    assert RS.COMPUTING not in [change.status for change in history]

    error_txt = (
        b"[IEXEC] Errors occurred while computing the task [error:DATA_DOWNLOAD_FAILED, "
        b"causes:[WorkflowError[cause=DATASET_FILE_BAD_CHECKSUM, message=]]]"
    )
    digest = "0x" + sha256_hex(error_txt)
    contribution = await platform.toolkit.view_contribution(task_id, wallet)
    assert contribution.status is ChainContributionStatus.PROVED
    assert contribution.result_hash == result_hash(task_id, digest)
    chain_task = await platform.toolkit.view_task(task_id)
    assert chain_task.result_digest == digest
    with proxy_zip(platform, chain_task.results) as archive:
        assert archive.read("error.txt") == error_txt


async def test_callback_task_completes_with_its_callback_data_on_chain(
    platform: Platform, tmp_path: Path
) -> None:
    app = script_args(
        "set -e\n"
        "data=$(printf hello | sha256sum | cut -c1-64)\n"
        'printf "{\\"callback-data\\":\\"0x%s\\"}" "$data" > /iexec_out/computed.json\n'
    )
    async with running_worker(platform, 0, tmp_path / "worker"):
        purchase = await buy(platform.info(), image=SHELL.tag, args=app, callback=CALLBACK)
        task_id = purchase.task_ids[0]
        await completed(platform, task_id)

    callback_data = hashlib.sha256(b"hello").digest()
    chain_task = await platform.toolkit.view_task(task_id)
    assert chain_task.status is ChainTaskStatus.COMPLETED
    assert chain_task.results_callback == callback_data
    assert chain_task.result_digest == keccak_hex("0x" + callback_data.hex())
    assert chain_task.results.decode() == f'{{ "storage": "ethereum", "location": "{CALLBACK}" }}'
    # A callback task's result goes on chain, not to the result proxy.
    assert not (platform.base_dir / "results" / "tasks" / task_id).exists()


async def test_a_link_out_of_the_output_is_zipped_empty_and_never_followed(
    platform: Platform, tmp_path: Path
) -> None:
    app = script_args(
        "set -e\n"
        "ln -s /etc/passwd /iexec_out/passwd\n"
        "ln -s / /iexec_out/root\n"
        "echo safe > /iexec_out/result.txt\n"
        'printf "{\\"deterministic-output-path\\":\\"/iexec_out/result.txt\\"}" > /iexec_out/computed.json\n'
    )
    async with running_worker(platform, 0, tmp_path / "worker"):
        purchase = await buy(platform.info(), image=SHELL.tag, args=app)
        task_id = purchase.task_ids[0]
        await completed(platform, task_id)

    chain_task = await platform.toolkit.view_task(task_id)
    assert chain_task.result_digest == "0x" + sha256_hex(b"safe\n")
    with proxy_zip(platform, chain_task.results) as archive:
        assert sorted(archive.namelist()) == ["computed.json", "passwd", "result.txt", "root"]
        assert archive.read("passwd") == b""
        assert archive.read("root") == b""


@pytest.mark.parametrize(
    ("script", "cause"),
    [
        pytest.param(
            "ln -s /etc/passwd /iexec_out/passwd\n"
            'printf "{\\"deterministic-output-path\\":\\"/iexec_out/passwd\\"}" > /iexec_out/computed.json\n',
            Cause.POST_COMPUTE_RESULT_DIGEST_COMPUTATION_FAILED,
            id="result-is-a-link-to-etc-passwd",
        ),
        pytest.param(
            f"echo x > /iexec_out/{'n' * 40}\n"
            'printf "{\\"deterministic-output-path\\":\\"/iexec_out\\"}" > /iexec_out/computed.json\n',
            Cause.POST_COMPUTE_TOO_LONG_RESULT_FILE_NAME,
            id="40-character-file-name",
        ),
        pytest.param(
            "dd if=/dev/urandom of=/iexec_out/big.bin bs=65536 count=32 2>/dev/null\n"
            'printf "{\\"deterministic-output-path\\":\\"/iexec_out/big.bin\\"}" > /iexec_out/computed.json\n',
            Cause.POST_COMPUTE_OUT_FOLDER_ZIP_FAILED,
            id="output-larger-than-the-limit",
        ),
        pytest.param("true\n", Cause.POST_COMPUTE_SEND_COMPUTED_FILE_FAILED, id="empty-output-folder"),
    ],
)
async def test_a_hostile_or_broken_output_is_computed_but_never_contributed(
    platform: Platform,
    tmp_path: Path,
    script: str,
    cause: ReplicateStatusCause,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As iexec-worker 9.2: COMPUTED (exit code 0), the post-compute's cause logged, no result digest, so the
    contribution fails (DETERMINISM_HASH_NOT_FOUND), iexec-core refuses that, and the replicate ends ABORTED."""
    wallet = platform.workers[0].address
    base = tmp_path / "worker"
    # 1 MiB of random bytes cannot be compressed under a 512 KiB limit.
    limit = {"IEXEC_WORKER_RESULT_MAX_BYTES": "512k"}
    async with running_worker(platform, 0, base, env=limit) as worker:
        purchase = await buy(platform.info(), image=SHELL.tag, args=script_args("set -e\n" + script))
        task_id = purchase.task_ids[0]
        await until(
            lambda: RS.ABORTED in platform.scheduler.replicate_history(task_id, wallet),
            within=TASK_WITHIN,
            what=f"task {task_id} ABORTED",
        )
        assert await worker.shutdown() == 0

    history = changes(platform, task_id, wallet)
    assert [change.status for change in history][-3:] == [RS.COMPUTED, RS.CONTRIBUTING, RS.ABORTED]
    computed = history[-3]
    assert computed.details is not None
    assert computed.details.exit_code == 0
    assert f"compute: {cause.value}" in caplog.text
    contribution = await platform.toolkit.view_contribution(task_id, wallet)
    assert contribution.status is ChainContributionStatus.UNSET
    # No zip over the limit is ever left on disk.
    zips = list(base.rglob("iexec_out.zip"))
    assert all(path.stat().st_size <= 512 * 1024 for path in zips)
    if cause is Cause.POST_COMPUTE_OUT_FOLDER_ZIP_FAILED:
        assert zips == []


async def test_result_encryption_on_a_standard_task_fails_start(platform: Platform, tmp_path: Path) -> None:
    wallet = platform.workers[0].address
    async with running_worker(platform, 0, tmp_path / "worker") as worker:
        purchase = await buy(
            platform.info(), image=SHELL.tag, args="true", extra_params={"iexec_result_encryption": True}
        )
        task_id = purchase.task_ids[0]
        await until(
            lambda: RS.START_FAILED in platform.scheduler.replicate_history(task_id, wallet),
            within=TASK_WITHIN,
            what=f"task {task_id} START_FAILED",
        )
        assert await worker.shutdown() == 0

    history = changes(platform, task_id, wallet)
    failure = next(change for change in history if change.status is RS.START_FAILED)
    assert failure.cause is Cause.TASK_DESCRIPTION_INVALID
    assert RS.APP_DOWNLOADING not in [change.status for change in history]


async def test_ipfs_dataset_comes_from_the_next_gateway_when_the_first_fails(
    platform: Platform, files: FileServer, tmp_path: Path
) -> None:
    cid = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
    dataset = b"a dataset pinned on IPFS\n"
    files.files[f"ipfs/{cid}"] = dataset
    app = script_args(
        "set -e\n"
        'cp "$IEXEC_IN/$IEXEC_DATASET_FILENAME" /iexec_out/copy.bin\n'
        'printf "{\\"deterministic-output-path\\":\\"/iexec_out/copy.bin\\"}" > /iexec_out/computed.json\n'
    )
    # Port 1 refuses connections: the worker must go on to the second gateway.
    gateways = {"IEXEC_WORKER_IPFS_GATEWAYS": f"http://127.0.0.1:1,{files.url}"}
    async with running_worker(platform, 0, tmp_path / "worker", env=gateways):
        purchase = await buy(
            platform.info(),
            image=SHELL.tag,
            args=app,
            dataset_url=f"/ipfs/{cid}",
            dataset_sha256="0x" + sha256_hex(dataset),
        )
        task_id = purchase.task_ids[0]
        await completed(platform, task_id)

    chain_task = await platform.toolkit.view_task(task_id)
    assert chain_task.result_digest == "0x" + sha256_hex(dataset)
