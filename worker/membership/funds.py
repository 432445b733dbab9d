"""Watches the wallet: ETH for gas, RLC stake and locked stake, and the OUT_OF_GAS state.

A wallet that cannot pay one transaction at the gas price cap stops the replicate demand (the
reference exits; this worker waits) until it is refilled; ``/health`` and a metric say so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from worker.chain import has_enough_gas
from worker.membership.health import FundsSeen, Health
from worker.membership.ports import Chain
from worker.membership.waiting import sleep_or_stop
from worker.metrics import Metrics
from worker.protocol.errors import WorkerError

log = logging.getLogger("iexec.worker")


def has_enough_gas_now(balance: int, gas_price_cap: int, *, sidechain: bool) -> bool:
    """A sidechain's gas is free; elsewhere the wallet must afford a transaction at the cap."""
    return sidechain or has_enough_gas(balance, gas_price_cap)


class FundsWatch:
    def __init__(
        self,
        chain: Chain,
        health: Health,
        metrics: Metrics,
        *,
        wallet: str,
        gas_price_cap: int,
        sidechain: bool,
        period: float,
        gas_price: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        """``gas_price`` tells the price per gas a transaction sent now would offer (the gas policy)."""
        self._chain = chain
        self._health = health
        self._metrics = metrics
        self._wallet = wallet
        self._cap = gas_price_cap
        self._sidechain = sidechain
        self._period = period
        self._gas_price = gas_price

    def record_balance(self, balance: int) -> None:
        """Update the OUT_OF_GAS state from a balance, logging when it changes."""
        out_of_gas = not has_enough_gas_now(balance, self._cap, sidechain=self._sidechain)
        if out_of_gas != self._health.out_of_gas:
            if out_of_gas:
                log.error(
                    "OUT_OF_GAS: wallet %s holds %d wei, too little to pay a transaction at the gas price "
                    "cap; no new work until it is refilled",
                    self._wallet,
                    balance,
                )
            else:
                log.info("wallet refilled: asking for work again")
        self._health.out_of_gas = out_of_gas
        self._metrics.out_of_gas.set(1 if out_of_gas else 0)
        self._metrics.eth_balance_wei.set(balance)

    async def check(self) -> None:
        try:
            balance = await self._chain.balance(self._wallet)
            account = await self._chain.account(self._wallet)
            price = await self._gas_price() if self._gas_price else None
        except WorkerError as exc:
            self._health.problems["chain"] = f"node unreachable: {exc}"
            return
        self._health.problems.pop("chain", None)
        self._metrics.rlc_stake_nrlc.set(account.stake)
        self._metrics.rlc_locked_nrlc.set(account.locked)
        self.record_balance(balance)
        self._health.funds = FundsSeen(balance, account.stake, account.locked, price, time.time())

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            await self.check()
            if await sleep_or_stop(stop, self._period):
                return
