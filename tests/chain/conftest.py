"""Fixtures of the chain tests: a ChainClient on the shared devnet, a devnet per module, a journal fake, deal helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from devnet.contracts import Devnet
from tests.support.devnet import devnet_cache_dir
from worker.chain.client import ChainClient


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def net() -> AsyncIterator[Devnet]:
    """A devnet of the test module's own, for tests that move the chain clock, mining or nodes."""
    async with await Devnet.up(cache_dir=devnet_cache_dir()) as devnet:
        yield devnet


@pytest_asyncio.fixture(loop_scope="session")
async def chain(devnet: Devnet) -> AsyncIterator[ChainClient]:
    async with await ChainClient.connect(devnet.rpc_url, devnet.deployment.hub) as client:
        yield client
