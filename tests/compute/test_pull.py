"""End-to-end tests of image pulls from real registries (Debian docker-registry on 127.0.0.1) through Docker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from devnet.images import HELLO, build_app_image
from tests.support import free_port
from tests.support.docker import REGISTRY_PASSWORD, REGISTRY_USER, Registries, docker_cli
from worker.compute import (
    ContainerSpec,
    DockerEngine,
    ImageDigestMismatch,
    ImageNotFoundError,
    ImagePullTimeoutError,
    PullOutcome,
    PullProgress,
    RegistryAuth,
    RegistryAuthError,
    RegistryUnreachableError,
)
from worker.protocol.errors import TransientError
from worker.protocol.status import ReplicateStatusCause
from worker.replicate.causes import cause_of
from worker.replicate.ports import Stage

pytestmark = pytest.mark.e2e


@pytest_asyncio.fixture
async def pushed(engine: DockerEngine, registries: Registries, unique: str) -> AsyncIterator[str]:
    """Repository path (without registry) of an image pushed to the registries and absent locally."""
    repository = f"pytest/{unique}"
    pushed_ref = f"{registries.open}/{repository}:1"
    # The unique script makes a layer no local image shares, so the pull has bytes to download.
    await build_app_image(engine, pushed_ref, f"echo {unique}\n")
    await docker_cli("push", pushed_ref)
    await docker_cli("rmi", pushed_ref)
    assert not await engine.image_exists(pushed_ref)
    yield repository
    for registry in (registries.open, registries.protected):
        _, ids = await docker_cli("images", "-q", f"{registry}/{repository}", check=False)
        for image_id in set(ids.split()):
            await docker_cli("rmi", "-f", image_id, check=False)


async def test_pull_downloads_the_image_and_reports_progress(
    engine: DockerEngine, registries: Registries, pushed: str, unique: str
) -> None:
    image = f"{registries.open}/{pushed}:1"
    progress: list[PullProgress] = []

    outcome = await engine.pull(image, pull_timeout=60, on_progress=progress.append)

    assert outcome is PullOutcome.PULLED
    assert await engine.image_exists(image)
    assert progress, "no progress reported"
    last = progress[-1]
    assert last.layers_total >= 1
    assert last.layers_done == last.layers_total
    assert max(event.bytes_downloaded for event in progress) > 100_000  # the compressed busybox layer
    assert last.bytes_downloaded == last.bytes_total
    result = await engine.run(ContainerSpec(name=unique, image=image, timeout=30))
    assert result.stdout == f"{unique}\n"


async def test_a_digest_already_present_is_not_pulled_again(
    engine: DockerEngine, registries: Registries, pushed: str
) -> None:
    await engine.pull(f"{registries.open}/{pushed}:1", pull_timeout=60)
    _, digest_ref = await docker_cli(
        "inspect", "--format", "{{index .RepoDigests 0}}", f"{registries.open}/{pushed}:1"
    )
    progress: list[PullProgress] = []

    outcome = await engine.pull(digest_ref.strip(), pull_timeout=60, on_progress=progress.append)

    assert outcome is PullOutcome.ALREADY_PRESENT
    assert progress == []


async def test_a_missing_tag_or_digest_is_not_found(
    engine: DockerEngine, registries: Registries, pushed: str
) -> None:
    with pytest.raises(ImageNotFoundError, match="does not exist") as missing_tag:
        await engine.pull(f"{registries.open}/{pushed}:missing", pull_timeout=60)
    assert not isinstance(missing_tag.value, TransientError)
    with pytest.raises(ImageNotFoundError):
        await engine.pull(f"{registries.open}/{pushed}@sha256:{'0' * 64}", pull_timeout=60)


async def test_a_protected_registry_needs_the_right_credentials(
    engine: DockerEngine, registries: Registries, pushed: str
) -> None:
    image = f"{registries.protected}/{pushed}:1"
    with pytest.raises(RegistryAuthError, match="registry credentials"):
        await engine.pull(image, pull_timeout=60)
    wrong = RegistryAuth(server=registries.protected, username=REGISTRY_USER, password="not-the-password")
    with pytest.raises(RegistryAuthError):
        await engine.pull(image, auth=wrong, pull_timeout=60)
    assert "not-the-password" not in repr(wrong)

    right = RegistryAuth(server=registries.protected, username=REGISTRY_USER, password=REGISTRY_PASSWORD)
    assert await engine.pull(image, auth=right, pull_timeout=60) is PullOutcome.PULLED
    assert await engine.image_exists(image)


async def test_an_unreachable_registry_is_a_transient_error(engine: DockerEngine, unique: str) -> None:
    with pytest.raises(RegistryUnreachableError, match="unreachable") as raised:
        await engine.pull(f"127.0.0.1:{free_port()}/pytest/{unique}:1", pull_timeout=60)
    assert isinstance(raised.value, TransientError)


async def test_a_failed_pull_never_falls_back_to_a_local_image(engine: DockerEngine, unique: str) -> None:
    """A local image of the same name is not the app's code: nothing says it is."""
    image = f"127.0.0.1:{free_port()}/pytest/{unique}:1"
    await docker_cli("tag", HELLO.tag, image)
    try:
        with pytest.raises(RegistryUnreachableError):
            await engine.pull(image, pull_timeout=60, local_fallback=False)
        # The worker's own images (SGX check, LAS, enclaves) may be built or loaded without a registry.
        assert await engine.pull(image, pull_timeout=60) is PullOutcome.LOCAL_FALLBACK
    finally:
        await docker_cli("rmi", image, check=False)


