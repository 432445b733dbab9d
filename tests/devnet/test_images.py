"""End-to-end tests of the devnet app images, built on the real Docker engine from the host's busybox."""

from __future__ import annotations

import tarfile
import uuid
from collections.abc import AsyncIterator
from io import BytesIO

import pytest
import pytest_asyncio

from devnet.images import CONTENT_LABEL, IMAGES, build_app_image, build_context, ensure_images
from worker.compute import ContainerSpec, DockerEngine

pytestmark = pytest.mark.e2e


@pytest_asyncio.fixture
async def engine() -> AsyncIterator[DockerEngine]:
    async with await DockerEngine.open() as docker_engine:
        yield docker_engine


def test_build_context_is_deterministic_and_holds_busybox_and_the_script() -> None:
    context = build_context("echo one\n")

    assert context == build_context("echo one\n")
    assert context != build_context("echo two\n")
    with tarfile.open(fileobj=BytesIO(context)) as tar:
        members = {member.name: member for member in tar.getmembers()}
        entrypoint = tar.extractfile("rootfs/entrypoint.sh")
        assert entrypoint is not None
        assert entrypoint.read() == b"#!/bin/sh\necho one\n"
    assert members["rootfs/bin/busybox"].size > 100_000
    assert members["rootfs/bin/sh"].linkname == "busybox"


async def test_images_are_rebuilt_only_when_their_content_changes(engine: DockerEngine) -> None:
    tag = f"pytest-images/{uuid.uuid4().hex[:10]}:1"
    built: list[str] = []
    try:
        first = await build_app_image(engine, tag, "echo first\n")
        built.append(first)
        again = await build_app_image(engine, tag, "echo first\n")
        changed = await build_app_image(engine, tag, "echo changed\n")
        built.append(changed)

        assert again == first
        assert changed != first
        local = await engine.local_image(tag)
        assert local is not None
        assert local.id == changed
        assert local.labels[CONTENT_LABEL]
        result = await engine.run(
            ContainerSpec(name=f"pytest-images-{uuid.uuid4().hex[:10]}", image=tag, timeout=30)
        )
        assert result.stdout == "changed\n"
    finally:
        for image_id in built:
            await engine.remove_image(image_id)


async def test_named_images_are_all_built(engine: DockerEngine) -> None:
    built = await ensure_images(engine)

    assert set(built) == set(IMAGES)
    for tag, image_id in built.items():
        local = await engine.local_image(tag)
        assert local is not None
        assert local.id == image_id
