"""Waiting for a new worker's wallet to be funded: ETH for gas and RLC deposited as stake.

``iexec-worker join`` shows the address to fund, then polls the chain until the wallet holds the ETH
its contributions need and its hub account the stake the pool's tasks lock. RLC that arrives in the
wallet itself (not deposited) can be deposited on the way, once there is ETH to pay the gas. Every
poll reports progress; nothing here prints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from worker.chain import ChainAccount, rlc
from worker.doctor.checks import eth
from worker.protocol.errors import WorkerError


class FundsChain(Protocol):
    async def balance(self, address: str) -> int: ...

    async def account(self, address: str) -> ChainAccount: ...

    async def rlc_balance(self, address: str) -> int: ...


@dataclass(frozen=True, slots=True)
class Needs:
    eth_wei: int
    stake_nrlc: int


@dataclass(frozen=True, slots=True)
class Funds:
    eth_wei: int
    rlc_wallet: int
    stake: int
    locked: int

    def missing(self, needs: Needs) -> list[str]:
        """What is still short, in words, empty when the wallet is ready."""
        short = []
        if self.eth_wei < needs.eth_wei:
            short.append(f"{eth(needs.eth_wei - self.eth_wei)} ETH")
        if self.stake < needs.stake_nrlc:
            short.append(f"{rlc(needs.stake_nrlc - self.stake)} RLC deposited")
        return short


class FundingTimeout(WorkerError):
    """The wallet was not funded in time; the message says what is missing."""


async def read_funds(chain: FundsChain, address: str) -> Funds:
    balance, account, held = await asyncio.gather(
        chain.balance(address), chain.account(address), chain.rlc_balance(address)
    )
    return Funds(eth_wei=balance, rlc_wallet=held, stake=account.stake, locked=account.locked)


async def wait_for_funds(
    chain: FundsChain,
    address: str,
    needs: Needs,
    *,
    progress: Callable[[Funds, float], None],
    deposit: Callable[[Funds], Awaitable[bool]] | None = None,
    period: float = 2.0,
    give_up_after: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Funds:
    """Poll until ``needs`` are met; ``deposit`` may move wallet RLC to the stake (True when it did).

    Raises FundingTimeout after ``give_up_after`` seconds, naming what is still missing.
    """
    started = clock()
    while True:
        funds = await read_funds(chain, address)
        progress(funds, clock() - started)
        if not funds.missing(needs):
            return funds
        can_pay_gas = funds.eth_wei >= needs.eth_wei
        wants_stake = funds.stake < needs.stake_nrlc and funds.rlc_wallet > 0
        if deposit is not None and wants_stake and can_pay_gas and await deposit(funds):
            continue
        if give_up_after is not None and clock() - started > give_up_after:
            raise FundingTimeout(
                f"wallet {address} still lacks {' and '.join(funds.missing(needs))} after {give_up_after:.0f} s: "
                "fund it, then run join again (it picks up where it stopped)"
            )
        await asyncio.sleep(period)