async def test_a_local_image_with_the_apps_checksum_is_used_without_a_pull(
    engine: DockerEngine, unique: str
) -> None:
    """Images built on the host (the devnet's) are registered with their image id: content-addressed."""
    image = f"127.0.0.1:{free_port()}/pytest/{unique}:1"
    await docker_cli("tag", HELLO.tag, image)
    local = await engine.local_image(image)
    assert local is not None
    try:
        outcome = await engine.pull(image, pull_timeout=60, checksum="0x" + local.id.removeprefix("sha256:"))
        assert outcome is PullOutcome.ALREADY_PRESENT
        with pytest.raises(RegistryUnreachableError):  # another checksum: the registry must be asked
            await engine.pull(image, pull_timeout=60, checksum="0x" + "ab" * 32, local_fallback=False)
    finally:
        await docker_cli("rmi", image, check=False)


async def test_a_pulled_image_must_be_the_one_registered_on_chain(
    engine: DockerEngine, registries: Registries, pushed: str
) -> None:
    image = f"{registries.open}/{pushed}:1"
    with pytest.raises(ImageDigestMismatch, match="not the app registered on chain") as mismatch:
        await engine.pull(image, pull_timeout=60, checksum="0x" + "ab" * 32)
    assert cause_of(Stage.DOWNLOAD_APP, mismatch.value) is ReplicateStatusCause.APP_IMAGE_DOWNLOAD_FAILED
    _, digest_ref = await docker_cli("inspect", "--format", "{{index .RepoDigests 0}}", image)
    manifest_digest = "0x" + digest_ref.strip().rsplit("@sha256:", 1)[1]
    await docker_cli("rmi", image)

    # What iexec-sdk and iapp register: 0x + the manifest digest of the pushed image.
    assert await engine.pull(image, pull_timeout=60, checksum=manifest_digest) is PullOutcome.PULLED


async def test_a_registry_that_never_answers_times_out(engine: DockerEngine, unique: str) -> None:
    connections: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)  # accept and stay silent: the engine waits on its TLS/HTTP handshake

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(ImagePullTimeoutError, match="did not finish within 1s"):
            await engine.pull(f"127.0.0.1:{port}/pytest/{unique}:1", pull_timeout=1.0)
        assert loop.time() - started < 5
    finally:
        for writer in connections:
            writer.close()
        server.close()
        with contextlib.suppress(ConnectionError):
            await server.wait_closed()
