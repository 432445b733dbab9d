"""End-to-end on the shared devnet (real anvil + real PoCo): one task through its whole on-chain life, with the test
playing requester, asset owners, scheduler and worker, checked against the balance table of docs/devnet.md."""

from __future__ import annotations

import hashlib

import pytest

from devnet.accounts import Role, account
from devnet.contracts import DEVNET_CATEGORY, DEVNET_TIMEREF, Devnet
from devnet.toolkit import Toolkit
from worker.protocol import crypto
from worker.protocol.status import ChainContributionStatus, ChainTaskStatus

pytestmark = pytest.mark.e2e

RLC = 10**9  # nRLC
APP_IMAGE = "docker.io/iexechub/python-hello-world:8.0.0"


async def test_full_task_cycle_pays_everyone(devnet: Devnet, toolkit: Toolkit) -> None:
    requester, scheduler, worker = account(Role.REQUESTER), account(Role.SCHEDULER), account(Role.WORKER)
    app_owner, dataset_owner = account(Role.APP_PROVIDER), account(Role.DATASET_PROVIDER)
    worker_wallet = worker.address.lower()

    app = await toolkit.create_app(app_owner, "hello-world", APP_IMAGE, "0x" + "11" * 32)
    dataset = await toolkit.create_dataset(
        dataset_owner, "devnet-dataset", "/ipfs/QmDevnetDataset", "0x" + "22" * 32
    )
    workerpool = await toolkit.create_workerpool(scheduler, "devnet-workerpool")
    assert await toolkit.workerpool_owner(workerpool) == scheduler.address.lower()
    await toolkit.fund(requester, 3_500_000_000)
    await toolkit.fund(scheduler, 600_000_000)
    await toolkit.fund(worker, 600_000_000)

    parties = {
        "requester": requester.address,
        "scheduler": scheduler.address,
        "worker": worker.address,
        "app owner": app_owner.address,
        "dataset owner": dataset_owner.address,
    }
    before = {name: await toolkit.view_account(address) for name, address in parties.items()}

    deal = await toolkit.buy(
        requester=requester,
        app=app,
        app_owner=app_owner,
        dataset=dataset,
        dataset_owner=dataset_owner,
        workerpool=workerpool,
        workerpool_owner=scheduler,
        category=devnet.deployment.categories[DEVNET_CATEGORY],
        params={"iexec_args": "hello"},
        app_price=1 * RLC,
        dataset_price=RLC // 2,
        workerpool_price=2 * RLC,
    )
    assert deal.deal_id == crypto.deal_id(deal.order_hashes["request"])
    assert deal.task_ids == [crypto.chain_task_id(deal.deal_id, 0)]
    chain_deal = await toolkit.view_deal(deal.deal_id)
    assert (chain_deal.app.pointer, chain_deal.dataset.pointer, chain_deal.workerpool.pointer) == (
        app,
        dataset,
        workerpool,
    )
    assert chain_deal.workerpool.owner == scheduler.address.lower()
    assert chain_deal.params == '{"iexec_args":"hello"}'
    assert (chain_deal.trust, chain_deal.worker_stake, chain_deal.scheduler_reward_ratio) == (
        1,
        600_000_000,
        1,
    )
    stake, locked = await toolkit.view_account(requester.address)
    assert (stake, locked) == (before["requester"][0] - 3_500_000_000, before["requester"][1] + 3_500_000_000)

    task_id = await toolkit.initialize(deal.deal_id, 0, scheduler)
    assert task_id == deal.task_ids[0]
    task = await toolkit.view_task(task_id)
    assert task.status is ChainTaskStatus.ACTIVE
    assert task.timeref == DEVNET_TIMEREF
    assert task.contribution_deadline == chain_deal.start_time + 7 * DEVNET_TIMEREF
    assert task.final_deadline == chain_deal.start_time + 10 * DEVNET_TIMEREF

    authorization = crypto.sign_eip191(crypto.authorization_hash(worker_wallet, task_id), scheduler.key)
    digest = "0x" + hashlib.sha256(b"hello").hexdigest()
    await toolkit.contribute(task_id, digest, worker, authorization)
    task = await toolkit.view_task(task_id)
    assert task.status is ChainTaskStatus.REVEALING
    assert task.consensus_value == crypto.result_hash(task_id, digest)
    assert task.contributors == (worker_wallet,)
    contribution = await toolkit.view_contribution(task_id, worker_wallet)
    assert contribution.status is ChainContributionStatus.CONTRIBUTED
    assert contribution.result_seal == crypto.result_seal(worker_wallet, task_id, digest)
    assert await toolkit.view_account(worker.address) == (
        before["worker"][0] - 600_000_000,
        before["worker"][1] + 600_000_000,
    )

    await toolkit.reveal(task_id, digest, worker)
    assert (await toolkit.view_contribution(task_id, worker_wallet)).status is ChainContributionStatus.PROVED

    await toolkit.finalize(task_id, b"/ipfs/QmDevnetResult", b"", scheduler)
    task = await toolkit.view_task(task_id)
    assert task.status is ChainTaskStatus.COMPLETED
    assert task.results == b"/ipfs/QmDevnetResult"
    assert task.result_digest == digest

    after = {name: await toolkit.view_account(address) for name, address in parties.items()}
    delta = {name: (after[name][0] - before[name][0], after[name][1] - before[name][1]) for name in parties}
    assert delta == {
        "requester": (-3_500_000_000, 0),
        "scheduler": (20_000_000, 0),
        "worker": (1_980_000_000, 0),
        "app owner": (1 * RLC, 0),
        "dataset owner": (RLC // 2, 0),
    }
