"""Development scheduler: restart with its state kept, and the fault switch (unit tests).

Real HTTP on 127.0.0.1; the chain is ``FakeChain`` (in memory) and the result check a fake. Keys are
throwaway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from eth_account import Account
from eth_account.signers.local import LocalAccount

from devnet.core import DevScheduler, FaultRule
from tests.support.core_fakes import FAKE_DEPLOYMENT, WORKERPOOL, FakeChain, FakeResults, WorkerClient
from worker.protocol.models import WorkerModel


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest_asyncio.fixture
async def scheduler() -> AsyncIterator[DevScheduler]:
    started = await DevScheduler.start(
        toolkit=None, deployment=FAKE_DEPLOYMENT, rpc_url="http://127.0.0.1:8545", workerpool=WORKERPOOL,
        scheduler_account=Account.create(), result_proxy_url="http://127.0.0.1:1", poll_interval_s=0.05,
        chain=FakeChain(), results=FakeResults(),
    )  # fmt: skip
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
def worker_key() -> LocalAccount:
    key: LocalAccount = Account.create()
    return key


async def test_a_restart_refuses_connections_then_serves_the_same_state_on_the_same_port(
    scheduler: DevScheduler, session: aiohttp.ClientSession, worker_key: LocalAccount
) -> None:
    worker = WorkerClient(session, scheduler.url, worker_key)
    await worker.login()
    model = WorkerModel(
        name="w", wallet_address=worker.wallet, os="Linux", cpu="x86_64", cpu_nb=1, memory_size=1
    )
    assert (await worker.call("POST", "/workers/register", raw=model.to_json())).status == 200
    url = scheduler.url

    await scheduler.go_down()
    assert not scheduler.serving
    with pytest.raises(aiohttp.ClientConnectionError):
        await worker.call("GET", "/version", auth=False)

    await scheduler.come_back()
    assert scheduler.url == url
    assert worker.wallet in scheduler.state.workers  # the state was kept, as iexec-core's in MongoDB
    assert (await worker.call("POST", "/workers/ping")).status == 401  # its JWTs died with it
    await worker.login()
    assert (await worker.call("POST", "/workers/ping")).status == 200


async def test_a_fault_rule_answers_its_requests_for_as_many_times_as_asked(
    scheduler: DevScheduler, session: aiohttp.ClientSession, worker_key: LocalAccount
) -> None:
    worker = WorkerClient(session, scheduler.url, worker_key)
    once = scheduler.faults.add(FaultRule(status=409, prefix="/version", times=1))
    assert (await worker.call("GET", "/version", auth=False)).status == 409
    assert (await worker.call("GET", "/version", auth=False)).status == 200
    assert once.hits == 1

    push = scheduler.faults.add(FaultRule(status=404, prefix="/connect"))
    assert (await worker.call("GET", "/connect/info", auth=False)).status == 404
    assert (await worker.call("GET", "/workers/config", auth=False)).status == 200
    scheduler.faults.remove(push)
    assert (await worker.call("GET", "/connect/info", auth=False)).status == 200
