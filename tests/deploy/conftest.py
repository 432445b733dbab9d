"""Fixtures of the deploy tests: the images, built once per session, and a platform per module.

The worker image is built by `make image`, as an operator builds it; the session then uses it under a
tag of its own, so a build by a concurrent run cannot change the image under a running test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest_asyncio

from devnet.images import ensure_images
from devnet.platform import Platform
from tests.support.deploy import Ran, readme_command, run
from tests.support.devnet import devnet_cache_dir
from worker.compute import DockerEngine

# Seconds a test that uses an image may take, its build included: a cold build makes the Debian bases
# (debootstrap, about a minute each) and the wheels; a warm one takes seconds.
IMAGE_BUILD_TIMEOUT = 900


@dataclass(frozen=True)
class WorkerImage:
    tag: str  # this session's own tag of the image `make image` built
    built: Ran  # the output and duration of `make image`


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def worker_image() -> AsyncIterator[WorkerImage]:
    built = await run(*readme_command("make image").split(), within=IMAGE_BUILD_TIMEOUT)
    made = [line for line in built.output.splitlines() if line.startswith("iexec-worker:")][-1]
    image_id = (await run("docker", "image", "inspect", "-f", "{{.Id}}", made)).output.strip()
    tag = f"iexec-worker:e2e-{uuid.uuid4().hex[:8]}"
    await run("docker", "tag", image_id, tag)
    try:
        yield WorkerImage(tag, built)
    finally:
        await run("docker", "image", "rm", tag, check=False)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def monitoring_images() -> dict[str, str]:
    """PROMETHEUS_IMAGE and ALERTMANAGER_IMAGE made from Debian packages (no image can be pulled here)."""
    made = await run("scripts/image.sh", "monitoring", within=IMAGE_BUILD_TIMEOUT)
    images = dict(line.split("=", 1) for line in made.output.splitlines() if "_IMAGE=" in line)
    assert set(images) == {"PROMETHEUS_IMAGE", "ALERTMANAGER_IMAGE"}, made.output
    return images


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def platform(tmp_path_factory: object) -> AsyncIterator[Platform]:
    base = Path(str(tmp_path_factory.mktemp("platform")))  # type: ignore[attr-defined]
    async with await DockerEngine.open() as engine:
        await ensure_images(engine)
    up = await Platform.up(base, cache_dir=devnet_cache_dir(), workers=2, ask_for_replicate_period_ms=300)
    try:
        yield up
    finally:
        await up.stop()
