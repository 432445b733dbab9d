"""End-to-end tests of ChainClient and verify_authorization on the shared devnet (real anvil + PoCo 6.1.0)."""

from __future__ import annotations

import json

import pytest

from devnet.accounts import Role, account
from devnet.contracts import DEVNET_CATEGORY, DEVNET_TIMEREF, Devnet
from devnet.toolkit import Toolkit
from tests.support import free_port
from tests.support.chain import APP_IMAGE, new_task, worker_account
from worker.chain.authorization import verify_authorization
from worker.chain.client import ChainClient
from worker.chain.errors import TaskNotFound
from worker.chain.multiaddr import ipfs_multiaddr
from worker.protocol.crypto import (
    ZERO_ADDRESS,
    authorization_hash,
    chain_task_id,
    checksum,
    sign_eip191,
    to_bytes,
)
from worker.protocol.errors import ChainError, ConfigurationError
from worker.protocol.models import Signature, WorkerpoolAuthorization
from worker.protocol.status import ChainContributionStatus, ChainTaskStatus

pytestmark = pytest.mark.e2e

DATASET_CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


async def _ipfs_dataset(toolkit: Toolkit) -> str:
    owner = account(Role.DATASET_PROVIDER)
    args = (
        checksum(owner.address),
        "chain-test-dataset",
        ipfs_multiaddr(DATASET_CID),
        to_bytes("0x" + "22" * 32),
    )
    predicted = await toolkit.dataset_registry.functions.predictDataset(*args).call()
    if not await toolkit.dataset_registry.functions.isRegistered(predicted).call():
        await toolkit.send(toolkit.dataset_registry.functions.createDataset(*args), owner)
    return str(predicted)


async def test_task_description_matches_what_was_bought(
    devnet: Devnet, toolkit: Toolkit, chain: ChainClient
) -> None:
    dataset = await _ipfs_dataset(toolkit)
    callback = account(Role.ANYONE).address
    params = {"iexec_args": "--answer 42", "iexec_input_files": ["https://example.org/in.txt"]}
    task_id, pool = await new_task(
        devnet,
        toolkit,
        params=params,
        dataset=dataset,
        dataset_owner=account(Role.DATASET_PROVIDER),
        trust=3,
        callback=callback.lower(),
    )

    description = await chain.task_description(task_id)

    block = await devnet.w3.eth.get_block("latest")
    deal = await toolkit.view_deal(description.deal_id)
    assert description.task_id == task_id
    assert chain_task_id(description.deal_id, description.bot_index) == task_id
    assert (description.app_type, description.app_uri) == ("DOCKER", APP_IMAGE)
    assert description.deal_params.iexec_args == "--answer 42"
    assert description.deal_params.iexec_input_files == ("https://example.org/in.txt",)
    assert json.loads(deal.params) == params
    assert description.dataset_address.lower() == dataset.lower()
    assert description.dataset_uri == f"/ipfs/{DATASET_CID}"
    assert description.dataset_checksum == "0x" + "22" * 32
    assert description.contains_dataset()
    assert description.callback.lower() == callback.lower()
    assert description.contains_callback()
    assert description.trust == 3
    assert description.workerpool_address.lower() == pool.lower()
    assert description.workerpool_owner.lower() == account(Role.SCHEDULER).address.lower()
    assert description.category == devnet.deployment.categories[DEVNET_CATEGORY]
    assert description.max_execution_time == DEVNET_TIMEREF
    assert description.start_time == deal.start_time
    assert 0 < description.start_time <= block["timestamp"]
    assert description.contribution_deadline == description.start_time + 7 * DEVNET_TIMEREF
    assert description.final_deadline == description.start_time + 10 * DEVNET_TIMEREF
    assert description.tee_framework is None
    assert not description.is_tee_task


