"""The wallet watch, driven by fakes (unit tests: no service)."""

from __future__ import annotations

from tests.membership.fakes import WALLET, FakeChain
from worker.chain import ChainAccount
from worker.membership import FundsWatch, Health
from worker.metrics import Metrics

CAP = 22 * 10**9  # the reference's default gas price cap, in wei
ENOUGH = 10**6 * CAP  # the reference's rule: a million gas at the cap


def watch(chain: FakeChain, health: Health, metrics: Metrics, *, sidechain: bool = False) -> FundsWatch:
    return FundsWatch(
        chain, health, metrics, wallet=WALLET, gas_price_cap=CAP, sidechain=sidechain, period=0.01
    )


async def test_balances_and_stake_become_metrics() -> None:
    chain = FakeChain(balances={WALLET: ENOUGH}, stakes={WALLET: ChainAccount(stake=7, locked=3)})
    health, metrics = Health(), Metrics()
    await watch(chain, health, metrics).check()
    sample = metrics.registry.get_sample_value
    assert sample("iexec_worker_eth_balance_wei") == ENOUGH
    assert sample("iexec_worker_rlc_stake_nrlc") == 7
    assert sample("iexec_worker_rlc_locked_nrlc") == 3
    assert sample("iexec_worker_out_of_gas") == 0
    assert not health.out_of_gas


async def test_a_wallet_below_a_transaction_at_the_cap_is_out_of_gas_until_refilled() -> None:
    chain = FakeChain(balances={WALLET: ENOUGH - 1})
    health, metrics = Health(), Metrics()
    policy = watch(chain, health, metrics)
    await policy.check()
    assert health.out_of_gas
    assert metrics.registry.get_sample_value("iexec_worker_out_of_gas") == 1
    chain.balances[WALLET] = ENOUGH
    await policy.check()
    assert not health.out_of_gas


async def test_on_a_sidechain_gas_is_free() -> None:
    health = Health()
    await watch(FakeChain(), health, Metrics(), sidechain=True).check()
    assert not health.out_of_gas


async def test_an_unreachable_node_is_a_problem_and_keeps_the_last_state() -> None:
    chain, health = FakeChain(balances={WALLET: 0}), Health()
    policy = watch(chain, health, Metrics())
    await policy.check()
    assert health.out_of_gas
    chain.down = True
    await policy.check()
    assert "chain" in health.problems
    assert health.out_of_gas
