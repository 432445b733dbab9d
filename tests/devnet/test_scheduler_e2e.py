"""Development scheduler end to end: real anvil + real PoCo, real HTTP and STOMP/SockJS on 127.0.0.1.

The test plays the worker over the scheduler's REST API and push channel and sends its own
contribute/reveal transactions with the toolkit; the scheduler initializes, authorizes, detects
consensus and finalizes on chain. Deals ask for a non-IPFS result storage, so no result proxy runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from eth_account.signers.local import LocalAccount

from devnet.accounts import Role, account
from devnet.contracts import DEVNET_CATEGORY, Devnet
from devnet.core import DevScheduler, TaskStatus
from devnet.toolkit import Toolkit
from tests.support import until
from tests.support.core_fakes import WorkerClient
from tests.support.devnet import devnet_cache_dir
from worker.protocol import crypto
from worker.protocol.status import ChainTaskStatus, ReplicateStatus
from worker.scheduler.stomp import PushChannel

pytestmark = pytest.mark.e2e

RS = ReplicateStatus
APP_IMAGE = "docker.io/iexechub/python-hello-world:8.0.0"
DIGEST = "0x2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"  # sha256("hello")
LINK = '{ "storage": "dropbox", "location": "/results/hello" }'
PARAMS = {"iexec_args": "hello", "iexec_result_storage_provider": "dropbox"}


class Pushes:
    """Everything received on one task topic, decoded."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, body: str) -> None:
        self.messages.append(json.loads(body))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["taskNotificationType"] == kind]


@asynccontextmanager
async def push_channel(session: aiohttp.ClientSession, url: str) -> AsyncIterator[PushChannel]:
    channel = PushChannel(session, url, reconnect_delay=0.2)
    stop = asyncio.Event()
    runner = asyncio.create_task(channel.run(stop), name="test-push-channel")
    try:
        assert await channel.wait_connected(10), "push channel did not connect"
        yield channel
    finally:
        stop.set()
        await runner


async def _setup(toolkit: Toolkit, devnet: Devnet, scheduler_account: LocalAccount) -> tuple[str, str]:
    app = await toolkit.create_app(account(Role.APP_PROVIDER), "hello-world", APP_IMAGE, "0x" + "11" * 32)
    workerpool = await toolkit.create_workerpool(scheduler_account, "scheduler-e2e-workerpool")
    return app, workerpool


async def _start(
    toolkit: Toolkit, devnet: Devnet, workerpool: str, scheduler_account: LocalAccount
) -> DevScheduler:
    return await DevScheduler.start(
        toolkit=toolkit,
        deployment=devnet.deployment,
        rpc_url=devnet.rpc_url,
        workerpool=workerpool,
        scheduler_account=scheduler_account,
        result_proxy_url="http://127.0.0.1:1",
        ask_for_replicate_period_ms=600,
        poll_interval_s=0.2,
    )


async def _buy(
    toolkit: Toolkit, devnet: Devnet, app: str, workerpool: str, scheduler_account: LocalAccount
) -> str:
    deal = await toolkit.buy(
        requester=account(Role.REQUESTER),
        app=app,
        app_owner=account(Role.APP_PROVIDER),
        workerpool=workerpool,
        workerpool_owner=scheduler_account,
        category=devnet.deployment.categories[DEVNET_CATEGORY],
        params=PARAMS,
    )
    [task_id] = deal.task_ids
    return task_id


async def _authorization(worker: WorkerClient) -> dict[str, Any]:
    answers: list[Any] = []

    async def ask() -> bool:
        answer = await worker.available(block_number=1)
        if answer.status == 200:
            answers.append(answer.json())
        return answer.status == 200

    await until(ask, within=20, every=0.2, what="a replicate from the scheduler")
    authorization: dict[str, Any] = answers[-1]["workerpoolAuthorization"]
    return authorization


