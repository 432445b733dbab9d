"""Unit tests of ``TaskWork`` against a Docker engine that goes away, and a disk that fills up.

The engine is a fake (``FlakyEngine``: the calls ``compute`` and ``download_app`` make, with scripted
failures); the task folders are real temporary ones. The real engine stopped under a running app is
tests/faults/test_engine.py.
"""

from __future__ import annotations

import errno
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from tests.support.work import compute_work, describe_app
from worker.compute import (
    STDERR_FILE,
    STDOUT_FILE,
    ContainerResult,
    ContainerSpec,
    DockerUnavailableError,
    PullOutcome,
)
from worker.protocol.errors import StepFailed
from worker.protocol.status import ReplicateStatusCause as Cause
from worker.replicate import work as work_module
from worker.replicate.causes import DISK_FULL_CAUSE, cause_of, failures_of
from worker.replicate.ports import Stage
from worker.result import ResultZipFailed

IMAGE = "docker.io/x/y:1"


class FlakyEngine:
    """Fails the first ``lost`` runs (and pulls) as an engine that went away; answers ``ping`` after
    ``down_pings`` failed ones. Each successful run writes a deterministic result into /iexec_out."""

    def __init__(self, *, lost: int = 1, down_pings: int = 1) -> None:
        self.lost = lost
        self.down_pings = down_pings
        self.runs: list[str] = []
        self.pulls = 0
        self.pings = 0

    async def image_exists(self, image: str) -> bool:
        return True

    async def ping(self) -> str:
        self.pings += 1
        if self.pings <= self.down_pings:
            raise DockerUnavailableError("engine unreachable", cause="connection refused")
        return "20.10"

    async def pull(self, image: str, **_: Any) -> PullOutcome:
        self.pulls += 1
        if self.pulls <= self.lost:
            raise DockerUnavailableError(
                "pull cut", cause="ClientPayloadError: response payload is not completed"
            )
        return PullOutcome.PULLED

    async def run(self, spec: ContainerSpec) -> ContainerResult:
        self.runs.append(spec.name)
        out = next(b.host for b in spec.binds if b.container == "/iexec_out")
        seen = sorted(p.name for p in out.iterdir())
        (out / f"run-{len(self.runs)}").write_text("partial")
        if len(self.runs) <= self.lost:
            raise DockerUnavailableError("wait cut", cause="ServerDisconnectedError")
        (out / "result.txt").write_text("42")
        (out / "computed.json").write_text(json.dumps({"deterministic-output-path": "/iexec_out/result.txt"}))
        (out / "seen.json").write_text(json.dumps(seen))
        assert spec.log_dir is not None
        spec.log_dir.mkdir(parents=True, exist_ok=True)
        for name in (STDOUT_FILE, STDERR_FILE):
            (spec.log_dir / name).write_text("done\n")
        return ContainerResult(spec.name, 0, False, "done\n", "done\n", 1.0, logs_bytes=10, logs_saved=True)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(work_module, "ENGINE_RETRY_FIRST", 0.01)
    monkeypatch.setattr(work_module, "ENGINE_RETRY_MAX", 0.02)


def _work(tmp_path: Path, engine: FlakyEngine, **description: Any) -> tuple[work_module.TaskWork, str]:
    work = compute_work(cast(Any, engine), tmp_path / "tasks", "w")
    task_id = describe_app(work, IMAGE, "", **description)
    return work, task_id


