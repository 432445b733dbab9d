"""Unit tests of the gas policy and of reading fees back from signed bytes (pure, no chain)."""

from __future__ import annotations

import pytest
from eth_account import Account

from worker.chain.gas import GAS_LIMIT_CAP, DynamicFees, GasPolicy, LegacyFees, gas_limit, has_enough_gas
from worker.chain.transactions import fees_of_raw

GWEI = 10**9


def test_legacy_price_is_network_price_times_multiplier() -> None:
    assert GasPolicy(multiplier=1.3, cap=22 * GWEI).legacy(10 * GWEI) == LegacyFees(13 * GWEI)


def test_legacy_price_never_exceeds_the_cap() -> None:
    assert GasPolicy(multiplier=1.3, cap=22 * GWEI).legacy(20 * GWEI) == LegacyFees(22 * GWEI)


@pytest.mark.parametrize("network_price", [None, 0, -1])
def test_legacy_price_falls_back_to_the_cap_without_a_network_price(network_price: int | None) -> None:
    assert GasPolicy(multiplier=1.3, cap=7 * GWEI).legacy(network_price) == LegacyFees(7 * GWEI)


def test_dynamic_fees_scale_base_fee_plus_tip() -> None:
    fees = GasPolicy(multiplier=1.5, cap=100 * GWEI).dynamic(base_fee=10 * GWEI, priority_fee=2 * GWEI)
    assert fees == DynamicFees(max_fee_per_gas=18 * GWEI, max_priority_fee_per_gas=2 * GWEI)


def test_dynamic_max_fee_and_tip_obey_the_cap() -> None:
    fees = GasPolicy(multiplier=1.3, cap=22 * GWEI).dynamic(base_fee=30 * GWEI, priority_fee=40 * GWEI)
    assert fees.max_fee_per_gas == 22 * GWEI
    assert fees.max_priority_fee_per_gas == 22 * GWEI


def test_dynamic_fees_without_a_tip_from_the_node() -> None:
    fees = GasPolicy(multiplier=2.0, cap=22 * GWEI).dynamic(base_fee=GWEI, priority_fee=None)
    assert fees == DynamicFees(max_fee_per_gas=2 * GWEI, max_priority_fee_per_gas=0)


@pytest.mark.parametrize(("multiplier", "cap"), [(0.0, GWEI), (-1.0, GWEI), (1.3, 0)])
def test_policy_rejects_meaningless_settings(multiplier: float, cap: int) -> None:
    with pytest.raises(ValueError, match="gas price"):
        GasPolicy(multiplier=multiplier, cap=cap)


def test_has_enough_gas_needs_one_full_transaction_at_the_cap() -> None:
    cap = 22 * GWEI
    assert has_enough_gas(GAS_LIMIT_CAP * cap, cap)
    assert not has_enough_gas(GAS_LIMIT_CAP * cap - 1, cap)


def test_has_enough_gas_always_on_a_sidechain() -> None:
    assert has_enough_gas(0, 22 * GWEI, sidechain=True)


def test_gas_limit_adds_a_margin_above_the_floor() -> None:
    assert gas_limit(600_000, floor=500_000) == 720_000


def test_gas_limit_keeps_the_java_limit_as_floor() -> None:
    assert gas_limit(390_345, floor=500_000) == 500_000
    assert gas_limit(93_455, floor=100_000) == 112_146


def test_gas_limit_is_capped_and_refuses_estimates_above_the_cap() -> None:
    assert gas_limit(900_000, floor=500_000) == GAS_LIMIT_CAP
    with pytest.raises(ValueError, match="exceeds"):
        gas_limit(GAS_LIMIT_CAP + 1, floor=500_000)


@pytest.mark.parametrize(
    ("fields", "fees"),
    [
        ({"gasPrice": 7 * GWEI}, LegacyFees(7 * GWEI)),
        ({"gasPrice": 3, "accessList": []}, LegacyFees(3)),
        (
            {"maxFeePerGas": 30 * GWEI, "maxPriorityFeePerGas": 2 * GWEI},
            DynamicFees(max_fee_per_gas=30 * GWEI, max_priority_fee_per_gas=2 * GWEI),
        ),
    ],
    ids=["legacy", "eip-2930", "eip-1559"],
)
def test_the_fees_of_a_signed_transaction_are_read_back_from_its_bytes(
    fields: dict[str, object], fees: LegacyFees | DynamicFees
) -> None:
    """What a rebroadcast after a restart logs: only the raw bytes are journaled."""
    tx = {
        "chainId": 65535,
        "nonce": 300,
        "to": "0x" + "42" * 20,
        "value": 0,
        "data": "0x1234",
        "gas": 500_000,
    }
    signed = Account.from_key("0x" + "11" * 32).sign_transaction({**tx, **fields})
    assert fees_of_raw("0x" + bytes(signed.raw_transaction).hex()) == fees


def test_unreadable_bytes_have_no_fees() -> None:
    assert fees_of_raw("0x02c0") is None
    assert fees_of_raw("0xf9") is None
