"""Deterministic devnet accounts: the anvil mnemonic, laid out by role as in the PoCo tests.

The roles and their indexes are listed in docs/devnet.md ("Accounts by role").
"""

from __future__ import annotations

from enum import IntEnum
from functools import cache

from eth_account import Account
from eth_account.signers.local import LocalAccount

MNEMONIC = "test test test test test test test test test test test junk"
ACCOUNT_COUNT = 20
"""Anvil must fund at least this many accounts: the worker roles start at index 10."""

Account.enable_unaudited_hdwallet_features()


class Role(IntEnum):
    """HD index of each devnet role. Indexes 12..19 are spare workers."""

    ADMIN = 0
    REQUESTER = 1
    APP_PROVIDER = 4
    DATASET_PROVIDER = 5
    SCHEDULER = 6
    ENCLAVE = 7
    ANYONE = 9
    WORKER = 10
    WORKER2 = 11


@cache
def account(index: int) -> LocalAccount:
    """Account ``m/44'/60'/0'/0/index`` of the devnet mnemonic (derivation is slow, hence cached)."""
    if not 0 <= index < ACCOUNT_COUNT:
        raise ValueError(f"devnet account index {index}: anvil funds only indexes 0..{ACCOUNT_COUNT - 1}")
    derived: LocalAccount = Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return derived