async def test_a_run_the_engine_dropped_starts_over_once_it_answers_from_an_empty_output(
    tmp_path: Path,
) -> None:
    engine = FlakyEngine(lost=1, down_pings=2)
    work, task_id = _work(tmp_path, engine, final_deadline=int(time.time()) + 600)
    told: list[tuple[set[str], str | None]] = []
    work.on_engine_wait = lambda tasks, why: told.append((set(tasks), why))

    outcome = await work.compute(task_id)

    assert outcome.exit_code == 0
    assert outcome.failures == ()
    assert outcome.result_digest is not None
    assert engine.runs == [engine.runs[0]] * 2, "the same container name both times: never two containers"
    assert engine.pings == 3
    iexec_out = work.task_dir(task_id) / "output" / "iexec_out"
    assert json.loads((iexec_out / "seen.json").read_text()) == [], (
        "the second run starts from an empty output"
    )
    assert work.engine_waits == set()
    assert [tasks for tasks, _ in told] == [{task_id}, set()]
    assert "ServerDisconnectedError" in (told[0][1] or "")


async def test_a_run_the_engine_never_comes_back_for_fails_at_the_final_deadline_naming_dockerd(
    tmp_path: Path,
) -> None:
    engine = FlakyEngine(lost=1, down_pings=10**6)
    work, task_id = _work(tmp_path, engine, final_deadline=int(time.time()) + 1)

    with pytest.raises(StepFailed) as failed:
        await work.compute(task_id)

    assert failed.value.cause is Cause.APP_NOT_FOUND_LOCALLY
    assert "final deadline" in str(failed.value)
    assert "dockerd" in str(failed.value)
    assert len(engine.runs) == 1


async def test_a_pull_the_engine_dropped_is_done_again(tmp_path: Path) -> None:
    engine = FlakyEngine(lost=2, down_pings=0)
    work, task_id = _work(tmp_path, engine, final_deadline=int(time.time()) + 600)

    await work.download_app(task_id)

    assert engine.pulls == 3


async def test_an_app_failure_on_a_full_disk_is_the_workers_failure_and_its_output_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FillingEngine(FlakyEngine):
        async def run(self, spec: ContainerSpec) -> ContainerResult:
            out = next(b.host for b in spec.binds if b.container == "/iexec_out")
            (out / "big").write_text("x" * 100)
            return ContainerResult(spec.name, 1, False, "", "No space left on device", 1.0)

    free: Callable[[Path], int | None] = lambda _folder: 4096  # noqa: E731
    monkeypatch.setattr(work_module, "free_bytes", free)
    work, task_id = _work(tmp_path, FillingEngine(lost=0))

    with pytest.raises(StepFailed) as failed:
        await work.compute(task_id)

    assert failed.value.cause is DISK_FULL_CAUSE
    assert "is full" in str(failed.value)
    assert "IEXEC_WORKER_BASE_DIR" in str(failed.value)
    assert list((work.task_dir(task_id) / "output" / "iexec_out").iterdir()) == []


async def test_an_app_failure_with_room_left_on_the_disk_stays_the_apps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FailingEngine(FlakyEngine):
        async def run(self, spec: ContainerSpec) -> ContainerResult:
            return ContainerResult(spec.name, 3, False, "", "", 1.0)

    monkeypatch.setattr(work_module, "free_bytes", lambda _folder: 10**12)
    work, task_id = _work(tmp_path, FailingEngine(lost=0))

    outcome = await work.compute(task_id)

    assert outcome.exit_code == 3
    assert Cause.APP_COMPUTE_FAILED in outcome.failures


def test_an_adapter_error_caused_by_a_full_disk_is_the_disk_cause_whatever_the_stage() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/w/task/output/result.zip")
    try:
        try:
            raise full
        except OSError as exc:
            raise ResultZipFailed("cannot zip the result") from exc
    except ResultZipFailed as error:
        zip_error = error
    assert cause_of(Stage.COMPUTE, zip_error) is DISK_FULL_CAUSE
    with pytest.raises(StepFailed) as failed, failures_of(Stage.DOWNLOAD_DATA):
        raise full
    assert failed.value.cause is DISK_FULL_CAUSE
    assert "/w/task/output/result.zip" in str(failed.value)
    with pytest.raises(OSError, match="denied"), failures_of(Stage.DOWNLOAD_DATA):
        raise PermissionError(errno.EACCES, "denied")
