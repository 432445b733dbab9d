"""End-to-end fixtures: a whole platform (anvil + PoCo, development scheduler, result proxy) and real workers.

Everything here is real: the chain, the contracts, Docker and HTTP on 127.0.0.1. Each test module gets
its own platform, because the scheduler owns every deal of its workerpool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from devnet.images import ensure_images
from devnet.platform import Platform
from tests.support.devnet import devnet_cache_dir
from worker.compute import DockerEngine


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def platform(tmp_path_factory: object) -> AsyncIterator[Platform]:
    base = Path(str(tmp_path_factory.mktemp("platform")))  # type: ignore[attr-defined]
    async with await DockerEngine.open() as engine:
        await ensure_images(engine)
    up = await Platform.up(base, cache_dir=devnet_cache_dir(), workers=3, ask_for_replicate_period_ms=300)
    try:
        yield up
    finally:
        await up.stop()
