"""End-to-end tests of TransactionSender on real anvil + PoCo 6.1.0, with an in-memory journal fake.

Tests that move the chain clock run on their own devnet (tests/conftest.py asks not to move the shared one).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from eth_account.signers.local import LocalAccount

from devnet.accounts import Role, account
from devnet.contracts import DEVNET_TIMEREF, Devnet
from devnet.toolkit import Toolkit
from tests.support.chain import MemoryJournal, _buy, new_task, worker_account
from worker.chain.client import ChainClient
from worker.chain.errors import ContractReverted, TransactionRefused
from worker.chain.gas import GasPolicy
from worker.chain.models import TxKind
from worker.chain.transactions import CONTRIBUTE_GAS_FLOOR, TransactionSender, _revert_cause
from worker.protocol.crypto import (
    authorization_hash,
    chain_task_id,
    result_hash,
    result_seal,
    sign_eip191,
    to_bytes,
)
from worker.protocol.errors import ChainError
from worker.protocol.status import ChainContributionStatus, ChainTaskStatus, ReplicateStatusCause
from worker.protocol.tee import TEE_TDX_ONLY_TAG, enclave_message

pytestmark = pytest.mark.e2e

DIGEST = "0x" + hashlib.sha256(b"hello").hexdigest()


def _auth(task_id: str, worker: LocalAccount) -> str:
    return sign_eip191(authorization_hash(worker.address, task_id), bytes(account(Role.SCHEDULER).key))


def _sender(chain: ChainClient, worker: LocalAccount, journal: MemoryJournal) -> TransactionSender:
    return TransactionSender(chain, worker, journal, receipt_timeout=20, poll_interval=0.05)


async def test_contribute_then_reveal_proves_the_contribution(
    devnet: Devnet, toolkit: Toolkit, chain: ChainClient
) -> None:
    worker, journal = worker_account(12), MemoryJournal()
    task_id, _ = await new_task(devnet, toolkit)
    sender = _sender(chain, worker, journal)

    contributed = await sender.contribute(task_id, DIGEST, _auth(task_id, worker))

    assert contributed.tx_hash == journal.entries[(task_id, TxKind.CONTRIBUTE)].tx_hash
    assert contributed.block_number > 0
    contribution = await chain.contribution(task_id, worker.address)
    assert contribution.status is ChainContributionStatus.CONTRIBUTED
    assert contribution.result_hash == result_hash(task_id, DIGEST)
    assert contribution.result_seal == result_seal(worker.address, task_id, DIGEST)
    assert (await chain.task(task_id)).status is ChainTaskStatus.REVEALING

    revealed = await sender.reveal(task_id, DIGEST)

    assert revealed.block_number >= contributed.block_number
    assert (await chain.contribution(task_id, worker.address)).status is ChainContributionStatus.PROVED
    receipt = await devnet.w3.eth.get_transaction_receipt(revealed.tx_hash)  # type: ignore[arg-type]
    assert receipt["blockNumber"] == revealed.block_number
    assert journal.records == 2
    sent = await devnet.w3.eth.get_transaction(contributed.tx_hash)  # type: ignore[arg-type]
    assert sent["type"] == 2  # anvil has a base fee: EIP-1559 fees, within the policy's cap
    assert 0 < sent["maxFeePerGas"] <= GasPolicy().cap
    assert sent["gas"] >= CONTRIBUTE_GAS_FLOOR


async def test_a_second_contribute_for_the_same_task_sends_nothing(
    devnet: Devnet, toolkit: Toolkit, chain: ChainClient
) -> None:
    worker, journal = worker_account(13), MemoryJournal()
    task_id, _ = await new_task(devnet, toolkit)
    first = await _sender(chain, worker, journal).contribute(task_id, DIGEST, _auth(task_id, worker))
    count = await chain.nonce(worker.address, "pending")

    again = await _sender(chain, worker, journal).contribute(task_id, DIGEST, _auth(task_id, worker))

    assert again == first
    assert await chain.nonce(worker.address, "pending") == count
    assert journal.records == 1


async def test_a_crash_after_the_journal_write_broadcasts_the_recorded_tx_on_retry(
    devnet: Devnet, toolkit: Toolkit, chain: ChainClient
) -> None:
    worker, journal = worker_account(14), MemoryJournal(crash_after_record=True)
    task_id, _ = await new_task(devnet, toolkit)
    count = await chain.nonce(worker.address, "pending")
    with pytest.raises(RuntimeError, match="simulated crash"):
        await _sender(chain, worker, journal).contribute(task_id, DIGEST, _auth(task_id, worker))
    assert await chain.nonce(worker.address, "pending") == count  # signed and recorded, never sent

    receipt = await _sender(chain, worker, journal).contribute(task_id, DIGEST, _auth(task_id, worker))

    assert receipt.tx_hash == journal.entries[(task_id, TxKind.CONTRIBUTE)].tx_hash
    assert await chain.nonce(worker.address, "pending") == count + 1
    assert (await chain.contribution(task_id, worker.address)).status is ChainContributionStatus.CONTRIBUTED
    assert journal.records == 1


async def test_a_forged_authorization_is_refused_before_sending(
    devnet: Devnet, toolkit: Toolkit, chain: ChainClient
) -> None:
    worker, journal = worker_account(15), MemoryJournal()
    task_id, _ = await new_task(devnet, toolkit)
    forged = sign_eip191(authorization_hash(worker.address, task_id), bytes(account(Role.ANYONE).key))
    count = await chain.nonce(worker.address, "pending")

    with pytest.raises(TransactionRefused) as refused:
        await _sender(chain, worker, journal).contribute(task_id, DIGEST, forged)

    assert refused.value.cause is ReplicateStatusCause.WORKERPOOL_AUTHORIZATION_NOT_FOUND
    assert not refused.value.sent
    assert await chain.nonce(worker.address, "pending") == count
    assert journal.records == 0


async def test_reveal_before_consensus_is_refused_before_sending(
    devnet: Devnet, toolkit: Toolkit, chain: ChainClient
) -> None:
    worker, journal = worker_account(15), MemoryJournal()
    task_id, _ = await new_task(devnet, toolkit)
    count = await chain.nonce(worker.address, "pending")

    with pytest.raises(TransactionRefused) as refused:
        await _sender(chain, worker, journal).reveal(task_id, DIGEST)

    assert refused.value.cause is ReplicateStatusCause.CANNOT_REVEAL
    assert await chain.nonce(worker.address, "pending") == count
    assert journal.records == 0


async def test_a_second_contribute_without_the_journal_is_refused_before_sending(
    devnet: Devnet, toolkit: Toolkit, chain: ChainClient
) -> None:
    # A worker whose journal was lost (a new state directory) must not pay for a doomed second contribute.
    # A lone contribution is a consensus in PoCo: the task has left ACTIVE, the first reason named.
    worker = worker_account(13)
    task_id, _ = await new_task(devnet, toolkit)
    await _sender(chain, worker, MemoryJournal()).contribute(task_id, DIGEST, _auth(task_id, worker))
    count, journal = await chain.nonce(worker.address, "pending"), MemoryJournal()

    with pytest.raises(TransactionRefused) as refused:
        await _sender(chain, worker, journal).contribute(task_id, DIGEST, _auth(task_id, worker))

    assert refused.value.cause is ReplicateStatusCause.TASK_NOT_ACTIVE
    assert "simulation" not in str(refused.value)  # named from the views, before the revert says so
    assert await chain.nonce(worker.address, "pending") == count
    assert journal.records == 0


async def test_a_reveal_of_another_digest_than_the_contributed_one_is_refused_before_sending(
    devnet: Devnet, toolkit: Toolkit, chain: ChainClient
) -> None:
    worker, journal = worker_account(14), MemoryJournal()
    task_id, _ = await new_task(devnet, toolkit)
    sender = _sender(chain, worker, journal)
    await sender.contribute(task_id, DIGEST, _auth(task_id, worker))
    count = await chain.nonce(worker.address, "pending")

    with pytest.raises(TransactionRefused) as refused:
        await sender.reveal(task_id, "0x" + hashlib.sha256(b"not what was computed").hexdigest())

    assert refused.value.cause is ReplicateStatusCause.CANNOT_REVEAL
    assert await chain.nonce(worker.address, "pending") == count
    assert journal.records == 1  # the contribution only
    assert (await chain.contribution(task_id, worker.address)).status is ChainContributionStatus.CONTRIBUTED


async def test_each_task_is_checked_against_its_own_deal_and_an_uninitialized_one_against_none(
    devnet: Devnet, toolkit: Toolkit
) -> None:
    """One client, as in the worker, for the replicates of several deals: what it keeps of one task's deal
    (the stake it asks, the pool owner who signs) never answers for another task."""
    worker = worker_account(15)
    free_task, _ = await new_task(devnet, toolkit)  # a deal asking no stake
    price = 10**12  # a deal asking more stake than any devnet worker holds
    await toolkit.fund(account(Role.REQUESTER), price)
    await toolkit.fund(account(Role.SCHEDULER), price * 30 // 100)
    priced, _ = await _buy(devnet, toolkit, workerpool_price=price)
    priced_task = chain_task_id(priced.deal_id, 0)
    async with await ChainClient.connect(devnet.rpc_url, devnet.deployment.hub) as chain:
        sender = _sender(chain, worker, MemoryJournal())
        await sender.contribute(free_task, DIGEST, _auth(free_task, worker))  # its deal now kept
        count = await chain.nonce(worker.address, "pending")

        # Not initialized yet: no deal to keep for it, the views say so, nothing is sent.
        with pytest.raises(TransactionRefused) as not_active:
            await sender.contribute(priced_task, DIGEST, _auth(priced_task, worker))
        assert not_active.value.cause is ReplicateStatusCause.TASK_NOT_ACTIVE
        assert chain.known_deal_id(priced_task) is None

        await toolkit.initialize(priced.deal_id, 0, account(Role.SCHEDULER))
        stake = (await chain.account(worker.address)).stake
        assert stake < (await chain.deal(priced.deal_id)).worker_stake
        with pytest.raises(TransactionRefused) as refused:
            await sender.contribute(priced_task, DIGEST, _auth(priced_task, worker))

        assert refused.value.cause is ReplicateStatusCause.STAKE_TOO_LOW
        assert "simulation" not in str(refused.value)  # the priced deal's own stake, read from its view
        assert chain.known_deal_id(priced_task) == priced.deal_id
        assert chain.known_deal_id(free_task) != priced.deal_id
        assert (await chain.deal(chain.known_deal_id(free_task) or "")).worker_stake == 0
        assert await chain.nonce(worker.address, "pending") == count


# -- on a private devnet: these move the chain clock or need an unfunded worker -------------------


@pytest_asyncio.fixture(loop_scope="session")
async def private_chain(net: Devnet) -> AsyncIterator[ChainClient]:
    async with await ChainClient.connect(net.rpc_url, net.deployment.hub) as client:
        yield client


async def test_contributing_without_stake_is_refused_with_stake_too_low(
    net: Devnet, private_chain: ChainClient
) -> None:
    toolkit = Toolkit(net.w3, net.deployment)
    worker, journal = worker_account(16), MemoryJournal()  # never deposits RLC on this chain
    task_id, _ = await new_task(net, toolkit, workerpool_price=2 * 10**9)
    assert (await private_chain.task_description(task_id)).worker_stake == 600_000_000
    count = await private_chain.nonce(worker.address, "pending")

    with pytest.raises(TransactionRefused) as refused:
        await _sender(private_chain, worker, journal).contribute(task_id, DIGEST, _auth(task_id, worker))

    assert refused.value.cause is ReplicateStatusCause.STAKE_TOO_LOW
    assert await private_chain.nonce(worker.address, "pending") == count
    assert journal.records == 0
    # The contract agrees: the simulation reverts with the escrow's reason, which maps to the same cause.
    data = private_chain.encode(
        "contribute",
        to_bytes(task_id),
        to_bytes(result_hash(task_id, DIGEST)),
        to_bytes(result_seal(worker.address, task_id, DIGEST)),
        net.w3.to_checksum_address("0x" + "00" * 20),
        bytes(32),
        to_bytes(_auth(task_id, worker)),
    )
    with pytest.raises(ContractReverted) as reverted:
        await private_chain.simulate(worker.address, data, "contribute without stake")
    assert _revert_cause(TxKind.CONTRIBUTE, reverted.value.reason) is ReplicateStatusCause.STAKE_TOO_LOW
    # The estimate the sender runs is the same simulation: it reverts with the same reason.
    with pytest.raises(ContractReverted) as estimated:
        await private_chain.estimate_gas(worker.address, data, "contribute without stake")
    assert estimated.value.reason == reverted.value.reason


async def test_contributing_after_the_deadline_is_refused_with_contribution_timeout(
    net: Devnet, private_chain: ChainClient
) -> None:
    toolkit = Toolkit(net.w3, net.deployment)
    worker, journal = worker_account(17), MemoryJournal()
    task_id, _ = await new_task(net, toolkit)
    await net.anvil.increase_time(7 * DEVNET_TIMEREF + 1)
    await net.anvil.mine()
    count = await private_chain.nonce(worker.address, "pending")

    with pytest.raises(TransactionRefused) as refused:
        await _sender(private_chain, worker, journal).contribute(task_id, DIGEST, _auth(task_id, worker))

    assert refused.value.cause is ReplicateStatusCause.CONTRIBUTION_TIMEOUT
    assert await private_chain.nonce(worker.address, "pending") == count
    assert journal.records == 0


async def test_a_wallet_without_gas_money_is_refused_with_out_of_gas(
    net: Devnet, private_chain: ChainClient
) -> None:
    toolkit = Toolkit(net.w3, net.deployment)
    worker, journal = worker_account(18), MemoryJournal()
    task_id, _ = await new_task(net, toolkit)
    await net.anvil.rpc("anvil_setBalance", worker.address, hex(10**9))
    count = await private_chain.nonce(worker.address, "pending")

    with pytest.raises(TransactionRefused, match="fund the worker wallet") as refused:
        await _sender(private_chain, worker, journal).contribute(task_id, DIGEST, _auth(task_id, worker))

    assert refused.value.cause is ReplicateStatusCause.OUT_OF_GAS
    assert await private_chain.nonce(worker.address, "pending") == count
    assert journal.records == 0


def _broadcast_lines(caplog: pytest.LogCaptureFixture, task_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("broadcast") and task_id in r.getMessage()
    ]


async def test_every_broadcast_is_logged_accepted_or_refused_with_the_fees_and_the_cap(
    net: Devnet, private_chain: ChainClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worker.chain.transactions")
    toolkit = Toolkit(net.w3, net.deployment)
    worker = worker_account(19)
    accepted_task, _ = await new_task(net, toolkit)
    cap = 50 * 10**9
    sender = TransactionSender(
        private_chain, worker, MemoryJournal(), gas_policy=GasPolicy(cap=cap), poll_interval=0.05
    )
    await sender.contribute(accepted_task, DIGEST, _auth(accepted_task, worker))
    [accepted] = _broadcast_lines(caplog, accepted_task)
    assert "accepted by the node" in accepted
    assert "max fee " in accepted
    assert " tip " in accepted
    assert f"cap {cap} wei/gas" in accepted

    # A base fee above the cap: the node turns the transaction away, and the line says what was bid.
    refused_task, _ = await new_task(net, toolkit)
    await net.anvil.rpc("anvil_setNextBlockBaseFeePerGas", hex(100 * 10**9))
    low = TransactionSender(
        private_chain, worker, MemoryJournal(), gas_policy=GasPolicy(cap=10**9), poll_interval=0.05
    )
    with pytest.raises(ChainError):
        await low.contribute(refused_task, DIGEST, _auth(refused_task, worker))
    [refused] = _broadcast_lines(caplog, refused_task)
    assert "refused by the node" in refused
    assert f"max fee {10**9} wei/gas" in refused
    assert f"cap {10**9} wei/gas" in refused


# -- contributeAndFinalize: a trust-1 TDX task, the devnet's enclave key as its challenge ------------


def _tee_auth(task_id: str, worker: LocalAccount, enclave: str) -> str:
    return sign_eip191(
        authorization_hash(worker.address, task_id, enclave), bytes(account(Role.SCHEDULER).key)
    )


def _enclave_sign(task_id: str, worker: LocalAccount, digest: str, key: bytes) -> str:
    return sign_eip191(enclave_message(task_id, worker.address, digest), key)


async def test_contribute_and_finalize_completes_the_task_in_one_transaction(
    devnet: Devnet, toolkit: Toolkit, chain: ChainClient
) -> None:
    worker, journal, enclave = worker_account(16), MemoryJournal(), account(Role.ENCLAVE)
    task_id, _ = await new_task(devnet, toolkit, tag=TEE_TDX_ONLY_TAG)
    link = b'{ "storage": "ipfs", "location": "/ipfs/QmTest" }'
    count = await chain.nonce(worker.address, "pending")

    receipt = await _sender(chain, worker, journal).contribute_and_finalize(
        task_id, DIGEST, link, b"", enclave.address,
        _enclave_sign(task_id, worker, DIGEST, bytes(enclave.key)), _tee_auth(task_id, worker, enclave.address),
    )  # fmt: skip

    assert receipt.tx_hash == journal.entries[(task_id, TxKind.CONTRIBUTE_AND_FINALIZE)].tx_hash
    task = await chain.task(task_id)
    assert task.status is ChainTaskStatus.COMPLETED
    assert task.results == link
    assert (await chain.contribution(task_id, worker.address)).status is ChainContributionStatus.PROVED
    assert await chain.nonce(worker.address, "pending") == count + 1
    sent = await devnet.w3.eth.get_transaction(receipt.tx_hash)  # type: ignore[arg-type]
    # The estimate plus the hub's callback gas (iexec-worker 9.0.1), never under the Java floor.
    assert sent["gas"] >= CONTRIBUTE_GAS_FLOOR
    assert sent["input"][:4].hex() == "5facd761"

    # Asked again (a restart, say): the journal holds it, nothing is signed twice.
    again = await _sender(chain, worker, journal).contribute_and_finalize(
        task_id, DIGEST, link, b"", enclave.address,
        _enclave_sign(task_id, worker, DIGEST, bytes(enclave.key)), _tee_auth(task_id, worker, enclave.address),
    )  # fmt: skip
    assert again == receipt
    assert await chain.nonce(worker.address, "pending") == count + 1


async def test_contribute_and_finalize_of_a_trust_two_deal_is_refused_with_trust_not_1(
    devnet: Devnet, toolkit: Toolkit, chain: ChainClient
) -> None:
    worker, journal, enclave = worker_account(17), MemoryJournal(), account(Role.ENCLAVE)
    task_id, _ = await new_task(devnet, toolkit, tag=TEE_TDX_ONLY_TAG, trust=2)
    count = await chain.nonce(worker.address, "pending")

    with pytest.raises(TransactionRefused) as refused:
        await _sender(chain, worker, journal).contribute_and_finalize(
            task_id, DIGEST, b"", b"", enclave.address,
            _enclave_sign(task_id, worker, DIGEST, bytes(enclave.key)), _tee_auth(task_id, worker, enclave.address),
        )  # fmt: skip

    assert refused.value.cause is ReplicateStatusCause.TRUST_NOT_1
    assert await chain.nonce(worker.address, "pending") == count
    assert journal.records == 0
