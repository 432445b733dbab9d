"""The worker's own transactions (contribute, reveal): checked, simulated, journaled, then sent once.

Order of a send (one task and kind at a time):
1. If the journal already holds a transaction of this kind for this task, never build another:
   wait for that one (broadcasting its raw bytes again if the node lost it). A crash between
   "recorded" and "mined" therefore cannot lead to a second contribution.
2. Name a predictable failure from the views (preconditions.py), then simulate with ``eth_call``
   and estimate the gas; a revert there sends nothing and keeps the nonce.
3. Under the wallet lock: fees, nonce, local signature, ``journal.record_sent``, broadcast.
4. Outside the lock: wait for the receipt; success is the task event in its logs.

Gas limits: the estimate + 20 %, at least the fixed limits of the Java worker (contribute 500 000,
reveal 100 000), at most GAS_LIMIT_CAP. Unused gas is refunded, so the floors only cost headroom.

Seams for what comes next: ``_fees`` is the one place that prices a transaction (a replacement
with bumped fees goes there) and the ChainClient is the one place that picks the endpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt as Web3Receipt

from worker.chain.abi import TASK_CONTRIBUTE_TOPIC, TASK_REVEAL_TOPIC
from worker.chain.client import ChainClient
from worker.chain.crypto import (
    ZERO_ADDRESS,
    ZERO_BYTES32,
    authorization_hash,
    checksum,
    recover_eip191,
    result_hash,
    result_seal,
    to_bytes,
    to_hex,
)
from worker.chain.errors import ContractReverted, NonceTooLow, TransactionRefused
from worker.chain.gas import DynamicFees, Fees, GasPolicy, LegacyFees, gas_limit
from worker.chain.models import SentTx, TxKind, TxReceipt
from worker.chain.preconditions import cannot_contribute_cause, cannot_reveal_cause
from worker.errors import ChainError
from worker.replicate.status import ReplicateStatusCause

log = logging.getLogger(__name__)

CONTRIBUTE_GAS_FLOOR = 500_000
REVEAL_GAS_FLOOR = 100_000
DEFAULT_RECEIPT_TIMEOUT = 60.0  # seconds; about 12 blocks of 5 s, as the Java worker waits


class TxJournal(Protocol):
    """Durable record of what was signed, written before the broadcast."""

    async def record_sent(
        self, task_id: str, kind: TxKind, tx_hash: str, nonce: int, raw_tx: str
    ) -> None: ...

    async def sent(self, task_id: str, kind: TxKind) -> SentTx | None: ...


_REVERT_REASONS = {
    "transfer amount exceeds balance": ReplicateStatusCause.STAKE_TOO_LOW,
    "invalid-signature-format": ReplicateStatusCause.WORKERPOOL_AUTHORIZATION_NOT_FOUND,
}


def _revert_cause(kind: TxKind, reason: str | None) -> ReplicateStatusCause:
    text = (reason or "").lower()
    for needle, cause in _REVERT_REASONS.items():
        if needle in text:
            return cause
    return ReplicateStatusCause.CANNOT_REVEAL if kind is TxKind.REVEAL else ReplicateStatusCause.UNKNOWN


class TransactionSender:
    """Sends the worker's transactions from ``account`` to the hub, one nonce sequence per wallet."""

    def __init__(
        self,
        client: ChainClient,
        account: LocalAccount,
        journal: TxJournal,
        *,
        gas_policy: GasPolicy | None = None,
        receipt_timeout: float = DEFAULT_RECEIPT_TIMEOUT,
        poll_interval: float = 1.0,
        sidechain: bool = False,
    ) -> None:
        """``sidechain`` (from the scheduler's chain config) skips the wallet balance check: gas is free there."""
        self._client = client
        self._account = account
        self._journal = journal
        self._gas = gas_policy or GasPolicy()
        self._receipt_timeout = receipt_timeout
        self._poll_interval = poll_interval
        self._sidechain = sidechain
        self._wallet_lock = asyncio.Lock()
        self._nonce: int | None = None  # None: ask the node ("pending") before the next send
        self._chain_id: int | None = None
        self._task_locks: dict[tuple[str, TxKind], tuple[asyncio.Lock, int]] = {}

    @property
    def address(self) -> str:
        return str(self._account.address)

    async def contribute(
        self,
        task_id: str,
        result_digest: str,
        authorization_signature: str,
        enclave_challenge: str = ZERO_ADDRESS,
        enclave_signature: str = ZERO_BYTES32,
    ) -> TxReceipt:
        """``contribute`` with the resultHash and resultSeal of ``result_digest``.

        Standard tasks use a zero enclave challenge and 32 zero bytes of enclave signature
        (protocol.md §5.4). Raises TransactionRefused with the cause when it cannot succeed,
        ChainError (transient) when the node failed, ReceiptTimeout when not mined in time.
        """
        worker = self.address
        data = self._client.encode(
            "contribute",
            to_bytes(task_id),
            to_bytes(result_hash(task_id, result_digest)),
            to_bytes(result_seal(worker, task_id, result_digest)),
            checksum(enclave_challenge),
            to_bytes(enclave_signature),
            to_bytes(authorization_signature),
        )

        async def precheck() -> ReplicateStatusCause | None:
            cause = await cannot_contribute_cause(self._client, task_id, worker)
            if cause is None and enclave_challenge.lower() == ZERO_ADDRESS:
                cause = await self._authorization_cause(task_id, authorization_signature)
            return cause

        return await self._submit(task_id, TxKind.CONTRIBUTE, data, CONTRIBUTE_GAS_FLOOR, precheck)

    async def reveal(self, task_id: str, result_digest: str) -> TxReceipt:
        """``reveal`` of the digest behind this worker's contribution (same errors as contribute)."""
        data = self._client.encode("reveal", to_bytes(task_id), to_bytes(result_digest))

        async def precheck() -> ReplicateStatusCause | None:
            return await cannot_reveal_cause(self._client, task_id, self.address, result_digest)

        return await self._submit(task_id, TxKind.REVEAL, data, REVEAL_GAS_FLOOR, precheck)

    # -----------------------------------------------------------------------------------------

    async def _authorization_cause(self, task_id: str, signature: str) -> ReplicateStatusCause | None:
        # The contract checks the signer against deal.workerpool.owner; a mismatch would be a bare revert.
        task = await self._client.task(task_id)
        deal = await self._client.deal(task.deal_id)
        try:
            signer = recover_eip191(authorization_hash(self.address, task_id, ZERO_ADDRESS), signature)
        except ValueError:
            return ReplicateStatusCause.WORKERPOOL_AUTHORIZATION_NOT_FOUND
        if signer != deal.workerpool.owner.lower():
            return ReplicateStatusCause.WORKERPOOL_AUTHORIZATION_NOT_FOUND
        return None

    async def _submit(
        self,
        task_id: str,
        kind: TxKind,
        data: str,
        gas_floor: int,
        precheck: Callable[[], Awaitable[ReplicateStatusCause | None]],
    ) -> TxReceipt:
        # Two calls for the same task and kind run one after the other: the second finds the
        # journal entry of the first instead of racing it to the node.
        key = (task_id.lower(), kind)
        lock, users = self._task_locks.get(key, (asyncio.Lock(), 0))
        self._task_locks[key] = (lock, users + 1)
        try:
            async with lock:
                existing = await self._journal.sent(task_id, kind)
                if existing is None:
                    existing = await self._sign_and_send(task_id, kind, data, gas_floor, precheck)
                else:
                    log.info(
                        "%s of task %s already sent as %s: following it",
                        kind.value,
                        task_id,
                        existing.tx_hash,
                    )
                    await self._ensure_broadcast(existing)
        finally:
            lock, users = self._task_locks[key]
            if users == 1:
                del self._task_locks[key]
            else:
                self._task_locks[key] = (lock, users - 1)
        return await self._receipt(existing)

    async def _sign_and_send(
        self,
        task_id: str,
        kind: TxKind,
        data: str,
        gas_floor: int,
        precheck: Callable[[], Awaitable[ReplicateStatusCause | None]],
    ) -> SentTx:
        what = f"{kind.value.lower()} of task {task_id}"
        cause = await precheck()
        if cause is ReplicateStatusCause.CHAIN_UNREACHABLE:
            # Not a verdict on the task: the caller retries, or reports CHAIN_UNREACHABLE itself.
            raise ChainError(
                f"{what}: the chain node did not answer the pre-checks on {self._client.rpc_url}"
            )
        if cause is not None:
            raise TransactionRefused(
                f"{what}: not sent, {cause.value}", cause=cause, task_id=task_id, sent=False
            )
        try:
            await self._client.simulate(self.address, data, what)
            estimate = await self._client.estimate_gas(self.address, data, what)
        except ContractReverted as exc:
            cause = _revert_cause(kind, exc.reason)
            raise TransactionRefused(
                f"{what}: not sent, the simulation reverted ({exc.reason or 'no reason given'}) → {cause.value}",
                cause=cause,
                task_id=task_id,
                sent=False,
            ) from exc
        try:
            limit = gas_limit(estimate, gas_floor)
        except ValueError as exc:
            raise TransactionRefused(
                f"{what}: not sent, {exc}", cause=ReplicateStatusCause.UNKNOWN, task_id=task_id, sent=False
            ) from exc

        async with self._wallet_lock:
            fees = await self._fees()
            balance = 0 if self._sidechain else await self._client.balance(self.address)
            if not self._sidechain and balance < limit * _max_price(fees):
                raise TransactionRefused(
                    f"{what}: not sent, wallet {self.address} holds {balance} wei, "
                    f"{limit * _max_price(fees)} needed; fund the worker wallet",
                    cause=ReplicateStatusCause.OUT_OF_GAS,
                    task_id=task_id,
                    sent=False,
                )
            try:
                nonce = await self._next_nonce()
                tx = await self._build(data, limit, fees, nonce)
                signed = self._account.sign_transaction(tx)
                sent = SentTx(
                    task_id=task_id,
                    kind=kind,
                    tx_hash=to_hex(bytes(signed.hash)),
                    nonce=nonce,
                    raw_tx=to_hex(bytes(signed.raw_transaction)),
                )
                await self._journal.record_sent(task_id, kind, sent.tx_hash, nonce, sent.raw_tx)
                await self._client.broadcast(sent.raw_tx, sent.tx_hash)
            except BaseException:
                # The node's count is the truth after any doubt (a broadcast may have half-happened).
                self._nonce = None
                raise
            self._nonce = nonce + 1
        log.info("%s sent: tx %s, nonce %d, gas limit %d", what, sent.tx_hash, nonce, limit)
        return sent

    async def _ensure_broadcast(self, sent: SentTx) -> None:
        if await self._client.transaction_known(sent.tx_hash):
            return
        try:
            await self._client.broadcast(sent.raw_tx, sent.tx_hash)
        except NonceTooLow as exc:
            # Another transaction took that nonce: this one can never be mined, and a new one must
            # not be sent blindly (the first could still surface through another node).
            raise TransactionRefused(
                f"{sent.kind.value.lower()} of task {sent.task_id}: recorded tx {sent.tx_hash} (nonce "
                f"{sent.nonce}) was dropped and its nonce reused; check the task on chain",
                cause=ReplicateStatusCause.CHAIN_RECEIPT_NOT_VALID,
                task_id=sent.task_id,
                sent=True,
            ) from exc

    async def _receipt(self, sent: SentTx) -> TxReceipt:
        receipt = await self._client.wait_for_receipt(
            sent.tx_hash, wait=self._receipt_timeout, poll_interval=self._poll_interval
        )
        topic = TASK_CONTRIBUTE_TOPIC if sent.kind is TxKind.CONTRIBUTE else TASK_REVEAL_TOPIC
        found = task_event(receipt, topic, sent.task_id)
        if found is None:
            raise TransactionRefused(
                f"{sent.kind.value.lower()} of task {sent.task_id}: tx {sent.tx_hash} mined in block "
                f"{receipt['blockNumber']} without its task event (status {receipt['status']})",
                cause=ReplicateStatusCause.CHAIN_RECEIPT_NOT_VALID,
                task_id=sent.task_id,
                sent=True,
            )
        return found

    async def _next_nonce(self) -> int:
        if self._nonce is None:
            self._nonce = await self._client.nonce(self.address, "pending")
        return self._nonce

    async def _fees(self) -> Fees:
        """The one place a transaction is priced, from the latest block and the gas policy."""
        block = await self._client.latest_block()
        if block.base_fee_per_gas is None:
            return self._gas.legacy(await self._client.gas_price())
        return self._gas.dynamic(block.base_fee_per_gas, await self._client.max_priority_fee())

    async def _build(self, data: str, limit: int, fees: Fees, nonce: int) -> dict[str, Any]:
        if self._chain_id is None:
            self._chain_id = await self._client.chain_id()
        tx: dict[str, Any] = {
            "chainId": self._chain_id,
            "nonce": nonce,
            "to": self._client.hub_address,
            "value": 0,
            "data": data,
            "gas": limit,
        }
        if isinstance(fees, DynamicFees):
            tx["maxFeePerGas"] = fees.max_fee_per_gas
            tx["maxPriorityFeePerGas"] = fees.max_priority_fee_per_gas
        else:
            tx["gasPrice"] = fees.gas_price
        return tx


def _max_price(fees: Fees) -> int:
    return fees.gas_price if isinstance(fees, LegacyFees) else fees.max_fee_per_gas


def task_event(receipt: Web3Receipt, topic: str, task_id: str) -> TxReceipt | None:
    """The receipt's log with ``topics[0] == topic`` and ``topics[1] == task_id``, as a TxReceipt."""
    if receipt["status"] != 1:
        return None
    for entry in receipt["logs"]:
        topics = [to_hex(bytes(t)).lower() for t in entry["topics"]]
        if len(topics) >= 2 and topics[0] == topic and topics[1] == task_id.lower():
            return TxReceipt(
                block_number=int(entry["blockNumber"]), tx_hash=to_hex(bytes(entry["transactionHash"]))
            )
    return None
