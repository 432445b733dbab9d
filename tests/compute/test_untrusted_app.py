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
