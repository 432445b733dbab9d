"""TransactionSender's receipt depth and its answer to a reorganisation, on a real anvil with PoCo (a devnet of
this module's own, since the tests reorganise it), with an in-memory journal fake.

anvil automines: a block comes only with a transaction, so the tests mine the confirmations themselves, and
``anvil_reorg`` replaces the last blocks by empty ones, dropping their transactions as a real reorganisation
does when the other branch never saw them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr

from devnet.accounts import Role, account
from devnet.contracts import Devnet
from devnet.toolkit import Toolkit
from tests.support import until
from tests.support.chain import MemoryJournal, RecordingObserver, new_task, worker_account
from worker.chain.abi import TASK_CONTRIBUTE_TOPIC
from worker.chain.client import ChainClient
from worker.chain.models import TxKind
from worker.chain.transactions import TransactionSender
from worker.protocol.crypto import authorization_hash, sign_eip191
from worker.protocol.errors import ChainError

pytestmark = pytest.mark.e2e

DIGEST = "0x" + hashlib.sha256(b"deep enough").hexdigest()
CONFIRMATIONS = 3


@pytest_asyncio.fixture(loop_scope="session")
async def observed(net: Devnet) -> AsyncIterator[tuple[ChainClient, RecordingObserver]]:
    observer = RecordingObserver()
    async with await ChainClient.connect(net.rpc_url, net.deployment.hub, observer=observer) as client:
        yield client, observer


def _auth(task_id: str, worker: LocalAccount) -> str:
    return sign_eip191(authorization_hash(worker.address, task_id), bytes(account(Role.SCHEDULER).key))


def _sender(chain: ChainClient, worker: LocalAccount, journal: MemoryJournal) -> TransactionSender:
    return TransactionSender(
        chain, worker, journal, receipt_timeout=60, poll_interval=0.05, confirmations=CONFIRMATIONS
    )


async def _contributed(net: Devnet, task_id: str, worker: str) -> bool:
    return await _contributions(net, task_id, worker) > 0


async def _contributions(net: Devnet, task_id: str, worker: str) -> int:
    logs = await net.w3.eth.get_logs({
        "fromBlock": 0, "toBlock": "latest", "address": net.w3.to_checksum_address(net.deployment.hub),
        "topics": [TASK_CONTRIBUTE_TOPIC, task_id, "0x" + worker.lower().removeprefix("0x").rjust(64, "0")],
    })  # fmt: skip
    return len(logs)


def _logged(caplog: pytest.LogCaptureFixture, needle: str) -> bool:
    return any(needle in record.getMessage() for record in caplog.records)


async def test_a_receipt_counts_only_once_its_block_is_deep_enough(
    net: Devnet, observed: tuple[ChainClient, RecordingObserver], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worker.chain.transactions")
    chain, _ = observed
    worker, journal = worker_account(12), MemoryJournal()
    task_id, _ = await new_task(net, Toolkit(net.w3, net.deployment))
    sending = asyncio.create_task(
        _sender(chain, worker, journal).contribute(task_id, DIGEST, _auth(task_id, worker))
    )
    await until(
        lambda: _logged(caplog, f"waiting for {CONFIRMATIONS} confirmations"),
        within=60,
        what="the mined contribution",
    )
    mined = await net.w3.eth.get_transaction_receipt(journal.entries[(task_id, TxKind.CONTRIBUTE)].tx_hash)  # type: ignore[arg-type]
    assert await net.w3.eth.block_number == mined["blockNumber"]
    assert not sending.done()  # mined, but its block is the only one: one confirmation of three

    await net.anvil.mine(CONFIRMATIONS - 1)
    receipt = await asyncio.wait_for(sending, 60)

    assert receipt.block_number == mined["blockNumber"]
    assert journal.records == 1


async def test_a_contribution_dropped_by_a_reorganisation_is_sent_again_with_the_same_bytes(
    net: Devnet, observed: tuple[ChainClient, RecordingObserver], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worker.chain.transactions")
    chain, observer = observed
    worker, journal = worker_account(13), MemoryJournal()
    task_id, _ = await new_task(net, Toolkit(net.w3, net.deployment))
    nonce = await chain.nonce(worker.address, "latest")
    sending = asyncio.create_task(
        _sender(chain, worker, journal).contribute(task_id, DIGEST, _auth(task_id, worker))
    )
    await until(
        lambda: _logged(caplog, f"waiting for {CONFIRMATIONS} confirmations"),
        within=60,
        what="the mined contribution",
    )
    sent = journal.entries[(task_id, TxKind.CONTRIBUTE)]
    first = await net.w3.eth.get_transaction_receipt(sent.tx_hash)  # type: ignore[arg-type]

    await net.anvil.rpc("anvil_reorg", 1, [])  # the block holding the contribution leaves the chain
    assert await _contributions(net, task_id, worker.address) == 0
    await until(lambda: _logged(caplog, "re-sending the same signed tx"), within=60, what="the re-send")
    await until(
        lambda: _contributed(net, task_id, worker.address), within=60, what="the contribution mined again"
    )
    await net.anvil.mine(CONFIRMATIONS - 1)
    receipt = await asyncio.wait_for(sending, 60)

    again = await net.w3.eth.get_transaction_receipt(sent.tx_hash)  # type: ignore[arg-type]
    assert receipt.tx_hash == sent.tx_hash  # the journaled bytes, not a new signature
    assert receipt.block_number == again["blockNumber"]
    assert again["blockHash"] != first["blockHash"]
    assert journal.records == 1
    assert await _contributions(net, task_id, worker.address) == 1
    assert await chain.nonce(worker.address, "latest") == nonce + 1
    assert ("CONTRIBUTE", "resent") in observer.outcomes


async def test_a_dropped_contribution_whose_nonce_another_transaction_took_is_signed_anew_once(
    net: Devnet, observed: tuple[ChainClient, RecordingObserver], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worker.chain.transactions")
    chain, _ = observed
    worker, journal = worker_account(14), MemoryJournal()
    task_id, _ = await new_task(net, Toolkit(net.w3, net.deployment))
    nonce = await chain.nonce(worker.address, "latest")
    sending = asyncio.create_task(
        _sender(chain, worker, journal).contribute(task_id, DIGEST, _auth(task_id, worker))
    )
    await until(
        lambda: _logged(caplog, f"waiting for {CONFIRMATIONS} confirmations"),
        within=60,
        what="the mined contribution",
    )
    # The winning branch holds another transaction of the wallet at the contribution's nonce.
    other = worker.sign_transaction({
        "chainId": await net.w3.eth.chain_id, "nonce": nonce, "to": HexStr("0x" + "11" * 20), "value": 1, "gas": 21_000,
        "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9,
    })  # fmt: skip
    await net.anvil.rpc("anvil_reorg", 1, [["0x" + bytes(other.raw_transaction).hex(), 0]])

    with pytest.raises(ChainError, match=f"nonce {nonce} is taken"):
        await asyncio.wait_for(sending, 60)
    assert await _contributions(net, task_id, worker.address) == 0

    again = asyncio.create_task(
        _sender(chain, worker, journal).contribute(task_id, DIGEST, _auth(task_id, worker))
    )
    await until(lambda: _logged(caplog, "sending the call again"), within=60, what="the call signed anew")
    await until(
        lambda: _contributed(net, task_id, worker.address), within=60, what="the new contribution mined"
    )
    await net.anvil.mine(CONFIRMATIONS - 1)
    receipt = await asyncio.wait_for(again, 60)

    assert receipt.tx_hash == journal.entries[(task_id, TxKind.CONTRIBUTE)].tx_hash
    assert (journal.records, journal.replacements) == (1, 1)
    assert await _contributions(net, task_id, worker.address) == 1
    assert await chain.nonce(worker.address, "latest") == nonce + 2
