"""End-to-end: the PoCo 6.1.0 deployment on a real anvil, from scratch (cold) and from the cached state (warm)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from devnet.accounts import Role, account
from devnet.contracts import (
    DEVNET_CATEGORY,
    DEVNET_TIMEREF,
    STANDARD_CATEGORIES,
    Devnet,
    abi,
    checksum,
)
from devnet.toolkit import Toolkit, domain_separator

pytestmark = pytest.mark.e2e

DEVNET_HUB = "0x5fc8d32690cc91d4c39d9d3abcbd16989f875707"
DEVNET_DOMAIN_SEPARATOR = "0x3a381c2b61f95eecc30cd1fa149a885c63820b699953cdfa94c38e311235e58f"


async def _check_deployment(net: Devnet) -> None:
    w3, dep = net.w3, net.deployment
    loupe = w3.eth.contract(address=checksum(dep.hub), abi=abi("DiamondLoupe"))
    facets = await loupe.functions.facets().call()
    assert len(facets) == 14
    assert sum(len(selectors) for _, selectors in facets) == 98

    iexec = w3.eth.contract(address=checksum(dep.hub), abi=abi("IexecInterfaceToken"))
    assert (await iexec.functions.owner().call()).lower() == account(Role.ADMIN).address.lower()
    assert (await iexec.functions.token().call()).lower() == dep.rlc
    name, version, chain_id, verifying = await iexec.functions.domain().call()
    assert (name, version, chain_id, verifying.lower()) == ("iExecODB", "5.0.0", 31337, dep.hub)
    on_chain = "0x" + bytes(await iexec.functions.eip712domain_separator().call()).hex()
    assert on_chain == domain_separator(dep.chain_id, dep.hub) == DEVNET_DOMAIN_SEPARATOR

    toolkit = Toolkit(w3, dep)
    for category_name, timeref in (*STANDARD_CATEGORIES, (DEVNET_CATEGORY, DEVNET_TIMEREF)):
        name, _, on_chain_timeref = await toolkit.view_category(dep.categories[category_name])
        assert (name, on_chain_timeref) == (category_name, timeref)
    rlc = w3.eth.contract(address=checksum(dep.rlc), abi=abi("RLC"))
    assert await rlc.functions.balanceOf(checksum(account(Role.ADMIN).address)).call() == 87_000_000 * 10**9


async def test_cold_deploy_then_warm_start_from_cache(tmp_path: Path) -> None:
    started = time.perf_counter()
    async with await Devnet.up(cache_dir=tmp_path) as cold:
        cold_seconds = time.perf_counter() - started
        assert not cold.warm
        assert cold.deployment.hub == DEVNET_HUB
        await _check_deployment(cold)
        deployed = cold.deployment

    started = time.perf_counter()
    async with await Devnet.up(cache_dir=tmp_path) as warm:
        warm_seconds = time.perf_counter() - started
        assert warm.warm
        assert warm.deployment == deployed
        await _check_deployment(warm)

    print(f"devnet start: cold (fresh deploy) {cold_seconds:.2f} s, warm (load state) {warm_seconds:.2f} s")
    # Bounds well above the usual 0.7 s / 0.05 s so a busy shared host does not fail the test.
    assert cold_seconds < 15
    assert warm_seconds < 3


async def test_stale_cache_is_redeployed(tmp_path: Path) -> None:
    async with await Devnet.up(cache_dir=tmp_path):
        pass

    def corrupt() -> None:
        (state,) = tmp_path.glob("*.state.json")
        state.write_text('{"block": null, "accounts": {}}')

    await asyncio.to_thread(corrupt)

    async with await Devnet.up(cache_dir=tmp_path) as net:
        assert not net.warm
        assert len(await net.w3.eth.get_code(checksum(net.deployment.hub))) > 0
