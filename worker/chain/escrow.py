"""The worker's RLC on the hub: balances, the stake the pool's deals ask, deposit and withdraw.

PoCo's token flavour (``IexecEscrowTokenFacet``) holds RLC for each account: ``stake`` is free,
``locked`` is frozen by running contributions and cannot be withdrawn. A deposit is one
transaction to the RLC token, ``approveAndCall(hub, amount, "")``: the token approves the hub and
calls its ``receiveApproval``, which pulls the amount into the account. ``withdraw(amount)`` burns
free stake and sends the RLC back to the wallet. The native flavour of sidechains
(``IexecEscrowNativeFacet``, whose hub has no token) is refused with a message.

Each deal stores the stake its workers lock per contribution (``workerStake``: the workerpool price
times the pool's ``m_workerStakeRatioPolicy`` percent, fixed when the deal is matched); the
``SchedulerNotice`` events of a workerpool name its deals.

Transactions are priced by the worker's gas policy (``fees.current_fees``), their gas limit is the
estimate + 20 % under ``GAS_LIMIT_CAP``, and the wallet must afford limit x price before anything
is signed, as for contribute and reveal. Amounts are in nRLC (1 RLC = 10⁹ nRLC).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress, HexStr
from web3.types import TxParams, Wei

from worker.chain.abi import ESCROW_ABI, RLC_ABI, SCHEDULER_NOTICE_TOPIC, WORKERPOOL_ABI
from worker.chain.client import ChainClient
from worker.chain.errors import ContractReverted
from worker.chain.fees import PaidFee, current_fees, max_price, paid_fee
from worker.chain.gas import GasPolicy, LegacyFees, gas_limit
from worker.protocol.crypto import ZERO_ADDRESS, checksum, to_hex
from worker.protocol.errors import ChainError, WorkerError

NRLC_PER_RLC = 10**9
LOG_CHUNK_BLOCKS = 10_000  # many public nodes refuse eth_getLogs over wider ranges
DEFAULT_RECEIPT_TIMEOUT = 120.0


class EscrowError(WorkerError):
    """A deposit or withdraw that cannot be done as asked; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Balances:
    """One wallet's money: ETH for gas (wei), RLC in the wallet and on the hub (nRLC)."""

    eth_wei: int
    rlc_wallet: int
    stake: int
    locked: int

    @property
    def deposited(self) -> int:
        return self.stake + self.locked


@dataclass(frozen=True, slots=True)
class DealStake:
    deal_id: str
    block_number: int
    workerpool_price: int
    worker_stake: int


