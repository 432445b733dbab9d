"""What a transaction costs: the price the gas policy pays now, and the fee a mined one paid.

``current_fees`` is the one place a worker transaction is priced (contribute, reveal, and the
operator's deposit and withdraw), so every transaction of the wallet follows
``IEXEC_GAS_PRICE_MULTIPLIER`` and ``IEXEC_GAS_PRICE_CAP`` alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.chain.client import ChainClient
from worker.chain.gas import DynamicFees, Fees, GasPolicy, LegacyFees
from worker.chain.models import ChainBlock


@dataclass(frozen=True, slots=True)
class PaidFee:
    """A mined transaction: where, the gas it used and what the wallet paid for it (wei)."""

    tx_hash: str
    block_number: int
    gas_used: int
    gas_price: int
    succeeded: bool

    @property
    def fee_wei(self) -> int:
        return self.gas_used * self.gas_price


async def current_fees(client: ChainClient, policy: GasPolicy) -> Fees:
    """The fees a transaction sent now would offer: EIP-1559 when the latest block has a base fee."""
    block = await client.latest_block()
    if block.base_fee_per_gas is None:
        return fees_for(policy, block, gas_price=await client.gas_price())
    return fees_for(policy, block, priority_fee=await client.max_priority_fee())


def fees_for(
    policy: GasPolicy, block: ChainBlock, *, priority_fee: int | None = None, gas_price: int | None = None
) -> Fees:
    """The policy's fees over what the node said: ``block``'s base fee and tip, or its gas price (legacy)."""
    if block.base_fee_per_gas is None:
        return policy.legacy(gas_price)
    return policy.dynamic(block.base_fee_per_gas, priority_fee)


def max_price(fees: Fees) -> int:
    """The most a transaction with these fees may pay per gas."""
    return fees.gas_price if isinstance(fees, LegacyFees) else fees.max_fee_per_gas


def describe(fees: Fees) -> str:
    if isinstance(fees, DynamicFees):
        return f"max fee {fees.max_fee_per_gas} wei/gas, tip {fees.max_priority_fee_per_gas} wei/gas"
    return f"gas price {fees.gas_price} wei/gas"


async def paid_fee(client: ChainClient, tx_hash: str) -> PaidFee | None:
    """The fee of a mined transaction, None while it is pending or unknown to the node."""
    receipt = await client.receipt(tx_hash)
    if receipt is None:
        return None
    return PaidFee(
        tx_hash=tx_hash,
        block_number=int(receipt["blockNumber"]),
        gas_used=int(receipt["gasUsed"]),
        gas_price=int(receipt.get("effectiveGasPrice") or 0),
        succeeded=receipt["status"] == 1,
    )
