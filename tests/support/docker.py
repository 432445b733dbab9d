"""Docker helpers of the tests: the docker CLI, containers by name, and local registries (docker-registry on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.support import until

REGISTRY_BINARY = "/usr/bin/docker-registry"

REGISTRY_USER = "tester"

REGISTRY_PASSWORD = "s3cret-for-tests"

_HTPASSWD = "tester:$2b$04$pFSe9s41.LoOf62QQsoTl.3ehw15KACPdGtUG9WhvubZg6QRCPzsu\n"


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


async def start_registry(config: Path, port: int) -> asyncio.subprocess.Process:
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
