"""Development scheduler, TEE duties (unit tests): the chain is ``FakeChain``, the SMS a fake served on
127.0.0.1 that checks the scheduler's signatures as iexec-sms does; HTTP is real on 127.0.0.1."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio
from aiohttp import web
from eth_account import Account
from eth_account.signers.local import LocalAccount

from devnet.core import DevScheduler, TaskStatus
from devnet.core.chain import ContributionView
from tests.support import serving_app, until
from tests.support.core_fakes import FAKE_DEPLOYMENT, WORKERPOOL, FakeChain, FakeResults, WorkerClient
from worker.chain import ChainTask
from worker.protocol.crypto import authorization_hash, chain_task_id, recover_eip191
from worker.protocol.status import ChainContributionStatus, ChainTaskStatus, ReplicateStatus
from worker.protocol.tee import (
    RESULT_PROXY_URL,
    TEE_TDX_ONLY_TAG,
    TeeFramework,
    challenge_request_hash,
    web2_secret_hash,
)

DEAL = "0x" + "ce" * 32
TASK = chain_task_id(DEAL, 0)
ENCLAVE = "0x" + "e7" * 20
PROXY = "http://127.0.0.1:1"
RS = ReplicateStatus


class FakeSms:
    def __init__(self, owner: LocalAccount) -> None:
        self.owner = owner.address.lower()
        self.secrets: dict[tuple[str, str], str] = {}

    def app(self) -> web.Application:
        async def framework(_: web.Request) -> web.Response:
            return web.json_response("TDX")

        async def challenge(request: web.Request) -> web.Response:
            signer = recover_eip191(
                challenge_request_hash(request.match_info["id"]), request.headers["Authorization"]
            )
            return web.Response(text=ENCLAVE) if signer == self.owner else web.Response(status=401)

        async def head(request: web.Request) -> web.Response:
            key = (request.query["ownerAddress"], request.query["secretName"])
            return web.Response(status=204 if key in self.secrets else 404)

        async def post(request: web.Request) -> web.Response:
            owner, name = request.query["ownerAddress"], request.query["secretName"]
            value = (await request.read()).decode()
            if (
                recover_eip191(web2_secret_hash(owner, name, value), request.headers["Authorization"])
                != owner
            ):
                return web.Response(status=401)
            self.secrets[(owner, name)] = value
            return web.Response(status=204)

        app = web.Application()
        app.router.add_get("/tee/framework", framework)
        app.router.add_post("/tee/challenges/{id}", challenge)
        app.router.add_route("HEAD", "/secrets/web2", head)
        app.router.add_post("/secrets/web2", post)
        return app


@pytest_asyncio.fixture
async def setup() -> AsyncIterator[tuple[DevScheduler, FakeChain, FakeSms, LocalAccount]]:
    chain, owner = FakeChain(), Account.create()
    sms = FakeSms(owner)
    async with serving_app(sms.app()) as sms_url:
        dev = await DevScheduler.start(
            toolkit=None, deployment=FAKE_DEPLOYMENT, rpc_url="http://127.0.0.1:8545", workerpool=WORKERPOOL,
            scheduler_account=owner, result_proxy_url=PROXY, ask_for_replicate_period_ms=100,
            poll_interval_s=0.05, chain=chain, results=FakeResults(), sms_urls={TeeFramework.TDX: sms_url},
        )  # fmt: skip
        try:
            yield dev, chain, sms, owner
        finally:
            await dev.stop()


async def test_a_trust_one_tdx_task_goes_to_tdx_workers_and_completes_after_contribute_and_finalize(
    setup: tuple[DevScheduler, FakeChain, FakeSms, LocalAccount],
) -> None:
    scheduler, chain, sms, owner = setup
    chain.add_deal(DEAL)
    chain.deals[DEAL] = dataclasses.replace(chain.deals[DEAL], tag=TEE_TDX_ONLY_TAG)
    await until(lambda: scheduler.task_status(TASK) is TaskStatus.INITIALIZED, within=5, what="initialized")
    task = scheduler.task(TASK)
    assert task is not None
    assert task.enclave_challenge == ENCLAVE
    assert sms.secrets == {(owner.address.lower(), RESULT_PROXY_URL): PROXY}

    async with aiohttp.ClientSession() as http:
        standard, tdx = (
            WorkerClient(http, scheduler.url, Account.create()),
            WorkerClient(http, scheduler.url, Account.create()),
        )
        for worker, flags in ((standard, {}), (tdx, {"tdx": True})):
            await worker.login()
            assert (await worker.register(**flags)).status == 200
        assert (await standard.available()).status == 204  # TDX tag excluded for it
        offer = await tdx.available()
        assert offer.status == 200, offer
        summary = offer.json()
        auth = summary["workerpoolAuthorization"]
        assert summary["smsUrl"].startswith("http://127.0.0.1:")
        assert auth["enclaveChallenge"] == ENCLAVE
        signed = authorization_hash(tdx.wallet, TASK, ENCLAVE)
        assert recover_eip191(signed, auth["signature"]["value"]) == owner.address.lower()

        for status in ("STARTING", "STARTED", "APP_DOWNLOADING", "APP_DOWNLOADED", "DATA_DOWNLOADING",
                       "DATA_DOWNLOADED", "COMPUTING"):  # fmt: skip
            assert (await tdx.update(TASK, status)).status == 200
        computed = await tdx.update(TASK, "COMPUTED")
        assert computed.json() == "PLEASE_CONTRIBUTE_AND_FINALIZE"  # iexec-core: trust 1 and a TEE framework
        assert (await tdx.update(TASK, "CONTRIBUTE_AND_FINALIZE_ONGOING")).status == 200
        # The worker's transaction: contribution PROVED and task COMPLETED at once, on chain.
        chain.contributions[(TASK, tdx.wallet)] = ContributionView(
            ChainContributionStatus.PROVED, "0x" + "11" * 32
        )
        link = b'{ "storage": "ipfs", "location": "/ipfs/QmTee" }'
        old: ChainTask = chain.tasks[TASK]
        chain.tasks[TASK] = dataclasses.replace(old, status=ChainTaskStatus.COMPLETED, results=link)
        done = await tdx.update(TASK, "CONTRIBUTE_AND_FINALIZE_DONE", {"resultLink": link.decode()})
        assert done.status == 200, done

    await until(lambda: scheduler.task_status(TASK) is TaskStatus.COMPLETED, within=5, what="completed")
    assert scheduler.task_history(TASK)[-3:] == [
        TaskStatus.RUNNING,
        TaskStatus.FINALIZED,
        TaskStatus.COMPLETED,
    ]
    assert chain.finalized == []  # no finalize transaction of the scheduler
    assert scheduler.notifications[-1].task_notification_type.value == "PLEASE_COMPLETE"
    assert task.result_link == link.decode()
