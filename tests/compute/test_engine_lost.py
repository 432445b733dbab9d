"""Unit tests of what the adapter raises when the engine goes away in the middle of an answer, and of log
files on a full disk.

The engine is a fake (``GoneDocker``: aiodocker's surface that ``DockerEngine`` uses, raising the transport
errors aiohttp raises when dockerd stops); the full disk is ``/dev/full``. The real engine stopped under a
run is tests/faults/test_engine.py.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

from worker.compute import ContainerSpec, DockerEngine, DockerUnavailableError
from worker.compute.docker import _LogSink
from worker.protocol.errors import TransientError

CUT = aiohttp.ClientPayloadError("Response payload is not completed")
GONE = aiohttp.ServerDisconnectedError()


class GoneContainer:
    def __init__(self, error: Exception) -> None:
        self._error = error

    async def wait(self) -> dict[str, Any]:
        raise self._error


class GoneImages:
    def __init__(self, error: Exception) -> None:
        self._error = error

    async def inspect(self, image: str) -> dict[str, Any]:
        raise self._error

    async def _events(self) -> AsyncIterator[dict[str, Any]]:
        yield {"status": "Pulling fs layer", "id": "a"}
        raise self._error

    def pull(self, reference: str, **_: Any) -> AsyncIterator[dict[str, Any]]:
        return self._events()


class GoneDocker:
    def __init__(self, error: Exception) -> None:
        self.images = GoneImages(error)


def _spec(tmp_path: Path) -> ContainerSpec:
    return ContainerSpec(name="w-task", image="app:1", timeout=60.0, log_dir=tmp_path / "logs")


@pytest.mark.parametrize("error", [CUT, GONE, ConnectionResetError(errno.ECONNRESET, "reset")])
async def test_a_container_wait_cut_by_the_engine_is_engine_unavailable_with_its_cause(
    tmp_path: Path, error: Exception
) -> None:
    engine = DockerEngine(cast(Any, GoneDocker(error)), owns_client=False)

    with pytest.raises(DockerUnavailableError) as lost:
        await engine._wait(GoneContainer(error), _spec(tmp_path))

    assert isinstance(lost.value, TransientError)
    assert lost.value.cause
    assert type(error).__name__ in lost.value.cause
    assert "dockerd" in str(lost.value)


@pytest.mark.parametrize("error", [CUT, GONE])
async def test_a_pull_stream_cut_by_the_engine_is_engine_unavailable_not_a_registry_error(
    error: Exception,
) -> None:
    engine = DockerEngine(cast(Any, GoneDocker(error)), owns_client=False)

    with pytest.raises(DockerUnavailableError) as lost:
        await engine._pull_once("registry.example.org/app:1", None, None)

    assert "pull of registry.example.org/app:1" in str(lost.value)


async def test_a_short_call_cut_by_the_engine_is_engine_unavailable() -> None:
    engine = DockerEngine(cast(Any, GoneDocker(CUT)), owns_client=False)

    with pytest.raises(DockerUnavailableError):
        await engine.image_exists("app:1")


async def test_log_files_on_a_full_disk_are_given_up_and_the_run_goes_on(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    sink = _LogSink(spec)
    await sink.open()
    assert sink._files is not None
    for opened in sink._files:
        opened.close()
    full = Path("/dev/full").open("wb", buffering=0)  # noqa: SIM115, ASYNC230 - the sink closes it
    sink._files = (full, full)

    await sink.add(1, b"x" * (2 << 20))

    assert await sink.close() is False
    assert sink.write_error is not None
    assert sink.write_error.errno == errno.ENOSPC
    assert sink.tails()[0].endswith("x")
    assert not (tmp_path / "logs" / "stdout.txt").exists()
