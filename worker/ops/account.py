"""``iexec-worker account show | deposit AMOUNT | withdraw AMOUNT``: the worker's RLC on the hub.

The hub and the node come from the pool's scheduler (its chain configuration), as for ``run``;
transactions follow the worker's gas policy. A deposit or withdraw takes the wallet lock: while the
worker runs, its transactions own the wallet's nonces, so it must be stopped first (its stake stays
deposited meanwhile).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from worker.chain import Balances, PaidFee, rlc
from worker.config import Settings
from worker.doctor import eth, gwei
from worker.ops.wiring import open_pool_chain
from worker.protocol.errors import ConfigurationError
from worker.wallet import WalletLock, load_wallet, show_wallet


async def show(settings: Settings) -> tuple[str, Balances]:
    address = show_wallet(settings.wallet_path)
    async with AsyncExitStack() as stack:
        probe, _ = await open_pool_chain(stack, settings)
        return address, await probe.escrow.balances(address)


async def move(settings: Settings, action: str, amount: int) -> tuple[str, PaidFee, Balances]:
    """Deposit (``action`` "deposit") or withdraw ``amount`` nRLC; returns the fee paid and the new balances."""
    account = await load_wallet(settings.wallet_path, settings.wallet_password)
    address = account.address.lower()
    lock = WalletLock(settings.node.base_dir, address)
    try:
        lock.acquire()
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{exc}. Stop the worker before a {action} (its stake stays deposited), then start it again"
        ) from None
    try:
        async with AsyncExitStack() as stack:
            probe, _ = await open_pool_chain(stack, settings)
            if action == "deposit":
                paid = await probe.escrow.deposit(account, amount)
            else:
                paid = await probe.escrow.withdraw(account, amount)
            return address, paid, await probe.escrow.balances(address)
    finally:
        lock.release()


def balances_json(address: str, balances: Balances) -> dict[str, Any]:
    return {
        "wallet": address,
        "ethWei": str(balances.eth_wei),
        "rlcWalletNrlc": str(balances.rlc_wallet),
        "rlcDepositedNrlc": str(balances.deposited),
        "rlcLockedNrlc": str(balances.locked),
        "rlcFreeNrlc": str(balances.stake),
    }


def balances_lines(address: str, balances: Balances) -> list[str]:
    return [
        f"wallet          {address}",
        f"ETH             {eth(balances.eth_wei)}",
        f"RLC in wallet   {rlc(balances.rlc_wallet)}",
        f"RLC deposited   {rlc(balances.deposited)}",
        f"  locked        {rlc(balances.locked)}",
        f"  free stake    {rlc(balances.stake)}",
    ]


def paid_line(action: str, amount: int, paid: PaidFee) -> str:
    return (
        f"{action} of {rlc(amount)} RLC mined in block {paid.block_number}: tx {paid.tx_hash}, "
        f"{paid.gas_used} gas at {gwei(paid.gas_price)} gwei = {eth(paid.fee_wei)} ETH"
    )
