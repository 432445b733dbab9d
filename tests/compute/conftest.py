"""Fixtures of the compute tests: the real Docker engine, the devnet images, and local registries."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from devnet.images import ensure_images
from tests.support import free_port, until
from worker.compute import DockerEngine

REGISTRY_BINARY = "/usr/bin/docker-registry"
# bcrypt of the password below: the registry's htpasswd accepts nothing else, and the password is a test value.
REGISTRY_USER = "tester"
REGISTRY_PASSWORD = "s3cret-for-tests"
_HTPASSWD = "tester:$2b$04$pFSe9s41.LoOf62QQsoTl.3ehw15KACPdGtUG9WhvubZg6QRCPzsu\n"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def engine() -> AsyncIterator[DockerEngine]:
    async with await DockerEngine.open() as docker_engine:
        await ensure_images(docker_engine)
        yield docker_engine


@pytest.fixture
def unique() -> str:
    """A name part no other test (or earlier run) uses."""
    return f"pytest-compute-{uuid.uuid4().hex[:10]}"


async def docker_cli(*args: str, check: bool = True) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "docker", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    text = output.decode()
    if check and process.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({process.returncode}): {text}")
    return process.returncode or 0, text


async def container_exists(name: str) -> bool:
    code, _ = await docker_cli("container", "inspect", name, check=False)
    return code == 0


@dataclass(frozen=True)
class Registries:
    """Two registries over one storage: ``open`` takes pushes, ``protected`` needs REGISTRY_USER's password."""

    open: str
    protected: str


async def _start_registry(config: Path, port: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        REGISTRY_BINARY,
        "serve",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )

    async def answers() -> bool:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/v2/") as response,
            ):
                return response.status in (200, 401)
        except aiohttp.ClientError:
            return False

    await until(answers, within=10, every=0.05, what=f"docker-registry listening on 127.0.0.1:{port}")
    return process


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
        processes.append(await _start_registry(root / "open.yml", open_port))
        processes.append(await _start_registry(root / "protected.yml", protected_port))
        yield Registries(open=f"127.0.0.1:{open_port}", protected=f"127.0.0.1:{protected_port}")
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            await process.wait()