class Escrow:
    """Reads and moves the RLC of one hub, with the transactions priced by ``gas_policy``."""

    def __init__(
        self,
        client: ChainClient,
        gas_policy: GasPolicy,
        *,
        receipt_timeout: float = DEFAULT_RECEIPT_TIMEOUT,
        poll_interval: float = 1.0,
    ) -> None:
        self._client = client
        self._gas = gas_policy
        self._receipt_timeout = receipt_timeout
        self._poll_interval = poll_interval
        self._token: str | None = None

    # -- views ------------------------------------------------------------------------------------

    async def token(self) -> str:
        """The RLC token the hub holds; EscrowError on a hub of the native flavour."""
        if self._token is None:
            hub = self._client.hub_address
            address = await self._client._rpc(
                "token() of the hub",
                lambda ep: ep.w3.eth.contract(address=hub, abi=ESCROW_ABI).functions.token().call(),
            )
            if str(address).lower() == ZERO_ADDRESS:
                raise EscrowError(
                    f"the hub {hub} keeps RLC natively (a sidechain): deposit by sending value to its "
                    "deposit() from a wallet tool; this command handles the RLC token flavour only"
                )
            self._token = str(address)
        return self._token

    async def rlc_balance(self, address: str) -> int:
        token, owner = _cs(await self.token()), _cs(address)
        return int(
            await self._client._rpc(
                f"RLC balance of {address}",
                lambda ep: ep.w3.eth.contract(address=token, abi=RLC_ABI).functions.balanceOf(owner).call(),
            )
        )

    async def balances(self, address: str) -> Balances:
        eth, rlc, account = await asyncio.gather(
            self._client.balance(address), self.rlc_balance(address), self._client.account(address)
        )
        return Balances(eth_wei=eth, rlc_wallet=rlc, stake=account.stake, locked=account.locked)

    async def worker_stake_ratio(self, pool: str) -> int:
        """The percent of the workerpool price a worker stakes in the pool's next deals."""
        address = _cs(pool)
        return int(
            await self._client._rpc(
                f"m_workerStakeRatioPolicy() of workerpool {pool}",
                lambda ep: (
                    ep.w3.eth.contract(address=address, abi=WORKERPOOL_ABI)
                    .functions.m_workerStakeRatioPolicy()
                    .call()
                ),
            )
        )

    async def recent_deal_stakes(self, pool: str, *, blocks: int, limit: int = 20) -> list[DealStake]:
        """The stakes of the pool's latest deals (newest first) within the last ``blocks`` blocks."""
        latest = await self._client.latest_block_number()
        oldest = max(latest - blocks, 0)
        pool_topic = "0x" + pool.lower().removeprefix("0x").rjust(64, "0")
        found: list[tuple[int, str]] = []
        end = latest
        while end >= oldest and len(found) < limit:
            start = max(end - LOG_CHUNK_BLOCKS + 1, oldest)
            logs = await self._client.logs([SCHEDULER_NOTICE_TOPIC, pool_topic], start, end)
            found += [(int(e["blockNumber"]), to_hex(bytes(e["data"]))[:66].lower()) for e in reversed(logs)]
            end = start - 1
        stakes = []
        for block, deal_id in found[:limit]:
            deal = await self._client.deal(deal_id)
            stakes.append(DealStake(deal_id, block, deal.workerpool.price, deal.worker_stake))
        return stakes

    # -- transactions -----------------------------------------------------------------------------

    async def deposit(self, account: LocalAccount, amount: int) -> PaidFee:
        """Move ``amount`` nRLC from the wallet to its hub account (one approveAndCall)."""
        if amount <= 0:
            raise EscrowError("the amount to deposit must be more than 0 RLC")
        held = await self.rlc_balance(account.address)
        if held < amount:
            raise EscrowError(
                f"wallet {account.address.lower()} holds {rlc(held)} RLC, less than the {rlc(amount)} RLC to "
                f"deposit: send RLC to it first, or deposit at most {rlc(held)}"
            )
        token = _cs(await self.token())
        data = (
            self._client.endpoints[0]
            .w3.eth.contract(address=token, abi=RLC_ABI)
            .encode_abi("approveAndCall", args=[self._client.hub_address, amount, b""])
        )
        return await self._send(account, token, str(data), f"deposit of {rlc(amount)} RLC")

    async def withdraw(self, account: LocalAccount, amount: int) -> PaidFee:
        """Move ``amount`` nRLC of free stake back to the wallet."""
        if amount <= 0:
            raise EscrowError("the amount to withdraw must be more than 0 RLC")
        stake, locked = await self._client.account(account.address)
        if stake < amount:
            raise EscrowError(
                f"only {rlc(stake)} RLC of the account is free ({rlc(locked)} RLC locked by running "
                f"contributions, released when their tasks end): withdraw at most {rlc(stake)}"
            )
        hub = self._client.hub_address
        data = (
            self._client.endpoints[0]
            .w3.eth.contract(address=hub, abi=ESCROW_ABI)
            .encode_abi("withdraw", args=[amount])
        )
        return await self._send(account, hub, str(data), f"withdrawal of {rlc(amount)} RLC")

    async def _send(self, account: LocalAccount, to: str, data: str, what: str) -> PaidFee:
        sender = _cs(account.address)
        call: TxParams = {"from": sender, "to": _cs(to), "data": HexStr(data), "value": Wei(0)}
        try:
            await self._client._rpc(what, lambda ep: ep.w3.eth.call(call))
            estimate = await self._client._rpc(what, lambda ep: ep.w3.eth.estimate_gas(call))
        except ContractReverted as exc:
            raise EscrowError(
                f"{what}: not sent, the contract refuses it ({exc.reason or 'no reason'})"
            ) from exc
        limit = gas_limit(estimate, 0)
        fees = await current_fees(self._client, self._gas)
        balance = await self._client.balance(sender)
        if balance < limit * max_price(fees):
            raise EscrowError(
                f"{what}: not sent, wallet {sender.lower()} holds {balance} wei, {limit * max_price(fees)} wei "
                "needed for its gas: send ETH to it first"
            )
        tx: dict[str, Any] = {
            "chainId": await self._client.chain_id(),
            "nonce": await self._client.nonce(sender, "pending"),
            "to": checksum(to),
            "value": 0,
            "data": data,
            "gas": limit,
        }
        if isinstance(fees, LegacyFees):
            tx["gasPrice"] = fees.gas_price
        else:
            tx.update(maxFeePerGas=fees.max_fee_per_gas, maxPriorityFeePerGas=fees.max_priority_fee_per_gas)
        signed = account.sign_transaction(tx)
        tx_hash = to_hex(bytes(signed.hash))
        await self._client.broadcast(to_hex(bytes(signed.raw_transaction)), tx_hash)
        deadline = time.monotonic() + self._receipt_timeout
        while (paid := await paid_fee(self._client, tx_hash)) is None:
            if time.monotonic() > deadline:
                raise ChainError(
                    f"{what}: tx {tx_hash} not mined after {self._receipt_timeout:g} s; it may still be: "
                    "check it on a block explorer before sending again"
                )
            await asyncio.sleep(self._poll_interval)
        if not paid.succeeded:
            raise EscrowError(f"{what}: tx {tx_hash} reverted in block {paid.block_number}")
        return paid


def _cs(address: str) -> ChecksumAddress:
    return cast(ChecksumAddress, checksum(address))


def rlc(nrlc: int) -> str:
    """nRLC as RLC, without trailing zeros: 2500000000 -> '2.5'."""
    whole, frac = divmod(nrlc, NRLC_PER_RLC)
    return f"{whole}.{frac:09d}".rstrip("0").rstrip(".") if frac else str(whole)


def parse_rlc(text: str) -> int:
    """'2.5' RLC (at most 9 decimals) as nRLC; ValueError with the rule when it is not an amount."""
    value = text.strip()
    whole, _, frac = value.partition(".")
    if not (whole or frac) or not (whole or "0").isdigit() or (frac and not frac.isdigit()) or len(frac) > 9:
        raise ValueError(f"{text!r} is not an amount of RLC: write e.g. 2 or 2.5 (at most 9 decimals)")
    return int(whole or "0") * NRLC_PER_RLC + int(frac.ljust(9, "0") or "0")