async def test_task_description_without_dataset_nor_callback_and_plain_args(
    devnet: Devnet, toolkit: Toolkit, chain: ChainClient
) -> None:
    task_id, _ = await new_task(devnet, toolkit, params="just some args")
    description = await chain.task_description(task_id)
    assert description.deal_params.iexec_args == "just some args"
    assert not description.contains_dataset()
    assert not description.contains_callback()
    assert description.dataset_uri == ""
    assert description.trust == 1


async def test_views_of_a_fresh_task(devnet: Devnet, toolkit: Toolkit, chain: ChainClient) -> None:
    task_id, pool = await new_task(devnet, toolkit)
    worker = worker_account(19).address
    task = await chain.task(task_id)
    assert task.status is ChainTaskStatus.ACTIVE
    assert task.contributors == ()
    contribution = await chain.contribution(task_id, worker)
    assert contribution.status is ChainContributionStatus.UNSET
    assert (await chain.workerpool_owner(pool)).lower() == account(Role.SCHEDULER).address.lower()
    assert await chain.chain_id() == devnet.deployment.chain_id
    assert await chain.callbackgas() > 0
    assert await chain.balance(worker) > 0
    assert await chain.latest_block_number() == (await chain.latest_block()).number


async def test_unknown_task_has_no_description(chain: ChainClient) -> None:
    unknown = "0x" + "ab" * 32
    assert (await chain.task(unknown)).status is ChainTaskStatus.UNSET
    with pytest.raises(TaskNotFound, match="not initialized"):
        await chain.task_description(unknown)


async def test_connect_refuses_an_address_without_contract(devnet: Devnet) -> None:
    with pytest.raises(ConfigurationError, match="no contract"):
        await ChainClient.connect(devnet.rpc_url, "0x" + "42" * 20)


async def test_connect_to_a_node_that_is_down_is_transient() -> None:
    port = free_port()
    with pytest.raises(ChainError, match=f"127.0.0.1:{port}"):
        await ChainClient.connect(f"http://127.0.0.1:{port}", "0x" + "42" * 20, request_timeout=2)


def _authorization(
    task_id: str, worker: str, signer_key: bytes, enclave: str = ZERO_ADDRESS
) -> WorkerpoolAuthorization:
    return WorkerpoolAuthorization(
        chain_task_id=task_id,
        deal_id="0x" + "00" * 32,
        task_index=0,
        worker_wallet=worker,
        enclave_challenge=enclave,
        signature=Signature(value=sign_eip191(authorization_hash(worker, task_id, enclave), signer_key)),
    )


async def test_authorization_from_the_pool_owner_is_accepted_and_forgeries_are_not(
    devnet: Devnet, toolkit: Toolkit, chain: ChainClient
) -> None:
    task_id, pool = await new_task(devnet, toolkit)
    worker = worker_account(19).address
    scheduler_key = bytes(account(Role.SCHEDULER).key)
    nonce_before = await chain.nonce(worker, "latest")

    genuine = _authorization(task_id, worker, scheduler_key)
    assert await verify_authorization(chain, genuine, pool, worker)
    assert await verify_authorization(chain, genuine, pool, worker.lower(), task_id=task_id)

    forged = _authorization(task_id, worker, bytes(account(Role.ANYONE).key))
    assert not await verify_authorization(chain, forged, pool, worker)
    for_someone_else = _authorization(task_id, account(18).address, scheduler_key)
    assert not await verify_authorization(chain, for_someone_else, pool, worker)
    assert not await verify_authorization(chain, genuine, pool, worker, task_id="0x" + "cd" * 32)
    with_enclave = _authorization(task_id, worker, scheduler_key, enclave=account(Role.ENCLAVE).address)
    assert not await verify_authorization(chain, with_enclave, pool, worker)
    garbled = genuine.model_copy(update={"signature": Signature(value="0x1234")})
    assert not await verify_authorization(chain, garbled, pool, worker)

    assert await chain.nonce(worker, "latest") == nonce_before  # checking cost no transaction
