"""Fixtures of the fault-injection suite: a whole platform per module, as the end-to-end tests have.

Each test injects one fault into a real part (the Docker engine, the node, the scheduler, the disk, the
worker process) and asserts the outcome from the chain and the scheduler. The slowest ones are marked
``slow_fault`` and run only with ``pytest --slow-faults`` (see tests/faults/README.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from devnet.images import ensure_images
from devnet.platform import Platform
from tests.support.devnet import devnet_cache_dir
from worker.compute import DockerEngine


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow-faults"):
        return
    skip = pytest.mark.skip(reason="slow fault test: run with pytest --slow-faults")
    for item in items:
        if item.get_closest_marker("slow_fault") is not None:
            item.add_marker(skip)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def platform(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    base = tmp_path_factory.mktemp("platform")
    async with await DockerEngine.open() as engine:
        await ensure_images(engine)
    up = await Platform.up(
        Path(base), cache_dir=devnet_cache_dir(), workers=3, ask_for_replicate_period_ms=300
    )
    try:
        yield up
    finally:
        await up.stop()