async def _expect(
    worker: WorkerClient, task_id: str, status: str, action: str | None, details: Any = None
) -> None:
    answer = await worker.update(task_id, status, details)
    assert answer.status == 200, (status, answer)
    assert (answer.json() if answer.text else None) == action, status


def _receipt(receipt: Any) -> dict[str, Any]:
    return {
        "chainReceipt": {
            "blockNumber": int(receipt["blockNumber"]),
            "txHash": crypto.to_hex(receipt["transactionHash"]),
        }
    }


async def test_full_task_cycle_through_the_scheduler(devnet: Devnet, toolkit: Toolkit) -> None:
    scheduler_account, worker_account = account(Role.SCHEDULER), account(12)
    app, workerpool = await _setup(toolkit, devnet, scheduler_account)
    scheduler = await _start(toolkit, devnet, workerpool, scheduler_account)
    try:
        async with aiohttp.ClientSession() as http, push_channel(http, scheduler.url) as channel:
            worker = WorkerClient(http, scheduler.url, worker_account)
            await worker.login()
            assert (await worker.register()).status == 200
            assert (await worker.call("POST", "/workers/ping")).status == 200

            task_id = await _buy(toolkit, devnet, app, workerpool, scheduler_account)
            authorization = await _authorization(worker)
            assert authorization["chainTaskId"] == task_id
            assert (await toolkit.view_task(task_id)).status is ChainTaskStatus.ACTIVE
            assert scheduler.task_status(task_id) is TaskStatus.INITIALIZED

            pushes = Pushes()
            await channel.subscribe(f"/topic/task/{task_id}", pushes)
            await until(
                lambda: scheduler.broker.subscriber_count(f"/topic/task/{task_id}") == 1, what="subscribed"
            )

            for status, action in [
                ("STARTING", "PLEASE_CONTINUE"), ("STARTED", "PLEASE_DOWNLOAD_APP"),
                ("APP_DOWNLOADING", "PLEASE_CONTINUE"), ("APP_DOWNLOADED", "PLEASE_DOWNLOAD_DATA"),
                ("DATA_DOWNLOADING", "PLEASE_CONTINUE"), ("DATA_DOWNLOADED", "PLEASE_COMPUTE"),
                ("COMPUTING", "PLEASE_CONTINUE"), ("COMPUTED", "PLEASE_CONTRIBUTE"), ("CONTRIBUTING", "PLEASE_CONTINUE"),
            ]:  # fmt: skip
                await _expect(worker, task_id, status, action)
            contributed = await toolkit.contribute(
                task_id, DIGEST, worker_account, authorization["signature"]["value"]
            )
            await _expect(worker, task_id, "CONTRIBUTED", "PLEASE_WAIT", _receipt(contributed))

            await until(lambda: bool(pushes.of("PLEASE_REVEAL")), within=15, what="PLEASE_REVEAL pushed")
            [reveal] = pushes.of("PLEASE_REVEAL")
            assert reveal["workersAddress"] == [worker.wallet]
            assert reveal["taskNotificationExtra"]["blockNumber"] == int(contributed["blockNumber"])

            await _expect(worker, task_id, "REVEALING", "PLEASE_CONTINUE")
            revealed = await toolkit.reveal(task_id, DIGEST, worker_account)
            await _expect(worker, task_id, "REVEALED", "PLEASE_WAIT", _receipt(revealed))

            await until(lambda: bool(pushes.of("PLEASE_UPLOAD")), within=15, what="PLEASE_UPLOAD pushed")
            assert pushes.of("PLEASE_UPLOAD")[0]["workersAddress"] == [worker.wallet]
            await _expect(worker, task_id, "RESULT_UPLOADING", "PLEASE_CONTINUE")
            await _expect(
                worker,
                task_id,
                "RESULT_UPLOADED",
                "PLEASE_WAIT",
                {"resultLink": LINK, "chainCallbackData": None},
            )

            await until(lambda: bool(pushes.of("PLEASE_COMPLETE")), within=15, what="PLEASE_COMPLETE pushed")
            assert pushes.of("PLEASE_COMPLETE")[0]["workersAddress"] == []
            chain_task = await toolkit.view_task(task_id)
            assert chain_task.status is ChainTaskStatus.COMPLETED
            assert chain_task.results == LINK.encode()
            assert chain_task.result_digest == DIGEST

            await _expect(worker, task_id, "COMPLETING", "PLEASE_CONTINUE")
            await _expect(worker, task_id, "COMPLETED", "PLEASE_WAIT")
            assert [m["taskNotificationType"] for m in pushes.messages] == [
                "PLEASE_REVEAL", "PLEASE_UPLOAD", "PLEASE_COMPLETE",
            ]  # fmt: skip
            assert scheduler.replicate_history(task_id, worker.wallet) == [
                RS.CREATED, RS.STARTING, RS.STARTED, RS.APP_DOWNLOADING, RS.APP_DOWNLOADED, RS.DATA_DOWNLOADING,
                RS.DATA_DOWNLOADED, RS.COMPUTING, RS.COMPUTED, RS.CONTRIBUTING, RS.CONTRIBUTED, RS.REVEALING,
                RS.REVEALED, RS.RESULT_UPLOAD_REQUESTED, RS.RESULT_UPLOADING, RS.RESULT_UPLOADED, RS.COMPLETING,
                RS.COMPLETED,
            ]  # fmt: skip
            assert scheduler.task_status(task_id) is TaskStatus.COMPLETED
    finally:
        await scheduler.stop()


