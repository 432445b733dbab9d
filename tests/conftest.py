"""Fixtures shared by every test package.

``devnet`` is one anvil with PoCo deployed, shared by the whole session and warm-started from the cached deployed
state (a fresh deployment happens only when the cache is missing or stale). Tests share its chain: compare balances
as deltas, use fresh orders (the toolkit salts them), and do not move the chain clock; a test that needs to, or
that needs a pristine chain, starts its own ``Devnet.up(cache_dir=devnet_cache_dir())`` (about 0.1 s).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from devnet.contracts import Devnet
from devnet.toolkit import Toolkit
from tests.support.devnet import devnet_cache_dir


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def devnet() -> AsyncIterator[Devnet]:
    async with await Devnet.up(cache_dir=devnet_cache_dir()) as net:
        yield net


@pytest.fixture
def toolkit(devnet: Devnet) -> Toolkit:
    return Toolkit(devnet.w3, devnet.deployment)
