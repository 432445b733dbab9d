"""The worker's own transactions (contribute, reveal, contributeAndFinalize): checked, simulated, journaled, sent once, replaced.

Order of a send (one task and kind at a time):
1. If the journal already holds a transaction of this kind for this task, never build another:
   follow that one (broadcasting its raw bytes again if the node lost it). A crash between
   "recorded" and "mined" therefore cannot lead to a second contribution.
2. At once: the task views, the latest block, the fee data and the wallet balance in one JSON-RPC
   batch (``ChainClient.task_views``), and ``eth_estimateGas``, which is also the simulation: it
   runs the call against the latest state and reverts, with the contract's reason, where the call
   would. The deal (worker stake, workerpool owner) is read once per task and kept. A failure
   predicted by the views is named from them (preconditions.py), else a revert of the estimate is;
   either way nothing is sent and the nonce is kept.
3. Under the wallet lock: nonce, local signature, ``journal.record_sent``, broadcast. The nonce is
   counted locally and read again from the node ("pending") after any doubt. The fees are those of
   the block the views were read at.
4. Outside the lock: poll for the receipt. A transaction not mined within ``replace_after`` seconds
   is replaced: same nonce, same call, both fee fields raised by at least 10 % (what nodes demand
   of a replacement) and never above the gas price cap; the journal then holds the replacement.
   A receipt of any of the versions counts, since only one of them can ever be mined.
5. A receipt counts once its block is ``confirmations`` deep (the receipt's own block is the first) and
   still on the chain. A version seen mined that disappears (a reorganisation dropped its block), or a
   node that holds no version at all, gets the journaled bytes broadcast again: same nonce, same
   signature, so it can never become a second call. Each re-send is logged and counted.
6. Success is the task event in the receipt's logs.

A recorded transaction whose nonce was taken by another one (a node restarted without its pool,
say) is looked for on chain by its task event; when it is not there, it can never be mined, and
only then is the call signed again with a fresh nonce.

Gas limits: the estimate + 20 %, at least the fixed limits of the Java worker (contribute 500 000,
reveal 100 000), at most GAS_LIMIT_CAP. Unused gas is refunded, so the floors only cost headroom.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt as Web3Receipt

from worker.chain.abi import TASK_CONTRIBUTE_TOPIC, TASK_FINALIZE_TOPIC, TASK_REVEAL_TOPIC
from worker.chain.authorization import signer_of
from worker.chain.client import ChainClient
from worker.chain.errors import ContractReverted, NonceTooLow, ReceiptTimeout, TransactionRefused
from worker.chain.fees import current_fees, fees_for
from worker.chain.gas import DynamicFees, Fees, GasPolicy, LegacyFees, gas_limit
from worker.chain.models import ChainDeal, SentTx, TaskViews, TxKind, TxReceipt
from worker.chain.preconditions import contribute_cause, reveal_cause
from worker.protocol.crypto import (
    ZERO_ADDRESS,
    ZERO_BYTES32,
    authorization_hash,
    checksum,
    result_hash,
    result_seal,
    to_bytes,
    to_hex,
)
from worker.protocol.errors import ChainError
from worker.protocol.status import ReplicateStatusCause

log = logging.getLogger(__name__)

CONTRIBUTE_GAS_FLOOR = 500_000
CONTRIBUTE_AND_FINALIZE_GAS_FLOOR = 500_000
REVEAL_GAS_FLOOR = 100_000
DEFAULT_RECEIPT_TIMEOUT = 60.0  # seconds; about 12 blocks of 5 s, as the Java worker waits
DEFAULT_REPLACE_AFTER = 30.0  # seconds a transaction may stay unmined before it is replaced
EVENT_LOOKBACK_BLOCKS = 50_000  # how far back a recorded transaction's task event is looked for
_DEAD = object()


class TxJournal(Protocol):
    """Durable record of what was signed, written before the broadcast."""

    async def record_sent(
        self, task_id: str, kind: TxKind, tx_hash: str, nonce: int, raw_tx: str
    ) -> None: ...

    async def replace_sent(
        self, task_id: str, kind: TxKind, tx_hash: str, nonce: int, raw_tx: str
    ) -> None: ...

    async def sent(self, task_id: str, kind: TxKind) -> SentTx | None: ...


_REVERT_REASONS = {
    "transfer amount exceeds balance": ReplicateStatusCause.STAKE_TOO_LOW,
    "invalid-signature-format": ReplicateStatusCause.WORKERPOOL_AUTHORIZATION_NOT_FOUND,
}


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Checks:
    """What a kind of transaction reads before it is sent, and how it names a failure from that.

    ``stake``: read the worker's hub account too; ``deal``: the cause needs the task's deal;
    ``cause``: the reason the call would fail, from the views and the deal, or None.
    """

    stake: bool
    deal: bool
    cause: Callable[[TaskViews, ChainDeal | None], ReplicateStatusCause | None]


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
        replace_after: float = DEFAULT_REPLACE_AFTER,
        poll_interval: float = 1.0,
        sidechain: bool = False,
        confirmations: int = 1,
    ) -> None:
        """``sidechain`` (from the scheduler's chain config) skips the wallet balance check: gas is free there.

        ``receipt_timeout`` bounds one wait for a receipt (a later call follows the same transaction);
        ``replace_after`` (0: never) is how long a version may stay unmined before it is replaced;
        ``confirmations`` is how deep its block must be, the receipt's own block counting as the first (1:
        as soon as mined; the worker's setting IEXEC_WORKER_TX_CONFIRMATIONS decides).
        """
        self._client = client
        self._account = account
        self._journal = journal
        self._gas = gas_policy or GasPolicy()
        self._receipt_timeout = receipt_timeout
        self._replace_after = replace_after
        self._poll_interval = poll_interval
        self._sidechain = sidechain
        if confirmations < 1:
            raise ValueError("confirmations: at least 1, the receipt's own block")
        self._confirmations = confirmations
        self._wallet_lock = asyncio.Lock()
        self._nonce: int | None = None  # None: ask the node ("pending") before the next send
        self._chain_id: int | None = None
        self._legacy = False  # blocks without a base fee: the fee question is eth_gasPrice
        self._task_locks: dict[tuple[str, TxKind], tuple[asyncio.Lock, int]] = {}
        # Every version (hash) of the in-flight transaction of a (task, kind), oldest first, and the
        # unsigned fields of the newest: what a replacement and the receipt wait need.
        self._versions: dict[tuple[str, TxKind], list[str]] = {}
        self._unsigned: dict[tuple[str, TxKind], dict[str, Any]] = {}

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
        (iexec-worker ``ContributionService``, iexec-core ``SmsService``). Raises TransactionRefused
        with the cause when it cannot succeed, ChainError (transient) when the node failed,
        ReceiptTimeout when not mined in time.
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

        def cause(views: TaskViews, deal: ChainDeal | None) -> ReplicateStatusCause | None:
            assert views.account is not None  # asked for by the checks below
            assert deal is not None
            found = contribute_cause(
                views.task, views.contribution, worker, views.block.timestamp, stake=(views.account, deal)
            )
            if found is None and enclave_challenge.lower() == ZERO_ADDRESS:
                found = self._authorization_cause(task_id, authorization_signature, deal)
            return found

        checks = _Checks(stake=True, deal=True, cause=cause)
        return await self._submit(task_id, TxKind.CONTRIBUTE, data, CONTRIBUTE_GAS_FLOOR, checks)

    async def contribute_and_finalize(
        self,
        task_id: str,
        result_digest: str,
        results: bytes,
        results_callback: bytes,
        enclave_challenge: str,
        enclave_signature: str,
        authorization_signature: str,
    ) -> TxReceipt:
        """``contributeAndFinalize`` of a trust-1 TEE task: contribution, consensus, reveal and finalize at once.

        Sent once, as ``contribute`` is (journal kind CONTRIBUTE_AND_FINALIZE). Refused before sending
        when the deal's trust is not 1 (TRUST_NOT_1) or someone already contributed
        (TASK_ALREADY_CONTRIBUTED), iexec-worker ``getCannotContributeAndFinalizeStatusCause``; no stake
        is locked, so none is checked. The gas limit adds the hub's ``callbackgas()`` to the estimate, as
        the callback runs inside this transaction. Success is ``TaskFinalize`` in the receipt.
        """
        worker = self.address
        data = self._client.encode(
            "contributeAndFinalize",
            to_bytes(task_id),
            to_bytes(result_digest),
            results,
            results_callback,
            checksum(enclave_challenge),
            to_bytes(enclave_signature),
            to_bytes(authorization_signature),
        )

        def cause(views: TaskViews, deal: ChainDeal | None) -> ReplicateStatusCause | None:
            assert deal is not None  # asked for by the checks below
            if deal.trust != 1:
                return ReplicateStatusCause.TRUST_NOT_1
            if views.task.contributors:
                return ReplicateStatusCause.TASK_ALREADY_CONTRIBUTED
            return contribute_cause(views.task, views.contribution, worker, views.block.timestamp)

        return await self._submit(
            task_id,
            TxKind.CONTRIBUTE_AND_FINALIZE,
            data,
            CONTRIBUTE_AND_FINALIZE_GAS_FLOOR,
            _Checks(stake=False, deal=True, cause=cause),
            extra_gas=self._client.callbackgas,
        )

    async def reveal(self, task_id: str, result_digest: str) -> TxReceipt:
        """``reveal`` of the digest behind this worker's contribution (same errors as contribute)."""
        data = self._client.encode("reveal", to_bytes(task_id), to_bytes(result_digest))

        def cause(views: TaskViews, _deal: ChainDeal | None) -> ReplicateStatusCause | None:
            return reveal_cause(
                views.task, views.contribution, self.address, result_digest, views.block.timestamp
            )

        checks = _Checks(stake=False, deal=False, cause=cause)
        return await self._submit(task_id, TxKind.REVEAL, data, REVEAL_GAS_FLOOR, checks)

    # -----------------------------------------------------------------------------------------

    def _authorization_cause(
        self, task_id: str, signature: str, deal: ChainDeal
    ) -> ReplicateStatusCause | None:
        # The contract checks the signer against deal.workerpool.owner; a mismatch would be a bare revert.
        try:
            signer = signer_of(authorization_hash(self.address, task_id, ZERO_ADDRESS), signature)
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
        checks: _Checks,
        *,
        extra_gas: Callable[[], Awaitable[int]] | None = None,
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
                    existing = await self._sign_and_send(
                        task_id, kind, data, gas_floor, checks, extra_gas=extra_gas
                    )
                else:
                    log.info(
                        "%s of task %s already sent as %s: following it",
                        kind.value,
                        task_id,
                        existing.tx_hash,
                    )
                    found = await self._ensure_broadcast(existing)
                    if found is _DEAD:
                        existing = await self._sign_and_send(
                            task_id, kind, data, gas_floor, checks, replacing=existing, extra_gas=extra_gas
                        )
                    elif isinstance(found, TxReceipt):
                        return found
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
        checks: _Checks,
        *,
        replacing: SentTx | None = None,
        extra_gas: Callable[[], Awaitable[int]] | None = None,
    ) -> SentTx:
        what = f"{kind.value.lower()} of task {task_id}"
        views, estimate = await self._read(task_id, kind, data, checks, extra_gas)
        try:
            limit = gas_limit(estimate, gas_floor)
        except ValueError as exc:
            self._client.observer.transaction(kind.value, "refused")
            raise TransactionRefused(
                f"{what}: not sent, {exc}", cause=ReplicateStatusCause.UNKNOWN, task_id=task_id, sent=False
            ) from exc
        fees = await self._fees_at(views)
        if not self._sidechain and (balance := views.balance or 0) < limit * _max_price(fees):
            self._client.observer.transaction(kind.value, "refused")
            raise TransactionRefused(
                f"{what}: not sent, wallet {self.address} holds {balance} wei, "
                f"{limit * _max_price(fees)} needed; fund the worker wallet",
                cause=ReplicateStatusCause.OUT_OF_GAS,
                task_id=task_id,
                sent=False,
            )

        async with self._wallet_lock:
            try:
                nonce = await self._next_nonce()
                tx = await self._build(data, limit, fees, nonce)
                sent = self._sign(task_id, kind, tx)
                if replacing is None:
                    await self._journal.record_sent(task_id, kind, sent.tx_hash, nonce, sent.raw_tx)
                else:
                    await self._journal.replace_sent(task_id, kind, sent.tx_hash, nonce, sent.raw_tx)
                await self._broadcast(sent, fees, "sent")
            except BaseException:
                # The node's count is the truth after any doubt (a broadcast may have half-happened).
                self._nonce = None
                raise
            self._nonce = nonce + 1
        self._remember(sent, tx)
        self._client.observer.gas_price(kind.value, _max_price(fees))
        log.info("%s sent: tx %s, nonce %d, gas limit %d", what, sent.tx_hash, nonce, limit)
        return sent

    async def _read(
        self,
        task_id: str,
        kind: TxKind,
        data: str,
        checks: _Checks,
        extra_gas: Callable[[], Awaitable[int]] | None,
    ) -> tuple[TaskViews, int]:
        """The pre-checks: the views and the simulation at once; their verdict, or the views and the estimate.

        Raises TransactionRefused (nothing sent) with the cause, ChainError when the node did not answer.
        """
        what = f"{kind.value.lower()} of task {task_id}"
        deal_id = self._client.known_deal_id(task_id) if checks.deal else None
        fee = "gas_price" if self._legacy else "tip"
        views_read, estimated, deal_read = await _settled(
            self._client.task_views(
                task_id, self.address, stake=checks.stake, balance=not self._sidechain, fee=fee
            ),
            self._estimate(data, what, extra_gas),
            self._client.deal(deal_id) if deal_id is not None else _nothing(),
        )
        try:
            views = _value(views_read)
            deal = _value(deal_read)
            if checks.deal and deal is None:  # first transaction of the task: its deal is read once
                deal = await self._client.deal(views.task.deal_id)
        except ChainError:
            # Not a verdict on the task: the caller retries, or reports CHAIN_UNREACHABLE itself.
            raise ChainError(
                f"{what}: the chain node did not answer the pre-checks on {self._client.rpc_url}"
            ) from None
        cause = checks.cause(views, deal)
        if cause is not None:
            self._client.observer.transaction(kind.value, "refused")
            raise TransactionRefused(
                f"{what}: not sent, {cause.value}", cause=cause, task_id=task_id, sent=False
            )
        try:
            estimate = _value(estimated)
        except ContractReverted as exc:
            cause = _revert_cause(kind, exc.reason)
            self._client.observer.transaction(kind.value, "refused")
            raise TransactionRefused(
                f"{what}: not sent, the simulation reverted ({exc.reason or 'no reason given'}) → {cause.value}",
                cause=cause,
                task_id=task_id,
                sent=False,
            ) from exc
        return views, estimate

    async def _estimate(self, data: str, what: str, extra_gas: Callable[[], Awaitable[int]] | None) -> int:
        # eth_estimateGas executes the call as eth_call would: a revert comes back with its reason.
        if extra_gas is None:
            return await self._client.estimate_gas(self.address, data, what)
        estimate, extra = await asyncio.gather(
            self._client.estimate_gas(self.address, data, what), extra_gas()
        )
        return estimate + extra

    async def _fees_at(self, views: TaskViews) -> Fees:
        """The policy's fees at the block the views were read at (the gas price asked apart, once, on a legacy chain)."""
        legacy = views.block.base_fee_per_gas is None
        if legacy and not self._legacy:
            self._legacy = True
            return fees_for(self._gas, views.block, gas_price=await self._client.gas_price())
        self._legacy = legacy
        return fees_for(self._gas, views.block, priority_fee=views.priority_fee, gas_price=views.gas_price)

    async def _broadcast(self, sent: SentTx, fees: Fees | None, why: str) -> None:
        """``eth_sendRawTransaction`` with one log line per attempt, accepted or refused: what was bid and the cap.

        A refusal (fee too low for the node, underpriced replacement, ...) then shows whether the cap is what
        keeps the transaction out of blocks.
        """
        bid = fees or fees_of_raw(sent.raw_tx)
        offer = f"{_describe(bid)}, cap {self._gas.cap} wei/gas" if bid else f"cap {self._gas.cap} wei/gas"
        what = f"{sent.kind.value.lower()} of task {sent.task_id}"
        try:
            await self._client.broadcast(sent.raw_tx, sent.tx_hash)
        except ChainError as exc:
            log.warning(
                "broadcast (%s) of %s refused by the node: tx %s, nonce %d, %s: %s",
                why, what, sent.tx_hash, sent.nonce, offer, exc,
            )  # fmt: skip
            raise
        log.info(
            "broadcast (%s) of %s accepted by the node: tx %s, nonce %d, %s",
            why, what, sent.tx_hash, sent.nonce, offer,
        )  # fmt: skip

    def _sign(self, task_id: str, kind: TxKind, tx: dict[str, Any]) -> SentTx:
        signed = self._account.sign_transaction(tx)
        return SentTx(
            task_id=task_id,
            kind=kind,
            tx_hash=to_hex(bytes(signed.hash)),
            nonce=int(tx["nonce"]),
            raw_tx=to_hex(bytes(signed.raw_transaction)),
        )

    def _remember(self, sent: SentTx, tx: dict[str, Any]) -> None:
        key = (sent.task_id.lower(), sent.kind)
        hashes = self._versions.setdefault(key, [])
        if hashes and self._unsigned.get(key, {}).get("nonce") != tx["nonce"]:
            hashes.clear()  # a fresh nonce: the older versions are dead
        if sent.tx_hash not in hashes:
            hashes.append(sent.tx_hash)
        self._unsigned[key] = tx

    def _fees_known(self, sent: SentTx) -> Fees | None:
        tx = self._unsigned.get((sent.task_id.lower(), sent.kind))
        return _fees_of(tx) if tx is not None and tx.get("nonce") == sent.nonce else None

    def _forget(self, sent: SentTx) -> None:
        key = (sent.task_id.lower(), sent.kind)
        self._versions.pop(key, None)
        self._unsigned.pop(key, None)

    async def _ensure_broadcast(self, sent: SentTx) -> TxReceipt | object | None:
        """Put a recorded transaction back on the node if it lost it.

        Returns its receipt when it is already mined, ``_DEAD`` when it never can be, else None.
        """
        if await self._client.transaction_known(sent.tx_hash):
            return None
        for tx_hash in reversed(self._versions.get((sent.task_id.lower(), sent.kind), [])):
            if tx_hash != sent.tx_hash and await self._client.transaction_known(tx_hash):
                return None  # an older version is there; the receipt wait sees it
        try:
            await self._broadcast(sent, self._fees_known(sent), "again, the node lost it")
        except NonceTooLow:
            # Another transaction took that nonce: perhaps one of ours (a version of this one).
            found = await self._find_on_chain(sent)
            if found is not None:
                return found
            if await self._nonce_dead(sent):
                return _DEAD
            raise
        return None

    async def _nonce_dead(self, sent: SentTx) -> bool:
        """True when the nonce is mined by something that is not this call: this one can never be."""
        if await self._client.nonce(self.address, "latest") <= sent.nonce:
            return False
        if await self._find_on_chain(sent) is not None:
            return False
        log.warning(
            "%s of task %s: recorded tx %s (nonce %d) was dropped and its nonce used by another "
            "transaction; sending the call again",
            sent.kind.value.lower(), sent.task_id, sent.tx_hash, sent.nonce,
        )  # fmt: skip
        self._client.observer.transaction(sent.kind.value, "dropped")
        self._forget(sent)
        return True

    async def _find_on_chain(self, sent: SentTx) -> TxReceipt | None:
        """The task event of this worker for ``sent``'s task and kind, found in the recent logs."""
        # contributeAndFinalize emits TaskContribute too, the only one of its events naming the worker.
        topic = TASK_REVEAL_TOPIC if sent.kind is TxKind.REVEAL else TASK_CONTRIBUTE_TOPIC
        latest = await self._client.latest_block_number()
        worker_topic = "0x" + "00" * 12 + self.address.lower().removeprefix("0x")
        logs = await self._client.logs(
            [topic, sent.task_id.lower(), worker_topic], max(latest - EVENT_LOOKBACK_BLOCKS, 0), latest
        )
        for entry in logs:
            return TxReceipt(
                block_number=int(entry["blockNumber"]), tx_hash=to_hex(bytes(entry["transactionHash"]))
            )
        return None

    async def _receipt(self, sent: SentTx) -> TxReceipt:
        """Wait until one version of ``sent`` is mined under ``confirmations`` blocks, re-sending it if a reorg drops it.

        Three bounds, each ``receipt_timeout`` long: not mined yet, mined but not yet deep enough (the node
        makes no blocks), and again after every re-send.
        """
        key = (sent.task_id.lower(), sent.kind)
        what = f"{sent.kind.value.lower()} of task {sent.task_id}"
        if sent.tx_hash not in self._versions.get(key, []):
            self._versions.setdefault(key, []).append(sent.tx_hash)
        started = time.monotonic()
        deadline = started + self._receipt_timeout
        replace_at = started + self._replace_after
        current = sent
        seen: tuple[str, int] | None = None  # (hash, block) of the version last seen mined
        while True:
            mined = await self._mined_version(key, current)
            now = time.monotonic()
            if mined is not None:
                tx_hash, receipt = mined
                block = int(receipt["blockNumber"])
                if seen is None:
                    deadline = now + self._receipt_timeout
                    if self._confirmations > 1:
                        log.info(
                            "%s: tx %s mined in block %d; waiting for %d confirmations",
                            what, tx_hash, block, self._confirmations,
                        )  # fmt: skip
                seen = (tx_hash, block)
                if await self._confirmed(receipt):
                    return self._checked(current, tx_hash, receipt)
            elif seen is not None or not await self._held_by_node(key, current):
                # A version was mined and is not any more (a reorganisation dropped its block), or the node
                # holds none of them: the journaled bytes go back while their nonce is still free.
                reason = (
                    f"block {seen[1]} holding tx {seen[0]} left the chain (reorganisation)"
                    if seen is not None
                    else "the node holds none of its versions"
                )
                if not await self.resend(current, reason):
                    # Its nonce went to another transaction: the next send of this call finds out whether
                    # that was one of its versions, or signs the call anew (_ensure_broadcast).
                    raise ChainError(
                        f"{what}: {reason}, and nonce {current.nonce} is taken: following it again"
                    )
                seen = None
                deadline = now + self._receipt_timeout
                replace_at = now + self._replace_after
            if now >= deadline:
                self._client.observer.transaction(sent.kind.value, "timeout")
                if seen is not None:
                    raise ReceiptTimeout(
                        f"{what}: tx {seen[0]} mined in block {seen[1]} but not {self._confirmations} blocks "
                        f"deep after {self._receipt_timeout:g} s; does the node make blocks? "
                        "(IEXEC_WORKER_TX_CONFIRMATIONS)",
                        tx_hash=seen[0],
                    )
                raise ReceiptTimeout(
                    f"{what}: tx {current.tx_hash} not mined after {self._receipt_timeout:g} s",
                    tx_hash=current.tx_hash,
                )
            if seen is None and self._replace_after > 0 and now >= replace_at:
                replace_at = now + self._replace_after
                try:
                    current = await self._replace(current) or current
                except NonceTooLow:
                    # One version was mined meanwhile; the next round finds its receipt or its event.
                    found = await self._find_on_chain(current)
                    if found is not None:
                        self._client.observer.transaction(sent.kind.value, "mined")
                        return found
            await asyncio.sleep(self._poll_interval)

    async def _mined_version(
        self, key: tuple[str, TxKind], current: SentTx
    ) -> tuple[str, Web3Receipt] | None:
        """The newest version of the in-flight transaction with a receipt on the node, and that receipt."""
        for tx_hash in reversed(self._versions.get(key, [current.tx_hash])):
            receipt = await self._client.receipt(tx_hash)
            if receipt is not None:
                return tx_hash, receipt
        return None

    async def _held_by_node(self, key: tuple[str, TxKind], current: SentTx) -> bool:
        """True when the node holds (pending or mined) at least one version of the in-flight transaction."""
        for tx_hash in reversed(self._versions.get(key, [current.tx_hash])):
            if await self._client.transaction_known(tx_hash):
                return True
        return False

    async def _confirmed(self, receipt: Web3Receipt) -> bool:
        """True once the receipt's block is ``confirmations`` deep (itself the first) and still on the chain."""
        block = int(receipt["blockNumber"])
        if self._confirmations <= 1:
            return True
        if await self._client.latest_block_number() - block + 1 < self._confirmations:
            return False
        # The receipt may have been read just before a reorganisation: the block must still be the same one.
        return await self._client.block_hash(block) == to_hex(bytes(receipt["blockHash"])).lower()

    async def resend(self, sent: SentTx, reason: str) -> bool:
        """Broadcast the journaled bytes of ``sent`` again: same nonce, same signature, so never a second call.

        False, and nothing sent, when its nonce is taken already (by a version of it mined elsewhere, or by
        another transaction).
        """
        what = f"{sent.kind.value.lower()} of task {sent.task_id}"
        if await self._client.nonce(self.address, "latest") > sent.nonce:
            log.warning("%s: %s, and nonce %d is taken already: not re-sent", what, reason, sent.nonce)
            return False
        log.warning(
            "%s: %s; re-sending the same signed tx %s (nonce %d)", what, reason, sent.tx_hash, sent.nonce
        )
        self._client.observer.transaction(sent.kind.value, "resent")
        try:
            await self._broadcast(sent, self._fees_known(sent), f"again, {reason}")
        except NonceTooLow:
            return False
        return True

    def _checked(self, sent: SentTx, tx_hash: str, receipt: Web3Receipt) -> TxReceipt:
        topic = _SUCCESS_TOPIC[sent.kind]
        found = task_event(receipt, topic, sent.task_id)
        if found is None:
            self._client.observer.transaction(sent.kind.value, "failed")
            raise TransactionRefused(
                f"{sent.kind.value.lower()} of task {sent.task_id}: tx {tx_hash} mined in block "
                f"{receipt['blockNumber']} without its task event (status {receipt['status']})",
                cause=ReplicateStatusCause.CHAIN_RECEIPT_NOT_VALID,
                task_id=sent.task_id,
                sent=True,
            )
        self._client.observer.transaction(sent.kind.value, "mined")
        self._forget(sent)
        return found

    async def _replace(self, sent: SentTx) -> SentTx | None:
        """Sign and broadcast ``sent`` again with higher fees; None when the cap leaves no room."""
        key = (sent.task_id.lower(), sent.kind)
        what = f"{sent.kind.value.lower()} of task {sent.task_id}"
        old = self._unsigned.get(key) or await self._unsigned_from_node(sent)
        if old is None:
            # The node lost it: put the same bytes back rather than guess its fees.
            await self._broadcast(sent, None, "again, the node lost it")
            return None
        fees = bump(_fees_of(old), await self._fees(), self._gas.cap)
        if fees is None:
            log.warning(
                "%s: tx %s not mined yet and already priced at the cap (%d wei): waiting for it",
                what, sent.tx_hash, self._gas.cap,
            )  # fmt: skip
            return None
        tx = {k: v for k, v in old.items() if k not in ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas")}
        tx.update(_fee_fields(fees))
        replacement = self._sign(sent.task_id, sent.kind, tx)
        await self._journal.replace_sent(
            sent.task_id, sent.kind, replacement.tx_hash, replacement.nonce, replacement.raw_tx
        )
        self._remember(replacement, tx)
        await self._broadcast(replacement, fees, f"replacing {sent.tx_hash}")
        self._client.observer.replaced(sent.kind.value)
        self._client.observer.gas_price(sent.kind.value, _max_price(fees))
        log.info(
            "%s: tx %s not mined in %.0f s, replaced by %s (nonce %d, %s)",
            what, sent.tx_hash, self._replace_after, replacement.tx_hash, replacement.nonce, _describe(fees),
        )  # fmt: skip
        return replacement

    async def _unsigned_from_node(self, sent: SentTx) -> dict[str, Any] | None:
        found = await self._client.transaction(sent.tx_hash)
        if found is None:
            return None
        tx: dict[str, Any] = {
            "chainId": self._chain_id or await self._client.chain_id(),
            "nonce": int(found["nonce"]),
            "to": self._client.hub_address,
            "value": 0,
            "data": to_hex(bytes(found["input"])),
            "gas": int(found["gas"]),
        }
        if found.get("maxFeePerGas") is not None:
            tx["maxFeePerGas"] = int(found["maxFeePerGas"])
            tx["maxPriorityFeePerGas"] = int(found.get("maxPriorityFeePerGas") or 0)
        else:
            tx["gasPrice"] = int(found["gasPrice"])
        return tx

    async def _next_nonce(self) -> int:
        if self._nonce is None:
            self._nonce = await self._client.nonce(self.address, "pending")
        return self._nonce

    async def _fees(self) -> Fees:
        return await current_fees(self._client, self._gas)

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
        tx.update(_fee_fields(fees))
        return tx


async def _nothing() -> None:
    return None


async def _settled(*calls: Awaitable[Any]) -> list[Any]:
    """Run ``calls`` at once and wait for all: each result, or the exception it raised, in order.

    Unlike a plain gather, none is left running behind a failure; a cancellation is re-raised.
    """
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
            raise outcome
    return outcomes


def _value(outcome: T | BaseException) -> T:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


# The event whose presence in the receipt says the transaction did its job.
_SUCCESS_TOPIC = {
    TxKind.CONTRIBUTE: TASK_CONTRIBUTE_TOPIC,
    TxKind.REVEAL: TASK_REVEAL_TOPIC,
    TxKind.CONTRIBUTE_AND_FINALIZE: TASK_FINALIZE_TOPIC,
}


def bumped(value: int) -> int:
    """The least fee a node accepts for a replacement: +10 % rounded up, at least one wei more."""
    return max(-(-value * 11 // 10), value + 1)


def bump(old: Fees, network: Fees, cap: int) -> Fees | None:
    """Fees of a replacement: the higher of "old + 10 %" and today's price, never above ``cap``.

    None when the cap leaves no room for the +10 % (the old transaction must then be waited for).
    """
    if isinstance(old, LegacyFees):
        wanted = max(bumped(old.gas_price), _max_price(network))
        return LegacyFees(wanted) if wanted <= cap else None
    max_fee = max(bumped(old.max_fee_per_gas), _max_price(network))
    tip = bumped(old.max_priority_fee_per_gas)
    if isinstance(network, DynamicFees):
        tip = max(tip, network.max_priority_fee_per_gas)
    if max_fee > cap:
        max_fee = cap
        if max_fee < bumped(old.max_fee_per_gas):
            return None
    if tip > max_fee:
        return None
    return DynamicFees(max_fee_per_gas=max_fee, max_priority_fee_per_gas=tip)


def _fees_of(tx: dict[str, Any]) -> Fees:
    if "maxFeePerGas" in tx:
        return DynamicFees(int(tx["maxFeePerGas"]), int(tx["maxPriorityFeePerGas"]))
    return LegacyFees(int(tx["gasPrice"]))


def fees_of_raw(raw_tx: str) -> Fees | None:
    """The fees a signed transaction bids (legacy, EIP-2930 or EIP-1559), read from its bytes; None if unreadable."""
    try:
        data = to_bytes(raw_tx)
        if data and data[0] == 2:
            fields = _rlp_list(data[1:])
            return DynamicFees(max_fee_per_gas=_int(fields[3]), max_priority_fee_per_gas=_int(fields[2]))
        if data and data[0] == 1:
            return LegacyFees(_int(_rlp_list(data[1:])[2]))
        return LegacyFees(_int(_rlp_list(data)[1]))
    except (ValueError, IndexError, TypeError):
        return None


def _int(item: bytes | list[Any]) -> int:
    if not isinstance(item, bytes):
        raise TypeError("expected a byte string")
    return int.from_bytes(item, "big")


def _rlp_list(data: bytes) -> list[Any]:
    """The top-level list of an RLP encoding (nested lists as lists, strings as bytes)."""
    item, end = _rlp_item(data, 0)
    if end != len(data) or not isinstance(item, list):
        raise ValueError("not one RLP list")
    return item


def _rlp_item(data: bytes, at: int) -> tuple[bytes | list[Any], int]:
    first = data[at]
    if first < 0x80:
        return data[at : at + 1], at + 1
    if first < 0xC0:
        short = first < 0xB8
        size_len = 0 if short else first - 0xB7
        length = first - 0x80 if short else int.from_bytes(data[at + 1 : at + 1 + size_len], "big")
        start = at + 1 + size_len
        if start + length > len(data):
            raise ValueError("truncated RLP string")
        return data[start : start + length], start + length
    short = first < 0xF8
    size_len = 0 if short else first - 0xF7
    length = first - 0xC0 if short else int.from_bytes(data[at + 1 : at + 1 + size_len], "big")
    start = at + 1 + size_len
    end = start + length
    if end > len(data):
        raise ValueError("truncated RLP list")
    items: list[Any] = []
    cursor = start
    while cursor < end:
        item, cursor = _rlp_item(data, cursor)
        items.append(item)
    return items, end


def _fee_fields(fees: Fees) -> dict[str, int]:
    if isinstance(fees, DynamicFees):
        return {"maxFeePerGas": fees.max_fee_per_gas, "maxPriorityFeePerGas": fees.max_priority_fee_per_gas}
    return {"gasPrice": fees.gas_price}


def _describe(fees: Fees) -> str:
    if isinstance(fees, DynamicFees):
        return f"max fee {fees.max_fee_per_gas} wei/gas, tip {fees.max_priority_fee_per_gas} wei/gas"
    return f"gas price {fees.gas_price} wei/gas"


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
