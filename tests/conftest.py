"""Fixtures shared by every test package.

``devnet`` is one anvil with PoCo deployed, shared by the whole session and warm-started from the cached deployed
state (a fresh deployment happens only when the cache is missing or stale). Tests share its chain: compare balances
as deltas, use fresh orders (the toolkit salts them), and do not move the chain clock; a test that needs to, or
that needs a pristine chain, starts its own ``Devnet.up(cache_dir=devnet_cache_dir())`` (about 0.1 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiodocker
import pytest
import pytest_asyncio

from devnet.contracts import Devnet
from devnet.toolkit import Toolkit
from tests.support.devnet import devnet_cache_dir

# Fixtures that start a service (anvil, dockerd's containers, docker-registry, a platform): only tests
# marked e2e may use them, so `pytest -m "not e2e"` (make test-unit) needs no root, Docker nor chain.
SERVICE_FIXTURES = frozenset(
    {"devnet", "net", "engine", "registries", "platform", "worker_image", "monitoring_images"}
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow-faults", action="store_true", help="also run the fault tests marked slow_fault (tests/faults)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        uses = SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses and item.get_closest_marker("e2e") is None:
            raise pytest.UsageError(
                f"{item.nodeid} uses {sorted(uses)}, which start services: mark it e2e (pytestmark = pytest.mark.e2e)"
            )


@pytest.fixture(autouse=True)
def _services_only_in_e2e(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked e2e that starts a process or talks to Docker fails, naming the fix."""
    if request.node.get_closest_marker("e2e") is not None:
        return

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError(f"{request.node.nodeid} starts a service (a process or Docker): mark it e2e")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", refuse)
    monkeypatch.setattr(aiodocker, "Docker", refuse)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def devnet() -> AsyncIterator[Devnet]:
    async with await Devnet.up(cache_dir=devnet_cache_dir()) as net:
        yield net


@pytest.fixture
def toolkit(devnet: Devnet) -> Toolkit:
    return Toolkit(devnet.w3, devnet.deployment)
