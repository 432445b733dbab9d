"""Waiting for a wallet's funds, driven by an in-memory chain (unit tests: no service)."""

from __future__ import annotations

import pytest

from tests.doctor.fakes import RLC, WALLET
from worker.chain import ChainAccount
from worker.doctor.funding import FundingTimeout, Funds, Needs, wait_for_funds

NEEDS = Needs(eth_wei=10**16, stake_nrlc=2 * RLC)


class ArrivingChain:
    """Funds that arrive on the n-th poll; a deposit moves the wallet's RLC to the stake."""

    def __init__(self, eth_on: int, rlc_on: int) -> None:
        self.polls = 0
        self.eth_on, self.rlc_on = eth_on, rlc_on
        self.stake = 0
        self.wallet_rlc = 0

    async def balance(self, address: str) -> int:
        self.polls += 1
        return 10**17 if self.polls >= self.eth_on else 0

    async def account(self, address: str) -> ChainAccount:
        return ChainAccount(self.stake, 0)

    async def rlc_balance(self, address: str) -> int:
        if self.polls >= self.rlc_on and not self.stake:
            self.wallet_rlc = 3 * RLC
        return self.wallet_rlc


async def test_waits_reporting_progress_then_deposits_the_wallet_rlc_once_gas_is_there() -> None:
    chain = ArrivingChain(eth_on=3, rlc_on=2)
    seen: list[list[str]] = []
    deposits: list[int] = []

    async def deposit(funds: Funds) -> bool:
        deposits.append(funds.rlc_wallet)
        chain.stake, chain.wallet_rlc = funds.rlc_wallet, 0
        return True

    funds = await wait_for_funds(
        chain, WALLET, NEEDS, progress=lambda f, _: seen.append(f.missing(NEEDS)), deposit=deposit, period=0
    )
    assert seen[0] == ["0.01 ETH", "2 RLC deposited"]
    assert seen[-1] == []
    assert deposits == [3 * RLC]  # only once ETH could pay for it (third poll)
    assert funds.stake == 3 * RLC


async def test_gives_up_naming_what_is_missing() -> None:
    times = iter(range(0, 100, 10))
    with pytest.raises(FundingTimeout, match=r"still lacks 0.01 ETH and 2 RLC deposited after 15 s"):
        await wait_for_funds(
            ArrivingChain(eth_on=99, rlc_on=99), WALLET, NEEDS, progress=lambda f, _: None,
            period=0, give_up_after=15, clock=lambda: float(next(times)),
        )  # fmt: skip
