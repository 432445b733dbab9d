"""Transaction manager on real anvil + PoCo: concurrent nonces, replacement of unmined transactions, the gas
cap, and pre-check refusals that spend no gas. The journal is the in-memory fake of the TxJournal Protocol.

Each test of the private devnet moves its mining mode or clock and puts it back; the fee rules are plain unit tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from hexbytes import HexBytes

from devnet.accounts import Role, account
from devnet.contracts import DEVNET_TIMEREF, Devnet
from devnet.toolkit import Toolkit
from tests.support import until
from tests.support.chain import MemoryJournal, RecordingObserver, new_task, new_tasks, worker_account
from worker.chain.client import ChainClient
from worker.chain.errors import TransactionRefused
from worker.chain.gas import DynamicFees, GasPolicy, LegacyFees
from worker.chain.transactions import TransactionSender, bump, bumped
from worker.protocol.crypto import authorization_hash, sign_eip191
from worker.protocol.errors import ChainError
from worker.protocol.status import ChainContributionStatus, ReplicateStatusCause

DIGEST = "0x" + hashlib.sha256(b"txmanager").hexdigest()
GWEI = 10**9


def _auth(task_id: str, worker: LocalAccount) -> str:
    return sign_eip191(authorization_hash(worker.address, task_id), bytes(account(Role.SCHEDULER).key))


# -- fee rules -----------------------------------------------------------------------------------


def test_a_replacement_raises_both_fee_fields_by_at_least_ten_percent() -> None:
    old = DynamicFees(max_fee_per_gas=10 * GWEI, max_priority_fee_per_gas=GWEI)
    new = bump(old, DynamicFees(5 * GWEI, 0), cap=100 * GWEI)
    assert new == DynamicFees(11 * GWEI, GWEI * 11 // 10)
    assert bumped(0) == 1  # never equal
    assert bumped(15) == 17  # rounded up


def test_a_replacement_follows_the_network_when_it_went_up_more() -> None:
    new = bump(LegacyFees(10 * GWEI), LegacyFees(30 * GWEI), cap=100 * GWEI)
    assert new == LegacyFees(30 * GWEI)


def test_a_replacement_never_goes_above_the_cap() -> None:
    assert bump(DynamicFees(19 * GWEI, GWEI), DynamicFees(50 * GWEI, 2 * GWEI), cap=21 * GWEI) == DynamicFees(
        21 * GWEI, 2 * GWEI
    )
    # Already at the cap: nothing a node would accept as a replacement.
    assert bump(DynamicFees(21 * GWEI, GWEI), DynamicFees(50 * GWEI, GWEI), cap=21 * GWEI) is None
    assert bump(LegacyFees(21 * GWEI), LegacyFees(50 * GWEI), cap=22 * GWEI) is None


def test_the_network_price_above_the_cap_gives_the_cap() -> None:
    policy = GasPolicy(multiplier=1.3, cap=22 * GWEI)
    assert policy.legacy(100 * GWEI) == LegacyFees(22 * GWEI)
    assert policy.dynamic(100 * GWEI, 2 * GWEI).max_fee_per_gas == 22 * GWEI


# -- on a private devnet -------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def chain(net: Devnet) -> AsyncIterator[ChainClient]:
    async with await ChainClient.connect(net.rpc_url, net.deployment.hub) as client:
        yield client


@pytest.mark.e2e
async def test_twenty_concurrent_contributions_share_blocks_without_a_nonce_error(
    net: Devnet, chain: ChainClient
) -> None:
    toolkit = Toolkit(net.w3, net.deployment)
    worker, journal, seen = worker_account(19), MemoryJournal(), RecordingObserver()
    chain.observer = seen
    task_ids = await new_tasks(net, toolkit, 20)
    start = await chain.nonce(worker.address, "latest")
    sender = TransactionSender(chain, worker, journal, receipt_timeout=60, poll_interval=0.1)
    await net.anvil.set_automine(False)
    await net.anvil.set_interval_mining(1)
    try:
        receipts = await asyncio.gather(
            *(sender.contribute(task_id, DIGEST, _auth(task_id, worker)) for task_id in task_ids)
        )
    finally:
        await net.anvil.set_interval_mining(0)
        await net.anvil.set_automine(True)

    assert len({r.tx_hash for r in receipts}) == 20
    assert len({r.block_number for r in receipts}) < 20  # several contributions per block
    statuses = [(await chain.contribution(t, worker.address)).status for t in task_ids]
    assert statuses == [ChainContributionStatus.CONTRIBUTED] * 20
    assert await chain.nonce(worker.address, "latest") == start + 20
    assert sorted(e.nonce for e in journal.entries.values()) == list(range(start, start + 20))
    assert seen.outcomes.count(("CONTRIBUTE", "mined")) == 20
    assert journal.replacements == 0


@pytest.mark.e2e
async def test_a_transaction_left_unmined_is_replaced_then_mined(net: Devnet, chain: ChainClient) -> None:
    toolkit = Toolkit(net.w3, net.deployment)
    worker, journal, seen = worker_account(18), MemoryJournal(), RecordingObserver()
    chain.observer = seen
    (task_id,) = await new_tasks(net, toolkit, 1)
    start = await chain.nonce(worker.address, "latest")
    policy = GasPolicy(cap=50 * GWEI)
    sender = TransactionSender(
        chain, worker, journal, gas_policy=policy, receipt_timeout=60, replace_after=0.3, poll_interval=0.05
    )
    await net.anvil.set_automine(False)
    try:
        sending = asyncio.create_task(sender.contribute(task_id, DIGEST, _auth(task_id, worker)))
        await until(lambda: seen.replacements >= 2, within=20, what="two replacements broadcast")
        await net.anvil.mine()
        receipt = await asyncio.wait_for(sending, 30)
    finally:
        await net.anvil.set_automine(True)

    # The node forgets replaced versions: read them from the signed bytes the journal kept.
    versions = [TypedTransaction.from_bytes(HexBytes(raw)).as_dict() for raw in journal.raw]
    assert {v["nonce"] for v in versions} == {start}  # one nonce, several prices
    fees = [v["maxFeePerGas"] for v in versions]
    tips = [v["maxPriorityFeePerGas"] for v in versions]
    for before, after in itertools.pairwise(fees):
        assert after >= bumped(before)
    for before, after in itertools.pairwise(tips):
        assert after >= bumped(before)
    assert max(fees) <= policy.cap
    assert receipt.tx_hash in journal.hashes
    assert (await chain.contribution(task_id, worker.address)).status is ChainContributionStatus.CONTRIBUTED
    assert await chain.nonce(worker.address, "latest") == start + 1
    assert seen.replacements >= 2
    assert [p for _, p in seen.prices] == fees[: len(seen.prices)]  # the price of each version is a metric


@pytest.mark.e2e
async def test_with_the_network_price_above_the_cap_the_cap_is_paid(net: Devnet, chain: ChainClient) -> None:
    toolkit = Toolkit(net.w3, net.deployment)
    worker, journal = worker_account(17), MemoryJournal()
    (task_id,) = await new_tasks(net, toolkit, 1)
    cap = 2 * GWEI
    sender = TransactionSender(
        chain, worker, journal, gas_policy=GasPolicy(cap=cap), replace_after=0.2, poll_interval=0.05
    )
    await net.anvil.rpc("anvil_setNextBlockBaseFeePerGas", hex(20 * GWEI))
    await net.anvil.mine()
    assert (await chain.latest_block()).base_fee_per_gas == 20 * GWEI
    # anvil refuses a fee cap under the base fee; the worker keeps offering the same signed transaction
    # (as TaskWork retries a transient error) while empty blocks lower the base fee by 12.5 % each.
    receipt = None
    for _ in range(40):
        try:
            receipt = await sender.contribute(task_id, DIGEST, _auth(task_id, worker))
            break
        except ChainError:
            await net.anvil.mine()
    assert receipt is not None, "the base fee never fell under the cap"

    mined = await net.w3.eth.get_transaction(receipt.tx_hash)  # type: ignore[arg-type]
    assert mined["maxFeePerGas"] == cap
    assert journal.records == 1  # signed once, at the cap
    assert journal.replacements == 0  # at the cap there is no higher price to offer
    assert (await chain.contribution(task_id, worker.address)).status is ChainContributionStatus.CONTRIBUTED


@pytest.mark.e2e
async def test_each_precheck_failure_has_its_cause_and_spends_no_gas(net: Devnet, chain: ChainClient) -> None:
    toolkit = Toolkit(net.w3, net.deployment)
    worker = worker_account(16)
    ready, done, late_reveal = await new_tasks(net, toolkit, 3)
    (replicated,) = await new_tasks(net, toolkit, 1, trust=3)  # one contribution is no consensus
    # A contribution made beforehand, from another journal, for "already set" and the reveal timeout.
    await TransactionSender(chain, worker, MemoryJournal(), poll_interval=0.05).contribute(
        done, DIGEST, _auth(done, worker)
    )
    await TransactionSender(chain, worker, MemoryJournal(), poll_interval=0.05).contribute(
        late_reveal, DIGEST, _auth(late_reveal, worker)
    )
    await TransactionSender(chain, worker, MemoryJournal(), poll_interval=0.05).contribute(
        replicated, DIGEST, _auth(replicated, worker)
    )
    staked_task, _ = await new_task(net, toolkit, workerpool_price=2 * 10**9)  # worker 16 has no RLC here
    uninitialized = "0x" + "ab" * 32
    forged = sign_eip191(authorization_hash(worker.address, ready), bytes(account(Role.ANYONE).key))

    async def refusal(call: str, task_id: str, signature: str | None = None) -> ReplicateStatusCause:
        journal = MemoryJournal()
        sender = TransactionSender(chain, worker, journal, poll_interval=0.05)
        balance, nonce = await chain.balance(worker.address), await chain.nonce(worker.address, "pending")
        if call == "contribute":
            send = sender.contribute(task_id, DIGEST, signature or _auth(task_id, worker))
        else:
            send = sender.reveal(task_id, "0x" + "00" * 32 if call == "reveal-wrong" else DIGEST)
        with pytest.raises(TransactionRefused) as refused:
            await send
        assert not refused.value.sent
        assert journal.records == 0
        assert await chain.balance(worker.address) == balance  # not one wei of gas
        assert await chain.nonce(worker.address, "pending") == nonce
        return refused.value.cause

    C = ReplicateStatusCause
    assert await refusal("contribute", staked_task) is C.STAKE_TOO_LOW
    assert await refusal("contribute", uninitialized) is C.TASK_NOT_ACTIVE
    assert await refusal("contribute", ready, forged) is C.WORKERPOOL_AUTHORIZATION_NOT_FOUND
    assert await refusal("reveal", ready) is C.CANNOT_REVEAL  # no consensus yet
    assert await refusal("reveal-wrong", done) is C.CANNOT_REVEAL
    assert await refusal("contribute", replicated) is C.CONTRIBUTION_ALREADY_SET
    assert await refusal("contribute", done) is C.TASK_NOT_ACTIVE  # consensus reached: REVEALING
    await net.anvil.increase_time(2 * DEVNET_TIMEREF + 1)
    await net.anvil.mine()
    assert await refusal("reveal", late_reveal) is C.REVEAL_TIMEOUT
    await net.anvil.increase_time(7 * DEVNET_TIMEREF + 1)
    await net.anvil.mine()
    assert await refusal("contribute", ready) is C.CONTRIBUTION_TIMEOUT
    await net.anvil.rpc("anvil_setBalance", worker.address, hex(10**9))
    fresh = await new_task(net, toolkit)
    assert await refusal("contribute", fresh[0]) is C.OUT_OF_GAS
