"""Files the worker writes into a folder an app controlled: links, folders and races left by the app."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from worker.result import (
    UnsafeResultPath,
    copy_computed_file,
    create_new_file,
    run_standard_post_compute,
    write_new_file,
)


def test_a_link_left_under_the_name_is_replaced_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "authorized_keys"
    target.write_text("ssh-ed25519 AAAA host\n")
    out = tmp_path / "iexec_out"
    out.mkdir()
    (out / "stdout.txt").symlink_to(target)

    write_new_file(out, "stdout.txt", b"app output\n")

    assert target.read_text() == "ssh-ed25519 AAAA host\n"
    assert stat.S_ISREG(os.lstat(out / "stdout.txt").st_mode)
    assert (out / "stdout.txt").read_bytes() == b"app output\n"


def test_a_dangling_link_is_not_followed_to_create_its_target(tmp_path: Path) -> None:
    out = tmp_path / "iexec_out"
    out.mkdir()
    (out / "stderr.txt").symlink_to(tmp_path / "would-be-created")

    write_new_file(out, "stderr.txt", b"x")

    assert not (tmp_path / "would-be-created").exists()


def test_a_hard_link_is_replaced_not_rewritten(tmp_path: Path) -> None:
    target = tmp_path / "journal.sqlite3"
    target.write_bytes(b"journal")
    out = tmp_path / "iexec_out"
    out.mkdir()
    os.link(target, out / "error.txt")

    write_new_file(out, "error.txt", b"error")

    assert target.read_bytes() == b"journal"


def test_a_folder_under_the_name_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "iexec_out"
    (out / "computed.json").mkdir(parents=True)

    with pytest.raises(UnsafeResultPath, match="left a folder"):
        write_new_file(out, "computed.json", b"{}")


def test_the_folder_itself_is_not_followed_when_it_is_a_link(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir()
    (tmp_path / "iexec_out").symlink_to(real)

    with pytest.raises(UnsafeResultPath, match="without following links"):
        write_new_file(tmp_path / "iexec_out", "stdout.txt", b"x")
    assert list(real.iterdir()) == []


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x"])
def test_only_plain_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeResultPath, match="plain file name"), create_new_file(tmp_path, name):
        pass


def test_post_compute_replaces_links_at_the_zip_and_computed_names(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    output = tmp_path / "output"
    (output / "iexec_out").mkdir(parents=True)
    (output / "iexec_out" / "computed.json").write_text('{"deterministic-output-path":"/iexec_out"}')
    (output / "iexec_out.zip").symlink_to(victim)
    (output / "computed.json").symlink_to(victim)

    run_standard_post_compute(output)
    copy_computed_file(output / "iexec_out" / "computed.json", output / "computed.json")

    assert victim.read_text() == "keep"
    assert stat.S_ISREG(os.lstat(output / "iexec_out.zip").st_mode)
    assert stat.S_ISREG(os.lstat(output / "computed.json").st_mode)
