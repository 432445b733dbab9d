"""Standard post-compute: names, zip, computed.json copy, size bound (unit tests on temporary folders)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from worker.protocol.status import ReplicateStatusCause
from worker.replicate.causes import cause_of
from worker.replicate.ports import Stage
from worker.result import ResultError, check_file_names, run_standard_post_compute, zip_folder


@pytest.fixture
def out(tmp_path: Path) -> Path:
    iexec_out = tmp_path / "iexec_out"
    iexec_out.mkdir()
    (iexec_out / "computed.json").write_text('{"deterministic-output-path": "/iexec_out/result.txt"}')
    (iexec_out / "result.txt").write_text("the result")
    return tmp_path


def test_zip_holds_files_relative_to_iexec_out(out: Path) -> None:
    (out / "iexec_out" / "sub" / "deeper").mkdir(parents=True)
    (out / "iexec_out" / "sub" / "deeper" / "x.txt").write_text("x" * 1000)
    (out / "iexec_out" / "empty-dir").mkdir()

    result = run_standard_post_compute(out)

    assert result.zip_path == out / "iexec_out.zip"
    with zipfile.ZipFile(result.zip_path) as archive:
        assert sorted(archive.namelist()) == ["computed.json", "result.txt", "sub/deeper/x.txt"]
        assert archive.read("sub/deeper/x.txt") == b"x" * 1000
        assert archive.read("result.txt") == b"the result"
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}
        assert archive.testzip() is None
    assert result.computed_path.read_bytes() == (out / "iexec_out" / "computed.json").read_bytes()


def test_link_out_of_the_folder_becomes_an_empty_entry(out: Path) -> None:
    (out / "iexec_out" / "passwd").symlink_to("/etc/passwd")
    (out / "iexec_out" / "etc").symlink_to("/etc")
    result = run_standard_post_compute(out)
    with zipfile.ZipFile(result.zip_path) as archive:
        assert archive.read("passwd") == b""
        assert archive.read("etc") == b""
        assert not any(name.startswith("etc/") for name in archive.namelist())
    assert b"root:" not in result.zip_path.read_bytes()


def test_linked_computed_file_is_refused(out: Path) -> None:
    (out / "iexec_out" / "computed.json").unlink()
    (out / "iexec_out" / "computed.json").symlink_to("/etc/passwd")
    with pytest.raises(ResultError) as caught:
        run_standard_post_compute(out)
    assert cause_of(Stage.COMPUTE, caught.value) is ReplicateStatusCause.POST_COMPUTE_COMPUTED_FILE_NOT_FOUND
    assert not (out / "computed.json").exists()


@pytest.mark.parametrize(
    ("relative", "too_long"),
    [
        ("a" * 31, False),
        ("a" * 32, True),
        ("sub/" + "b" * 32, True),
        # Folders are not checked, as iexec-worker's visitor checks files only.
        ("c" * 32 + "/short.txt", False),
        ("d" * 40 + "/" + "e" * 32, True),
        # 16 code points but 32 UTF-16 code units, as Java counts them.
        ("\U0001f600" * 16, True),
        ("é" * 31, False),
    ],
)
def test_names_are_limited_to_31_characters(out: Path, relative: str, too_long: bool) -> None:
    path = out / "iexec_out" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    if too_long:
        with pytest.raises(ResultError, match="limited to 31") as caught:
            run_standard_post_compute(out)
        assert (
            cause_of(Stage.COMPUTE, caught.value)
            is ReplicateStatusCause.POST_COMPUTE_TOO_LONG_RESULT_FILE_NAME
        )
        assert not (out / "iexec_out.zip").exists()
    else:
        check_file_names(out / "iexec_out")
        run_standard_post_compute(out)


def test_every_long_file_name_is_named_and_links_count_as_files(out: Path) -> None:
    iexec_out = out / "iexec_out"
    (iexec_out / ("f" * 32)).write_text("x")
    (iexec_out / ("g" * 33)).symlink_to(iexec_out / "computed.json")
    (iexec_out / ("h" * 40)).mkdir()
    with pytest.raises(ResultError) as caught:
        check_file_names(iexec_out)
    message = str(caught.value)
    assert "2 file(s)" in message
    assert "f" * 32 in message
    assert "g" * 33 in message
    assert "h" * 40 not in message


def test_output_size_limit(out: Path) -> None:
    (out / "iexec_out" / "noise.bin").write_bytes(os.urandom(200_000))
    with pytest.raises(ResultError, match="maximum result size of 100000 bytes") as caught:
        run_standard_post_compute(out, max_zip_bytes=100_000)
    assert cause_of(Stage.COMPUTE, caught.value) is ReplicateStatusCause.POST_COMPUTE_OUT_FOLDER_ZIP_FAILED
    assert not (out / "iexec_out.zip").exists()

    result = run_standard_post_compute(out, max_zip_bytes=300_000)
    assert result.zip_path.stat().st_size <= 300_000
    with zipfile.ZipFile(result.zip_path) as archive:
        assert len(archive.read("noise.bin")) == 200_000


def test_empty_folder_gives_an_empty_zip_but_no_computed_file(tmp_path: Path) -> None:
    (tmp_path / "iexec_out").mkdir()
    zip_folder(tmp_path / "iexec_out", tmp_path / "iexec_out.zip")
    with zipfile.ZipFile(tmp_path / "iexec_out.zip") as archive:
        assert archive.namelist() == []
    with pytest.raises(ResultError, match=r"wrote no computed\.json") as caught:
        run_standard_post_compute(tmp_path)
    # iexec-worker's name for a computed.json that cannot be copied next to the zip.
    assert (
        cause_of(Stage.COMPUTE, caught.value) is ReplicateStatusCause.POST_COMPUTE_SEND_COMPUTED_FILE_FAILED
    )


def test_missing_folder_is_an_unknown_issue(tmp_path: Path) -> None:
    with pytest.raises(ResultError) as caught:
        run_standard_post_compute(tmp_path)
    assert cause_of(Stage.COMPUTE, caught.value) is ReplicateStatusCause.POST_COMPUTE_FAILED_UNKNOWN_ISSUE


def test_fifo_is_zipped_empty_without_blocking(out: Path) -> None:
    os.mkfifo(out / "iexec_out" / "pipe")
    result = run_standard_post_compute(out)
    with zipfile.ZipFile(result.zip_path) as archive:
        assert archive.read("pipe") == b""
