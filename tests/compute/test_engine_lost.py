"""Unit tests of what the adapter raises when the engine goes away in the middle of an answer, and of log
files on a full disk.

The engine is a fake (``GoneDocker``: aiodocker's surface that ``DockerEngine`` uses, raising the transport
errors aiohttp raises when dockerd stops); the full disk is ``/dev/full``. The real engine stopped under a
run is tests/faults/test_engine.py.
"""

from __future__ import annotations

import contextlib
import errno
import json
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


class EventsDocker:
    """Answers ``GET /events`` with the given lines, and records the filters asked."""

    def __init__(self, *lines: str) -> None:
        self._body = "\n".join(lines)
        self.params: dict[str, str] = {}

    @contextlib.asynccontextmanager
    async def _query(self, path: str, *, params: dict[str, str]) -> AsyncIterator[Any]:
        assert path == "events"
        self.params = params
        body = self._body

        class Response:
            async def text(self) -> str:
                return body

        yield Response()


class Ended:
    id = "c0ffee"


async def test_an_app_killed_by_a_stopping_engine_is_engine_unavailable_not_a_failed_app(
    tmp_path: Path,
) -> None:
    kill = json.dumps({"status": "kill", "Actor": {"ID": "c0ffee", "Attributes": {"signal": "15"}}})
    docker = EventsDocker(kill)
    engine = DockerEngine(cast(Any, docker), owns_client=False)

    with pytest.raises(DockerUnavailableError, match="signal 15"):
        await engine._not_stopped_by_engine(Ended(), _spec(tmp_path), since=1000.0)

    assert json.loads(docker.params["filters"]) == {"container": ["c0ffee"], "event": ["kill"]}
    assert docker.params["since"] == "999"


async def test_an_app_that_failed_on_its_own_left_no_kill_event(tmp_path: Path) -> None:
    engine = DockerEngine(cast(Any, EventsDocker()), owns_client=False)
    await engine._not_stopped_by_engine(Ended(), _spec(tmp_path), since=1000.0)
