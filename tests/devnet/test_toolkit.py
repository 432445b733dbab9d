"""End-to-end on a private devnet per test (real anvil + real PoCo, warm-started from the cache): revert reporting,
asset reuse, the clock and mining controls, and a claim after the final deadline."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from devnet.accounts import Role, account
from devnet.contracts import DEVNET_CATEGORY, DEVNET_TIMEREF, Devnet, TransactionFailed
from devnet.toolkit import Toolkit
from tests.support.devnet import devnet_cache_dir
from worker.protocol import crypto
from worker.protocol.status import ChainTaskStatus

pytestmark = pytest.mark.e2e

RLC = 10**9


@pytest_asyncio.fixture
async def private_devnet() -> AsyncIterator[Devnet]:
    # These tests move the chain clock or stop mining: keep that away from the shared devnet.
    async with await Devnet.up(cache_dir=devnet_cache_dir()) as net:
        yield net


async def test_revert_names_the_function_and_the_reason(private_devnet: Devnet) -> None:
    toolkit = Toolkit(private_devnet.w3, private_devnet.deployment)
    call = toolkit.iexec.functions.createCategory("NOPE", "{}", 60)

    with pytest.raises(
        TransactionFailed, match=r"createCategory .*Ownable: caller is not the owner"
    ) as failure:
        await toolkit.send(call, account(Role.ANYONE))
    assert failure.value.reason == "Ownable: caller is not the owner"


async def test_create_app_twice_returns_the_registered_app(private_devnet: Devnet) -> None:
    toolkit = Toolkit(private_devnet.w3, private_devnet.deployment)
    owner = account(Role.APP_PROVIDER)

    first = await toolkit.create_app(owner, "twice", "docker.io/library/busybox:1.36", "0x" + "33" * 32)
    second = await toolkit.create_app(owner, "twice", "docker.io/library/busybox:1.36", "0x" + "33" * 32)

    assert first == second
    assert first == first.lower()
    assert await toolkit.app_registry.functions.isRegistered(
        toolkit.app_registry.w3.to_checksum_address(first)
    ).call()


async def test_transactions_wait_for_a_block_when_automine_is_off(private_devnet: Devnet) -> None:
    toolkit = Toolkit(private_devnet.w3, private_devnet.deployment)
    anvil, w3, admin = private_devnet.anvil, private_devnet.w3, account(Role.ADMIN)
    recipient = account(Role.ANYONE).address
    await anvil.set_automine(False)

    sending = asyncio.create_task(toolkit.send(toolkit.rlc.functions.transfer(recipient, 5), admin))
    deadline = time.monotonic() + 10
    while await w3.eth.get_transaction_count(admin.address, "pending") == await w3.eth.get_transaction_count(
        admin.address, "latest"
    ):
        assert time.monotonic() < deadline, "the transfer never reached the mempool"
        await asyncio.sleep(0.02)
    assert not sending.done()

    await anvil.mine()
    receipt = await asyncio.wait_for(sending, 10)
    assert receipt["status"] == 1
    assert await toolkit.rlc.functions.balanceOf(recipient).call() == 5
    await anvil.set_automine(True)


async def test_claim_after_final_deadline_refunds_and_unlocks(private_devnet: Devnet) -> None:
    toolkit = Toolkit(private_devnet.w3, private_devnet.deployment)
    requester, scheduler, worker = account(Role.REQUESTER), account(Role.SCHEDULER), account(Role.WORKER)
    app = await toolkit.create_app(
        account(Role.APP_PROVIDER), "claimed", "docker.io/library/busybox:1.36", "0x" + "44" * 32
    )
    workerpool = await toolkit.create_workerpool(scheduler, "claim-pool")
    await toolkit.fund(requester, 2 * RLC)
    await toolkit.fund(scheduler, 600_000_000)
    await toolkit.fund(worker, 600_000_000)
    requester_before = await toolkit.view_account(requester.address)
    worker_before = await toolkit.view_account(worker.address)

    deal = await toolkit.buy(
        requester=requester,
        app=app,
        app_owner=account(Role.APP_PROVIDER),
        workerpool=workerpool,
        workerpool_owner=scheduler,
        category=private_devnet.deployment.categories[DEVNET_CATEGORY],
        workerpool_price=2 * RLC,
    )
    task_id = await toolkit.initialize(deal.deal_id, 0, scheduler)
    authorization = crypto.sign_eip191(
        crypto.authorization_hash(worker.address.lower(), task_id), scheduler.key
    )
    await toolkit.contribute(
        task_id, "0x" + hashlib.sha256(b"never revealed").hexdigest(), worker, authorization
    )

    with pytest.raises(TransactionFailed, match="claim"):
        await toolkit.claim(task_id, account(Role.ANYONE))
    await private_devnet.anvil.increase_time(10 * DEVNET_TIMEREF + 1)
    await private_devnet.anvil.mine()
    await toolkit.claim(task_id, account(Role.ANYONE))

    assert (await toolkit.view_task(task_id)).status is ChainTaskStatus.FAILED
    assert await toolkit.view_account(requester.address) == requester_before
    assert await toolkit.view_account(worker.address) == worker_before


async def test_block_time_devnet_mines_without_transactions() -> None:
    async with await Devnet.up(cache_dir=devnet_cache_dir(), block_time=1) as net:
        first = await net.w3.eth.block_number
        deadline = time.monotonic() + 5
        while await net.w3.eth.block_number <= first:
            assert time.monotonic() < deadline, "no block mined within 5 s with --block-time 1"
            await asyncio.sleep(0.1)