async def test_contribution_timeout_on_chain_time() -> None:
    # Moves the chain clock: a devnet of its own, not the shared one.
    async with await Devnet.up(cache_dir=devnet_cache_dir()) as devnet:
        toolkit = Toolkit(devnet.w3, devnet.deployment)
        scheduler_account, worker_account = account(Role.SCHEDULER), account(13)
        app, workerpool = await _setup(toolkit, devnet, scheduler_account)
        scheduler = await _start(toolkit, devnet, workerpool, scheduler_account)
        try:
            async with aiohttp.ClientSession() as http, push_channel(http, scheduler.url) as channel:
                worker = WorkerClient(http, scheduler.url, worker_account)
                await worker.login()
                await worker.register()
                task_id = await _buy(toolkit, devnet, app, workerpool, scheduler_account)
                await _authorization(worker)
                pushes = Pushes()
                await channel.subscribe(f"/topic/task/{task_id}", pushes)
                await until(
                    lambda: scheduler.broker.subscriber_count(f"/topic/task/{task_id}") == 1,
                    what="subscribed",
                )
                await _expect(worker, task_id, "STARTING", "PLEASE_CONTINUE")
                await _expect(worker, task_id, "STARTED", "PLEASE_DOWNLOAD_APP")

                chain_task = await toolkit.view_task(task_id)
                latest = await devnet.w3.eth.get_block("latest")
                await devnet.anvil.increase_time(
                    chain_task.contribution_deadline - int(latest["timestamp"]) + 1
                )
                await devnet.anvil.mine()

                await until(lambda: bool(pushes.of("PLEASE_ABORT")), within=15, what="PLEASE_ABORT pushed")
                [abort] = pushes.of("PLEASE_ABORT")
                assert abort["workersAddress"] == [worker.wallet]
                assert abort["taskAbortCause"] == "CONTRIBUTION_TIMEOUT"
                assert abort["taskNotificationExtra"]["taskAbortCause"] == "CONTRIBUTION_TIMEOUT"
                assert scheduler.task_history(task_id)[-2:] == [
                    TaskStatus.CONTRIBUTION_TIMEOUT,
                    TaskStatus.FAILED,
                ]
                await _expect(worker, task_id, "ABORTED", None, {"cause": "CONTRIBUTION_TIMEOUT"})
                assert (await worker.call("GET", "/workers/computing")).json() == []
        finally:
            await scheduler.stop()
