"""End to end: TEE tasks (SCONE, Gramine, TDX) from purchase to COMPLETED on the EMULATED TEE devnet.

Real anvil with PoCo, real Docker, the development scheduler, the result proxy and the worker as in
production; the SMS, the enclaves (plain containers running the devnet's emulated pre/post-compute), the
TDX secret provider agent and the SGX devices (character devices with /dev/null's numbers, made by each
test in its folder) are the emulated parts (docs/tee.md). Nothing here needs SGX or TDX hardware.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import sqlite3
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from Crypto.Cipher import AES
from Crypto.Util.Padding import pad

from devnet.accounts import Role, account
from devnet.core.state import TaskStatus
from devnet.images import HELLO, AppImage, build_app_image, ensure_images
from devnet.platform import Platform, buy, image_checksum, worker_env, write_env_file
from devnet.tee.side import stand_in_sgx_devices
from tests.support import serving_app, until
from tests.support.devnet import devnet_cache_dir
from tests.support.e2e import (
    contribute_count,
    local_status,
    running_worker,
    unique_worker_name,
    worker_process,
)
from tests.support.sdk import IexecCli
from worker.chain.abi import TASK_FINALIZE_TOPIC
from worker.compute import DockerEngine
from worker.protocol.crypto import chain_task_id
from worker.protocol.status import (
    ChainContributionStatus,
    ChainTaskStatus,
    ReplicateStatus,
    ReplicateStatusCause,
)
from worker.protocol.tee import TEE_GRAMINE_ONLY_TAG, TEE_SCONE_ONLY_TAG, TEE_TDX_ONLY_TAG, TeeFramework

pytestmark = pytest.mark.e2e

RS = ReplicateStatus
Cause = ReplicateStatusCause
FINAL = (TaskStatus.COMPLETED, TaskStatus.FAILED)
# Copies what pre-compute put in /iexec_in into the result (short names: post-compute refuses result
# file names longer than 31 characters), so the test sees what reached the app.
READER = AppImage(
    tag="iexec-devnet/tee-reader:1",
    description="copies /iexec_in/* to /iexec_out/in/<n> and writes a computed.json naming that folder",
    script="""\
