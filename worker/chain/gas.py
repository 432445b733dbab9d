"""What the worker is willing to pay for gas, and whether its wallet can still pay it.

Pure arithmetic over values read from the node (iexec-commons-poco ``Web3jAbstractService`` and
``IexecHubAbstractService.hasEnoughGas``): the network price times a multiplier, never above a
cap. On EIP-1559 chains the same cap bounds ``maxFeePerGas`` and the tip, so a worker never
commits to more per gas than the cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

GAS_LIMIT_CAP = 1_000_000
"""Upper bound of any worker transaction's gas limit; also the unit of ``has_enough_gas``."""

DEFAULT_GAS_PRICE_MULTIPLIER = 1.3
DEFAULT_GAS_PRICE_CAP = 22_000_000_000  # wei (22 gwei)


@dataclass(frozen=True, slots=True)
class LegacyFees:
    gas_price: int


@dataclass(frozen=True, slots=True)
class DynamicFees:
    max_fee_per_gas: int
    max_priority_fee_per_gas: int


Fees = LegacyFees | DynamicFees


@dataclass(frozen=True, slots=True)
class GasPolicy:
    """``IEXEC_GAS_PRICE_MULTIPLIER`` and ``IEXEC_GAS_PRICE_CAP`` (wei)."""

    multiplier: float = DEFAULT_GAS_PRICE_MULTIPLIER
    cap: int = DEFAULT_GAS_PRICE_CAP

    def __post_init__(self) -> None:
        if self.multiplier <= 0:
            raise ValueError(f"gas price multiplier={self.multiplier}: must be > 0")
        if self.cap <= 0:
            raise ValueError(f"gas price cap={self.cap}: must be > 0 wei")

    def _scaled(self, wei: int) -> int:
        # Decimal on the text of the float: 1.3 * 10 gwei is exactly 13 gwei, not 12999999999.
        return int(Decimal(wei) * Decimal(str(self.multiplier)))

    def legacy(self, network_gas_price: int | None) -> LegacyFees:
        """``min(eth_gasPrice * multiplier, cap)``; the cap when the node gave no usable price."""
        if network_gas_price is None or network_gas_price <= 0:
            return LegacyFees(self.cap)
        return LegacyFees(min(self._scaled(network_gas_price), self.cap))

    def dynamic(self, base_fee: int, priority_fee: int | None) -> DynamicFees:
        """EIP-1559 fees: ``maxFee = min((baseFee + tip) * multiplier, cap)``, tip ≤ maxFee.

        ``(baseFee + tip)`` is what ``eth_gasPrice`` reports on such chains, so the worst case
        matches the legacy price; the multiplier leaves room for the base fee to rise (12.5 % a
        block at most) before the transaction is mined.
        """
        tip = max(priority_fee or 0, 0)
        max_fee = min(self._scaled(max(base_fee, 0) + tip), self.cap)
        return DynamicFees(max_fee_per_gas=max_fee, max_priority_fee_per_gas=min(tip, max_fee))


def has_enough_gas(balance: int, cap: int, *, sidechain: bool = False) -> bool:
    """True when the wallet can pay at least one transaction at the gas limit cap and price cap.

    Sidechains (``PublicChainConfig.sidechain``) run without gas fees, so any balance is enough.
    """
    return sidechain or balance >= GAS_LIMIT_CAP * cap


def gas_limit(estimate: int, floor: int) -> int:
    """The limit sent with a transaction: the estimate plus 20 %, at least ``floor``, at most the cap.

    The floors are the fixed limits of the Java worker (contribute 500 000, reveal 100 000): gas
    that is not used is refunded, and the margin covers state changed by other transactions
    between the estimate and the block. Raises ValueError when even the estimate is above the cap.
    """
    if estimate > GAS_LIMIT_CAP:
        raise ValueError(f"gas estimate {estimate} exceeds the worker's limit of {GAS_LIMIT_CAP}")
    return min(max(estimate * 6 // 5, floor), GAS_LIMIT_CAP)
