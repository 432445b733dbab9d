"""A real app that attacks the worker from inside its container (real Docker engine, devnet images).

The app plants symbolic links in ``/iexec_out`` under the names the worker writes after the run
(stdout.txt, stderr.txt), pointing at files of the host; the worker must replace the links with its
own files and leave the targets untouched.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from devnet.images import SHELL
from tests.support.work import compute_work, describe_app
from worker.compute import DockerEngine
from worker.compute.sandbox import GIB, Sandbox, SandboxProfile, sandbox_for
from worker.protocol.status import ReplicateStatus, ReplicateStatusCause
from worker.result import write_error_result

pytestmark = pytest.mark.e2e


async def test_links_planted_by_the_app_are_replaced_never_written_through(
    engine: DockerEngine, tmp_path: Path, unique: str
) -> None:
    victims = {name: tmp_path / f"host-{name}" for name in ("stdout.txt", "stderr.txt", "error.txt")}
    for victim in victims.values():
        victim.write_text("host file, must stay as it is\n")
    work = compute_work(engine, tmp_path / "tasks", unique)
    plant = " && ".join(f"ln -s {victim} /iexec_out/{name}" for name, victim in victims.items())
    script = (
        f"{plant} && echo result > /iexec_out/result.txt"
        ' && echo {\\"deterministic-output-path\\":\\"/iexec_out/result.txt\\"} > /iexec_out/computed.json'
        " && echo to-stdout && echo to-stderr >&2"
    )
    task_id = describe_app(work, SHELL.tag, f"'{script}'")

    outcome = await work.compute(task_id)

    assert outcome.exit_code == 0
    for victim in victims.values():
        assert victim.read_text() == "host file, must stay as it is\n"
    iexec_out = work.task_dir(task_id) / "output" / "iexec_out"
    for name, expected in (("stdout.txt", "to-stdout\n"), ("stderr.txt", "to-stderr\n")):
        info = os.lstat(iexec_out / name)
        assert stat.S_ISREG(info.st_mode), f"{name} is still the app's link"
        assert (iexec_out / name).read_text() == expected
    # The task folder is the worker's alone; the app saw only its two mounts.
    assert stat.S_IMODE(os.stat(work.task_dir(task_id)).st_mode) == 0o700

    # An error result written later into the same folder replaces the app's error.txt link too.
    write_error_result(
        iexec_out, ReplicateStatus.COMPUTE_FAILED, [(ReplicateStatusCause.APP_COMPUTE_FAILED, "")]
    )
    assert victims["error.txt"].read_text() == "host file, must stay as it is\n"
    assert stat.S_ISREG(os.lstat(iexec_out / "error.txt").st_mode)


def _app(script: str) -> str:
    """``script`` then a result and its computed.json, as one argument of the shell image."""
    return (
        f"'{script} ; echo done > /iexec_out/result.txt"
        ' && echo {\\"deterministic-output-path\\":\\"/iexec_out/result.txt\\"} > /iexec_out/computed.json\''
    )


async def test_strict_profile_read_only_root_bounded_tmp_non_root_bounded_memory(
    engine: DockerEngine, tmp_path: Path, unique: str
) -> None:
    sandbox = sandbox_for(SandboxProfile.STRICT, slots=2, cpus=2, memory=4 * GIB, network="none")
    work = compute_work(engine, tmp_path / "tasks", unique, sandbox)
    probe = (
        "touch /root-write 2>/dev/null && echo root-writable || echo root-read-only;"
        " echo x > /tmp/scratch && echo tmp-writable;"
        " echo uid=$(id -u);"
        " cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null | head -1"
    )
    task_id = describe_app(work, SHELL.tag, _app(probe))

    outcome = await work.compute(task_id)

    lines = outcome.stdout.split()
    assert lines[:3] == [
        "root-read-only",
        "tmp-writable",
        f"uid={sandbox.user and sandbox.user.split(':')[0]}",
    ]
    assert lines[2] != "uid=0"
    assert int(lines[3]) == sandbox.memory_bytes


async def test_an_app_that_writes_past_its_output_bound_is_killed(
    engine: DockerEngine, tmp_path: Path, unique: str
) -> None:
    work = compute_work(
        engine, tmp_path / "tasks", unique, Sandbox(network="none", output_max_bytes=1024 * 1024)
    )
    # 8 MiB then a long sleep: only the bound ends it.
    task_id = describe_app(
        work, SHELL.tag, _app("dd if=/dev/zero of=/iexec_out/fill bs=1M count=8; sleep 60")
    )

    outcome = await work.compute(task_id)

    assert outcome.failures == (ReplicateStatusCause.APP_COMPUTE_FAILED,)
    assert outcome.exit_code == 137  # killed well before its 60 s sleep ended
    assert outcome.result_digest is None  # an output cut short is not contributed