set -e
mkdir -p /iexec_out/in
n=0
for f in /iexec_in/*; do n=$((n+1)); cp "$f" "/iexec_out/in/$n"; ls "$f" >> /iexec_out/names.txt; done
printf '{"deterministic-output-path":"/iexec_out/in"}\\n' > /iexec_out/computed.json
""",
)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def platform(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    base = tmp_path_factory.mktemp("tee-platform")
    async with await DockerEngine.open() as engine:
        await ensure_images(engine, [HELLO])
        await build_app_image(engine, READER.tag, READER.script)
    up = await Platform.up(
        base, cache_dir=devnet_cache_dir(), workers=5, ask_for_replicate_period_ms=300, tee=True
    )
    try:
        yield up
    finally:
        await up.stop()


def sgx_env(folder: Path) -> dict[str, str]:
    """The SGX settings of a worker whose devices are stand-ins this test made in its own folder."""
    return {"IEXEC_WORKER_SGX_DEVICES": ",".join(stand_in_sgx_devices(folder / "dev"))}


async def finished(platform: Platform, task_id: str, within: float = 120) -> TaskStatus | None:
    await until(
        lambda: platform.scheduler.task_status(task_id) in FINAL, within=within, what=f"task {task_id} done"
    )
    return platform.scheduler.task_status(task_id)


async def finalize_count(platform: Platform, task_id: str) -> int:
    w3 = platform.devnet.w3
    logs = await w3.eth.get_logs({
        "fromBlock": 0, "toBlock": "latest", "address": w3.to_checksum_address(platform.devnet.deployment.hub),
        "topics": [TASK_FINALIZE_TOPIC, task_id],
    })  # fmt: skip
    return len(logs)


async def downloaded_result(platform: Platform, task_id: str) -> zipfile.ZipFile:
    """The result zip, fetched from the IPFS gateway route at the location the chain task holds."""
    link = (await platform.toolkit.view_task(task_id)).results.decode()
    location = link.split('"location": "')[1].split('"')[0]
    async with aiohttp.ClientSession() as session, session.get(platform.proxy.url + location) as answer:
        assert answer.status == 200, link
        return zipfile.ZipFile(io.BytesIO(await answer.read()))


def cause_of(platform: Platform, task_id: str, wallet: str, status: ReplicateStatus) -> Cause | None:
    replicate = platform.scheduler.state.replicate(task_id, wallet)
    assert replicate is not None
    return next((change.cause for change in replicate.history if change.status is status), None)


@pytest.mark.parametrize("framework", [TeeFramework.SCONE, TeeFramework.GRAMINE, TeeFramework.TDX])
async def test_trust_one_tee_task_completes_with_one_contribute_and_finalize(
    platform: Platform, tmp_path: Path, framework: TeeFramework
) -> None:
    wallet = platform.workers[0].address
    tee, env = ("tdx", {}) if framework is TeeFramework.TDX else ("sgx", sgx_env(tmp_path))
    async with running_worker(platform, 0, tmp_path / "worker", tee=tee, env=env) as worker:
        purchase = await buy(platform.info(), image=HELLO.tag, args=framework.value.lower(), tee=framework)
        task_id = purchase.task_ids[0]
        assert await finished(platform, task_id) is TaskStatus.COMPLETED
        await until(
            lambda: platform.scheduler.replicate_history(task_id, wallet)[-1] is RS.COMPLETED,
            what="replicate COMPLETED",
        )
        assert await worker.shutdown() == 0

    history = platform.scheduler.replicate_history(task_id, wallet)
    assert history[history.index(RS.COMPUTED) :] == [
        RS.COMPUTED, RS.CONTRIBUTE_AND_FINALIZE_ONGOING, RS.CONTRIBUTE_AND_FINALIZE_DONE, RS.COMPLETING,
        RS.COMPLETED,
    ]  # fmt: skip
    chain_task = await platform.toolkit.view_task(task_id)
    assert chain_task.status is ChainTaskStatus.COMPLETED
    assert chain_task.contributors == (wallet,)
    # One transaction did it all: one TaskContribute from this worker, one TaskFinalize, no reveal.
    assert await contribute_count(platform, task_id, wallet) == 1
    assert await finalize_count(platform, task_id) == 1
    contribution = await platform.toolkit.view_contribution(task_id, wallet)
    assert contribution.status is ChainContributionStatus.PROVED
    task = platform.scheduler.task(task_id)
    assert task is not None
    assert contribution.enclave_challenge.lower() == task.enclave_challenge
    result = await downloaded_result(platform, task_id)
    assert result.read("result.txt") == f"Hello, {framework.value.lower()}!\n".encode()


async def test_tee_task_with_dataset_and_input_files_goes_through_pre_compute(
    platform: Platform, tmp_path: Path
) -> None:
    wallet = platform.workers[1].address
    assert platform.tee is not None
    key = os.urandom(32)
    iv = os.urandom(16)
    plain = b"the requester's secret dataset\n"
    encrypted = iv + AES.new(key, AES.MODE_CBC, iv).encrypt(pad(plain, 16))

    async def dataset(_: web.Request) -> web.Response:
        return web.Response(body=encrypted)

    async def input_file(_: web.Request) -> web.Response:
        return web.Response(body=b"an input file\n")

    files = web.Application()
    files.router.add_get("/dataset.bin", dataset)
    files.router.add_get("/input.txt", input_file)
    # Served on the devnet network's gateway: the pre-compute container downloads from there.
    async with (
        serving_app(files, host=platform.tee.gateway) as base,
        running_worker(platform, 1, tmp_path / "worker", tee="sgx", env=sgx_env(tmp_path)),
    ):
        purchase = await buy(
            platform.info(),
            image=READER.tag,
            tee=TeeFramework.SCONE,
            dataset_url=f"{base}/dataset.bin",
            dataset_sha256="0x" + hashlib.sha256(encrypted).hexdigest(),
            dataset_key=base64.b64encode(key).decode(),
            input_files=[f"{base}/input.txt"],
        )
        task_id = purchase.task_ids[0]
        assert await finished(platform, task_id) is TaskStatus.COMPLETED

    assert RS.CONTRIBUTE_AND_FINALIZE_DONE in platform.scheduler.replicate_history(task_id, wallet)
    result = await downloaded_result(platform, task_id)
    assert purchase.dataset is not None
    # Decrypted by the pre-compute enclave, named after the dataset; the input file after its URL.
    names = result.read("names.txt").decode().split()
    url_name = "0x" + hashlib.sha256(f"{base}/input.txt".encode()).hexdigest()
    contents = {name.lower(): result.read(f"in/{n}") for n, name in enumerate(names, start=1)}
    assert sorted(contents) == sorted([f"/iexec_in/{purchase.dataset}", f"/iexec_in/{url_name}"])
    assert contents[f"/iexec_in/{purchase.dataset}"] == plain
    assert contents[f"/iexec_in/{url_name}"] == b"an input file\n"


async def test_forged_result_signature_is_refused_and_nothing_goes_on_chain(
    platform: Platform, tmp_path: Path
) -> None:
    assert platform.tee is not None
    wallet = platform.workers[2].address
    w3 = platform.devnet.w3
    nonce_before = await w3.eth.get_transaction_count(w3.to_checksum_address(wallet))
    purchase = await buy(platform.info(), image=HELLO.tag, args="forged", tee=TeeFramework.TDX)
    task_id = purchase.task_ids[0]
    # The post-compute enclave of this task signs its result with a key of its own, not the task's.
    platform.tee.sms[TeeFramework.TDX].faults[task_id] = "forge-result-signature"
    async with running_worker(platform, 2, tmp_path / "worker", tee="tdx"):
        await until(
            lambda: RS.ABORTED in platform.scheduler.replicate_history(task_id, wallet),
            within=120,
            what="aborted",
        )
    history = platform.scheduler.replicate_history(task_id, wallet)
    assert RS.CONTRIBUTE_AND_FINALIZE_FAILED in history, history
    assert (
        cause_of(platform, task_id, wallet, RS.CONTRIBUTE_AND_FINALIZE_FAILED)
        is Cause.ENCLAVE_SIGNATURE_NOT_FOUND
    )
    chain_task = await platform.toolkit.view_task(task_id)
    assert chain_task.status is ChainTaskStatus.ACTIVE
    assert chain_task.contributors == ()
    assert await w3.eth.get_transaction_count(w3.to_checksum_address(wallet)) == nonce_before


async def test_post_compute_exit_cause_reaches_the_scheduler(platform: Platform, tmp_path: Path) -> None:
    assert platform.tee is not None
    wallet = platform.workers[2].address
    purchase = await buy(platform.info(), image=HELLO.tag, args="no proxy", tee=TeeFramework.SCONE)
    task_id = purchase.task_ids[0]
    platform.tee.sms[TeeFramework.SCONE].faults[task_id] = "result-proxy-unreachable"
    async with running_worker(platform, 2, tmp_path / "worker", tee="sgx", env=sgx_env(tmp_path)):
        await until(
            lambda: RS.COMPUTE_FAILED in platform.scheduler.replicate_history(task_id, wallet),
            within=120,
            what="COMPUTE_FAILED",
        )
    # The cause the post-compute enclave sent to the worker's endpoint, as the scheduler recorded it.
    assert cause_of(platform, task_id, wallet, RS.COMPUTE_FAILED) is Cause.POST_COMPUTE_IPFS_UPLOAD_FAILED
    assert (await platform.toolkit.view_task(task_id)).contributors == ()


async def test_worker_without_sgx_is_never_given_a_tee_task_and_refuses_one_offered_anyway(
    platform: Platform, tmp_path: Path
) -> None:
    wallet = platform.workers[3].address
    purchase = await buy(platform.info(), image=HELLO.tag, args="sgx only", tee=TeeFramework.GRAMINE)
    task_id = purchase.task_ids[0]
    await until(
        lambda: platform.scheduler.task_status(task_id) is TaskStatus.INITIALIZED,
        within=60,
        what="initialized",
    )
    async with running_worker(platform, 3, tmp_path / "worker"):
        await until(lambda: wallet in platform.scheduler.state.workers, what="worker registered")
        record = platform.scheduler.state.workers[wallet]
        assert not record.tee_enabled
        assert not record.tdx_enabled
        assert set(record.excluded_tags) == {TEE_SCONE_ONLY_TAG, TEE_GRAMINE_ONLY_TAG, TEE_TDX_ONLY_TAG}
        await until(lambda: record.last_demand is not None, what="the worker asks for work")
        await asyncio.sleep(2)  # several demands (every 0.3 s): none may get the TEE task
        task = platform.scheduler.task(task_id)
        assert task is not None
        assert wallet not in task.replicates

        record.tee_enabled = True  # a scheduler that believes otherwise offers it
        await until(
            lambda: RS.START_FAILED in platform.scheduler.replicate_history(task_id, wallet),
            what="START_FAILED",
        )
    assert cause_of(platform, task_id, wallet, RS.START_FAILED) is Cause.TEE_NOT_SUPPORTED
    assert (await platform.toolkit.view_task(task_id)).contributors == ()


async def test_worker_configured_for_sgx_without_devices_refuses_to_start(
    platform: Platform, tmp_path: Path
) -> None:
    env = worker_env(platform.info(), 4, tmp_path / "worker")
    env["IEXEC_WORKER_SGX_DRIVER_MODE"] = "NATIVE"
    env["IEXEC_WORKER_SGX_DEVICES"] = f"{tmp_path}/dev/sgx_enclave,{tmp_path}/dev/sgx_provision"
    env["IEXEC_WORKER_NAME"] = unique_worker_name(4)
    log = tmp_path / "worker.log"
    async with worker_process(write_env_file(tmp_path / "worker.env", env), log) as worker:
        code = await asyncio.wait_for(worker.process.wait(), 60)
    output = log.read_text()
    assert code == 2, output
    assert "SGX required but not supported" in output
    assert f"{tmp_path}/dev/sgx_enclave" in output
    assert platform.workers[4].address not in platform.scheduler.state.workers  # it never joined


async def test_worker_killed_after_broadcasting_contribute_and_finalize_never_sends_it_twice(
    platform: Platform, tmp_path: Path
) -> None:
    info = platform.info()
    wallet = info.workers[1].address
    name = unique_worker_name(1)
    base = tmp_path / "worker"
    env_file = write_env_file(
        tmp_path / "worker.env", {**worker_env(info, 1, base, tee="tdx"), "IEXEC_WORKER_NAME": name}
    )
    db = base / f"{name}.sqlite3"
    w3 = platform.devnet.w3
    anvil = platform.devnet.anvil
    nonce_before = await w3.eth.get_transaction_count(w3.to_checksum_address(wallet))

    def journaled() -> bool:
        if not db.exists():
            return False
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            try:
                row = conn.execute(
                    "SELECT 1 FROM transactions WHERE task_id = ? AND kind = 'CONTRIBUTE_AND_FINALIZE'",
                    (task_id,),
                ).fetchone()
            except sqlite3.OperationalError:
                return False
        return row is not None

    try:
        async with worker_process(env_file, tmp_path / "worker-1.log") as first:
            purchase = await buy(info, image=HELLO.tag, args="crash", tee=TeeFramework.TDX)
            task_id = purchase.task_ids[0]
            await first.until(
                lambda: local_status(db, task_id) is RS.COMPUTING, within=60, every=0.01, what="computing"
            )
            await anvil.set_automine(False)  # the transaction will wait in the pool
            await first.until(lambda: asyncio.to_thread(journaled), within=60, every=0.01, what="journaled")

            async def broadcast() -> bool:
                return (
                    await w3.eth.get_transaction_count(w3.to_checksum_address(wallet), "pending")
                    > nonce_before
                )

            await first.until(broadcast, within=30, every=0.01, what="the transaction in the node's pool")
            await first.kill_9()
        assert local_status(db, task_id) is RS.CONTRIBUTE_AND_FINALIZE_ONGOING
    finally:
        await anvil.set_automine(True)
    await anvil.mine(1)  # the broadcast transaction is mined while no worker runs
    assert (await platform.toolkit.view_task(task_id)).status is ChainTaskStatus.COMPLETED

    async with worker_process(env_file, tmp_path / "worker-2.log") as second:
        await second.until(
            lambda: local_status(db, task_id) is RS.COMPLETED, within=60, what="replicate COMPLETED locally"
        )
        await second.stop()
    assert platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED
    assert await contribute_count(platform, task_id, wallet) == 1
    assert await w3.eth.get_transaction_count(w3.to_checksum_address(wallet)) - nonce_before == 1
    history = platform.scheduler.replicate_history(task_id, wallet)
    assert history.count(RS.CONTRIBUTE_AND_FINALIZE_DONE) == 1
    assert history[-1] is RS.COMPLETED


async def test_deal_made_with_the_official_sdk_completes_on_a_tdx_worker(
    platform: Platform, tmp_path: Path
) -> None:
    # SDK 9 tags every order TEE + TDX (0x…09) and cannot do otherwise: this is today's requester.
    info = platform.info()
    assert info.tee is not None
    requester, pool_owner = account(Role.REQUESTER), account(Role.SCHEDULER)
    sdk = IexecCli(tmp_path / "project")
    sdk.project.mkdir()
    await sdk.run("init", "--skip-wallet")
    sdk.edit("chain.json", {"default": "dev", "chains": {"dev": {
        "id": str(info.chain_id), "host": info.rpc_url, "hub": info.hub,
        "sms": info.tee.sms_url(TeeFramework.TDX), "ipfsGateway": info.result_proxy_url,
    }}})  # fmt: skip
    for key in (requester.key, pool_owner.key):
        await sdk.import_wallet(key.hex())
    me = requester.address

    await sdk.run("app", "init", wallet=me)
    sdk.edit(
        "iexec.json",
        {"app": {"name": "sdk-hello", "multiaddr": HELLO.tag, "checksum": await image_checksum(HELLO.tag)}},
    )
    app = (await sdk.run("app", "deploy", wallet=me))["address"]
    await sdk.run("order", "init", "--app", "--workerpool", "--request", wallet=me)
    sdk.edit("iexec.json", {"order": {
        "workerpoolorder": {"workerpool": info.workerpool, "category": str(info.category)},
        "requestorder": {
            "app": app, "workerpool": info.workerpool, "category": str(info.category),
            "params": {"iexec_args": "sdk", "iexec_result_storage_provider": "ipfs"},
        },
    }})  # fmt: skip
    await sdk.run("order", "sign", "--app", wallet=me)
    await sdk.run("order", "sign", "--workerpool", wallet=pool_owner.address)
    await sdk.run("order", "sign", "--request", wallet=me)

    wallet = platform.workers[0].address
    async with running_worker(platform, 0, tmp_path / "worker", tee="tdx"):
        deal_id = (await sdk.run("order", "fill", "--force", wallet=me))["dealid"]
        task_id = chain_task_id(deal_id, 0)
        assert await finished(platform, task_id) is TaskStatus.COMPLETED
        assert (await platform.toolkit.view_deal(deal_id)).tag == TEE_TDX_ONLY_TAG

        shown = await sdk.run("task", "show", task_id, "--download", "result.zip", wallet=me)
    assert shown["task"]["statusName"] == "COMPLETED", shown
    # Downloaded by the SDK from the location on chain, through the devnet's IPFS gateway route.
    assert zipfile.ZipFile(sdk.project / "result.zip").read("result.txt") == b"Hello, sdk!\n"
    assert RS.CONTRIBUTE_AND_FINALIZE_DONE in platform.scheduler.replicate_history(task_id, wallet)
