"""Unit tests of the file side of ``TaskWork``: start-up purge, logs put into the result, developer logs.

Only the task folders are real (temporary ones); the adapters ``TaskWork`` would call are absent (None),
as these methods never reach them.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from worker.compute.sandbox import Sandbox
from worker.data import DownloadLimits
from worker.replicate.work import (
    TaskWork,
    WorkSettings,
    _place_log,
    developer_block,
    directory_tree,
)

TASK_A = "0x" + "aa" * 32
TASK_B = "0x" + "bb" * 32


def _work(root: Path) -> TaskWork:
    settings = WorkSettings(
        worker_name="w",
        task_root=root,
        gas_price_cap=1,
        limits=Sandbox(),
        download_limits=DownloadLimits(),
        result_repository_url="http://127.0.0.1:1",
    )
    absent = cast(Any, None)
    account = cast(Any, SimpleNamespace(address="0x" + "11" * 20))
    return TaskWork(settings, absent, absent, absent, absent, account, absent)


async def test_start_up_purge_keeps_resumed_tasks_files_links_and_the_store(tmp_path: Path) -> None:
    root = tmp_path / "w"
    for folder in (TASK_A, TASK_B.upper().replace("0X", "0x"), "stray", "db"):
        (root / folder / "output").mkdir(parents=True)
    (root / "db" / "state.sqlite3").write_text("journal")
    (root / "notes.txt").write_text("kept")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)

    removed = await _work(root).purge_leftovers({TASK_B}, keep_path=root / "db" / "state.sqlite3")

    assert removed == [TASK_A, "stray"]
    assert sorted(os.listdir(root)) == sorted(["db", "link", "notes.txt", TASK_B.upper().replace("0X", "0x")])
    assert outside.is_dir()
    assert (root / "db" / "state.sqlite3").read_text() == "journal"


async def test_start_up_purge_without_a_task_root_does_nothing(tmp_path: Path) -> None:
    assert await _work(tmp_path / "missing").purge_leftovers(set()) == []


def test_a_log_replaces_what_the_app_left_under_its_name_never_following_a_link(tmp_path: Path) -> None:
    iexec_out, logs = tmp_path / "iexec_out", tmp_path / "logs"
    iexec_out.mkdir()
    logs.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (iexec_out / "stdout.txt").symlink_to(victim)
    (logs / "stdout.txt").write_text("the app's stdout\n")
    (logs / "stderr.txt").write_text("")
    (iexec_out / "stderr.txt").write_text("written by the app")

    _place_log(logs / "stdout.txt", iexec_out / "stdout.txt")
    _place_log(logs / "stderr.txt", iexec_out / "stderr.txt")

    assert not (iexec_out / "stdout.txt").is_symlink()
    assert (iexec_out / "stdout.txt").read_text() == "the app's stdout\n"
    assert victim.read_text() == "untouched"
    # An empty log is not written, as the reference skips it: the app's own file stays.
    assert (iexec_out / "stderr.txt").read_text() == "written by the app"


def test_directory_tree_is_drawn_as_the_reference_draws_it(tmp_path: Path) -> None:
    out = tmp_path / "iexec_out"
    (out / "sub").mkdir(parents=True)
    (out / "computed.json").write_text("{}")
    (out / "sub" / "a.txt").write_text("a")
    assert directory_tree(out) == "├── iexec_out/\n│   ├── computed.json\n│   ├── sub/\n│   │   ├── a.txt\n"
    assert directory_tree(tmp_path / "missing") == ""


def test_developer_block_has_the_reference_layout() -> None:
    block = developer_block("IN", "OUT", "so", "se")
    assert block == (
        "\n#################### DEV MODE ####################\n"
        "iexec_in folder\n--------------------\nIN\n\n"
        "iexec_out folder\n--------------------\nOUT\n\n"
        "stdout\n--------------------\nso\n\n"
        "stderr\n--------------------\nse\n"
        "#################### DEV MODE ####################\n\n"
    )
