"""Result digest rules beyond the shared vectors (unit tests on temporary folders)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from eth_utils.crypto import keccak

from worker.protocol.status import ReplicateStatusCause
from worker.replicate.causes import cause_of
from worker.replicate.ports import Stage
from worker.result import ComputedFile, ResultError, compute_result_digest, compute_result_digest_async
from worker.result import digest as digest_module

NOT_FOUND = ReplicateStatusCause.POST_COMPUTE_RESULT_DIGEST_COMPUTATION_FAILED
AS_DIRECTORY = ComputedFile(deterministic_output_path="/iexec_out")


def _expected_directory_digest(*contents: bytes) -> str:
    return "0x" + keccak(b"".join(hashlib.sha256(c).digest() for c in contents)).hex()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    (tmp_path / "iexec_out").mkdir()
    return tmp_path


def test_children_sorted_by_utf16_code_units(out: Path) -> None:
    # Code point order would put U+1F600 after U+FFFD; UTF-16 puts its surrogates (0xD83D) first.
    names = ["\ufffd", "a", "\U0001f600", "B", "_", "é", ".hidden"]
    for name in names:
        (out / "iexec_out" / name).write_text(name)
    java_order = [".hidden", "B", "_", "a", "é", "\U0001f600", "\ufffd"]
    expected = _expected_directory_digest(*(n.encode() for n in java_order))
    assert compute_result_digest(out, AS_DIRECTORY, callback=False) == expected


def test_sub_directories_contribute_nothing(out: Path) -> None:
    (out / "iexec_out" / "a.txt").write_text("a")
    (out / "iexec_out" / "sub").mkdir()
    (out / "iexec_out" / "sub" / "deep.txt").write_text("ignored")
    assert compute_result_digest(out, AS_DIRECTORY, callback=False) == _expected_directory_digest(b"a")


def test_link_to_a_file_inside_is_followed(out: Path) -> None:
    (out / "iexec_out" / "sub").mkdir()
    (out / "iexec_out" / "sub" / "data").write_text("linked")
    (out / "iexec_out" / "link").symlink_to(out / "iexec_out" / "sub" / "data")
    assert compute_result_digest(out, AS_DIRECTORY, callback=False) == _expected_directory_digest(b"linked")
    as_file = ComputedFile(deterministic_output_path="/iexec_out/link")
    assert compute_result_digest(out, as_file, callback=False) == "0x" + hashlib.sha256(b"linked").hexdigest()


def test_link_out_of_the_folder_is_never_read(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (out / "iexec_out" / "a.txt").write_text("a")
    (out / "iexec_out" / "passwd").symlink_to("/etc/passwd")
    opened: list[str] = []
    real_open = os.open

    def spy(path: str, *args: int) -> int:
        opened.append(str(path))
        return real_open(path, *args)

    monkeypatch.setattr(os, "open", spy)
    with pytest.raises(ResultError, match="link leading out") as caught:
        compute_result_digest(out, AS_DIRECTORY, callback=False)
    assert cause_of(Stage.COMPUTE, caught.value) is NOT_FOUND
    as_file = ComputedFile(deterministic_output_path="/iexec_out/passwd")
    with pytest.raises(ResultError, match="link leading out"):
        compute_result_digest(out, as_file, callback=False)
    assert "/etc/passwd" not in opened


def test_path_escaping_iexec_out_is_refused(out: Path) -> None:
    (out / "secret").write_text("not a result")
    for path in ("/iexec_out/../secret", "/../secret", "iexec_out"):
        with pytest.raises(ResultError, match="must name something under /iexec_out") as caught:
            compute_result_digest(out, ComputedFile(deterministic_output_path=path), callback=False)
        assert cause_of(Stage.COMPUTE, caught.value) is NOT_FOUND


def test_missing_path_key_is_a_clear_error(out: Path) -> None:
    with pytest.raises(ResultError, match="no deterministic-output-path"):
        compute_result_digest(out, ComputedFile(), callback=False)


def test_fifo_child_contributes_nothing_and_does_not_block(out: Path) -> None:
    (out / "iexec_out" / "a.txt").write_text("a")
    os.mkfifo(out / "iexec_out" / "pipe")
    assert compute_result_digest(out, AS_DIRECTORY, callback=False) == _expected_directory_digest(b"a")
    with pytest.raises(ResultError, match="neither a file nor a directory"):
        compute_result_digest(out, ComputedFile(deterministic_output_path="/iexec_out/pipe"), callback=False)


def test_large_file_is_hashed_across_chunks(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digest_module, "CHUNK_BYTES", 7)
    content = os.urandom(1000)
    (out / "iexec_out" / "big.bin").write_bytes(content)
    as_file = ComputedFile(deterministic_output_path="/iexec_out/big.bin")
    assert compute_result_digest(out, as_file, callback=False) == "0x" + hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize("callback_data", [None, "", "0xzz", "hello"])
def test_callback_data_must_be_hex(callback_data: str | None) -> None:
    with pytest.raises(ResultError) as caught:
        compute_result_digest(Path("/nonexistent"), ComputedFile(callback_data=callback_data), callback=True)
    assert cause_of(Stage.COMPUTE, caught.value) is NOT_FOUND


def test_callback_data_decodes_like_web3j() -> None:
    # web3j reads an odd number of digits as a leading half byte, and the prefix is optional.
    odd = compute_result_digest(Path("/x"), ComputedFile(callback_data="0xabc"), callback=True)
    assert odd == "0x" + keccak(b"\x0a\xbc").hex()
    bare = compute_result_digest(Path("/x"), ComputedFile(callback_data="0abc"), callback=True)
    assert bare == odd


async def test_async_variant_gives_the_same_digest(out: Path) -> None:
    (out / "iexec_out" / "a.txt").write_text("a")
    digest = await compute_result_digest_async(out, AS_DIRECTORY, callback=False)
    assert digest == _expected_directory_digest(b"a")
