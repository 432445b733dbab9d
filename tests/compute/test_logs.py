"""End-to-end tests of the app logs on the real Docker engine: whole files, tails, budget, frame decoding."""

from __future__ import annotations

from pathlib import Path

import pytest

from devnet.images import CHATTY, SHELL
from worker.compute import STDERR_FILE, STDOUT_FILE, ContainerSpec, DockerEngine

pytestmark = pytest.mark.e2e


def _numbers(count: int) -> str:
    return "".join(f"{i}\n" for i in range(1, count + 1))


async def test_whole_logs_are_written_and_only_their_tails_kept_in_memory(
    engine: DockerEngine, tmp_path: Path, unique: str
) -> None:
    logs = tmp_path / "logs"
    spec = ContainerSpec(
        name=unique, image=CHATTY.tag, timeout=60, cmd=("30000", "20000"), network="none",
        log_dir=logs, log_max_bytes=10**6,
    )  # fmt: skip
    result = await engine.run(spec)

    stdout, stderr = _numbers(30000), _numbers(20000)
    assert result.logs_saved
    assert (logs / STDOUT_FILE).read_text() == stdout  # 168 894 characters, whole
    assert (logs / STDERR_FILE).read_text() == stderr
    assert result.logs_bytes == len(stdout) + len(stderr)
    assert result.stdout == stdout[-spec.log_tail_chars :]
    assert result.stderr == stderr[-spec.log_tail_chars :]


async def test_logs_larger_than_the_budget_are_not_kept(
    engine: DockerEngine, tmp_path: Path, unique: str
) -> None:
    logs = tmp_path / "logs"
    spec = ContainerSpec(
        name=unique, image=CHATTY.tag, timeout=60, cmd=("3000", "0"), network="none",
        log_dir=logs, log_max_bytes=1000,
    )  # fmt: skip
    result = await engine.run(spec)

    assert not result.logs_saved
    assert result.logs_bytes == len(_numbers(3000))
    assert not (logs / STDOUT_FILE).exists()
    assert not (logs / STDERR_FILE).exists()
    assert result.stdout == _numbers(3000)  # the tail is still there for the scheduler


async def test_each_engine_frame_is_decoded_on_its_own_as_the_reference_decodes_it(
    engine: DockerEngine, tmp_path: Path, unique: str
) -> None:
    """Malformed UTF-8 becomes U+FFFD; a character the engine splits between two frames (it cuts a long line
    every 16 KiB) becomes one U+FFFD per part, as docker-java's frames turned into Java strings do."""
    logs = tmp_path / "logs"
    script = "i=0; while [ $i -lt 16383 ]; do printf a; i=$((i+1)); done; printf '\\303\\251\\n\\377ok\\n'"
    spec = ContainerSpec(
        name=unique,
        image=SHELL.tag,
        timeout=60,
        cmd=(script,),
        network="none",
        log_dir=logs,
        log_max_bytes=10**6,
    )
    result = await engine.run(spec)

    expected = "a" * 16383 + "\ufffd\ufffd\n\ufffdok\n"
    assert (logs / STDOUT_FILE).read_bytes() == expected.encode()
    assert result.stdout == expected[-spec.log_tail_chars :]


async def test_without_a_log_folder_only_tails_are_kept(
    engine: DockerEngine, tmp_path: Path, unique: str
) -> None:
    spec = ContainerSpec(name=unique, image=CHATTY.tag, timeout=60, cmd=("10", "5"), network="none")
    result = await engine.run(spec)
    assert (result.stdout, result.stderr) == (_numbers(10), _numbers(5))
    assert not result.logs_saved
    assert result.logs_bytes == len(_numbers(10)) + len(_numbers(5))
