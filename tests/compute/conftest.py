"""Fixtures of the compute tests: the real Docker engine, the devnet images, and local registries."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from devnet.images import ensure_images
from tests.support import free_port
from tests.support.docker import _HTPASSWD, Registries, start_registry
from worker.compute import DockerEngine


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def engine() -> AsyncIterator[DockerEngine]:
    async with await DockerEngine.open() as docker_engine:
        await ensure_images(docker_engine)
        yield docker_engine


@pytest.fixture
def unique() -> str:
    """A name part no other test (or earlier run) uses."""
    return f"pytest-compute-{uuid.uuid4().hex[:10]}"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def registries(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Registries]:
    root = tmp_path_factory.mktemp("registry")
    (root / "htpasswd").write_text(_HTPASSWD)
    open_port, protected_port = free_port(), free_port()
    storage = f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
    (root / "open.yml").write_text(f"version: 0.1\n{storage}http:\n  addr: 127.0.0.1:{open_port}\n")
    (root / "protected.yml").write_text(
        f"version: 0.1\n{storage}http:\n  addr: 127.0.0.1:{protected_port}\n"
        f"auth:\n  htpasswd:\n    realm: tests\n    path: {root / 'htpasswd'}\n"
    )
    processes: list[asyncio.subprocess.Process] = []
    try:
        processes.append(await start_registry(root / "open.yml", open_port))
        processes.append(await start_registry(root / "protected.yml", protected_port))
        yield Registries(open=f"127.0.0.1:{open_port}", protected=f"127.0.0.1:{protected_port}")
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            await process.wait()
