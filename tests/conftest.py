"""Fixtures shared by every test package.

``devnet`` is one anvil with PoCo deployed, shared by the whole session and warm-started from the cached deployed
state (a fresh deployment happens only when the cache is missing or stale). Tests share its chain: compare balances
as deltas, use fresh orders (the toolkit salts them), and do not move the chain clock; a test that needs to, or
that needs a pristine chain, starts its own ``Devnet.up(cache_dir=devnet_cache_dir())`` (about 0.1 s).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from devnet.contracts import Devnet
from devnet.toolkit import Toolkit

DEFAULT_DEVNET_CACHE = Path(__file__).resolve().parents[1] / ".devnet" / "cache"


def devnet_cache_dir() -> Path:
    """Where deployed states are cached: ``IEXEC_DEVNET_CACHE`` if set, else ``.devnet/cache`` in the repo."""
    return Path(os.environ.get("IEXEC_DEVNET_CACHE") or DEFAULT_DEVNET_CACHE)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def devnet() -> AsyncIterator[Devnet]:
    async with await Devnet.up(cache_dir=devnet_cache_dir()) as net:
        yield net


@pytest.fixture
def toolkit(devnet: Devnet) -> Toolkit:
    return Toolkit(devnet.w3, devnet.deployment)
