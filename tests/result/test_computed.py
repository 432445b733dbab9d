"""computed.json reading and writing (unit tests on temporary folders)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.protocol.status import ReplicateStatus, ReplicateStatusCause
from worker.replicate.causes import cause_of
from worker.replicate.ports import Stage
from worker.result import ComputedFile, ResultError, error_result_text, read_computed_file

NOT_FOUND = ReplicateStatusCause.POST_COMPUTE_COMPUTED_FILE_NOT_FOUND


def test_every_key_is_read_and_unknown_keys_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "computed.json"
    path.write_text(
        json.dumps(
            {
                "deterministic-output-path": "/iexec_out/result.txt",
                "callback-data": "0xab",
                "task-id": "0x01",
                "result-digest": "0x02",
                "enclave-signature": "0x03",
                "error-message": "none",
                "something-new": {"nested": True},
            }
        )
    )
    assert read_computed_file(path) == ComputedFile(
        deterministic_output_path="/iexec_out/result.txt",
        callback_data="0xab",
        task_id="0x01",
        result_digest="0x02",
        enclave_signature="0x03",
        error_message="none",
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"deterministic-output-path": 42}', "deterministic-output-path"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
    ],
)
def test_invalid_content_is_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "computed.json"
    path.write_bytes(content)
    with pytest.raises(ResultError, match=message) as caught:
        read_computed_file(path)
    assert cause_of(Stage.COMPUTE, caught.value) is NOT_FOUND


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ResultError, match="no such file") as caught:
        read_computed_file(tmp_path / "computed.json")
    assert cause_of(Stage.COMPUTE, caught.value) is NOT_FOUND


def test_link_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "computed.json").symlink_to(tmp_path / "real.json")
    with pytest.raises(ResultError, match="regular file") as caught:
        read_computed_file(tmp_path / "computed.json")
    assert cause_of(Stage.COMPUTE, caught.value) is NOT_FOUND


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "computed.json"
    path.write_text('{"callback-data": "0x' + "ab" * 600_000 + '"}')
    with pytest.raises(ResultError, match="larger than"):
        read_computed_file(path)


def test_json_keeps_java_key_order_and_nulls() -> None:
    assert ComputedFile(callback_data="0x01").to_json() == (
        '{"deterministic-output-path":null,"callback-data":"0x01","task-id":null,'
        '"result-digest":null,"enclave-signature":null,"error-message":null}'
    )


def test_error_text_renders_several_causes_and_null_messages() -> None:
    text = error_result_text(
        ReplicateStatus.DATA_DOWNLOAD_FAILED,
        [
            (ReplicateStatusCause.DATASET_FILE_DOWNLOAD_FAILED, "timeout"),
            (ReplicateStatusCause.POST_COMPUTE_FAILED_UNKNOWN_ISSUE, None),
        ],
    )
    assert text == (
        "[IEXEC] Errors occurred while computing the task [error:DATA_DOWNLOAD_FAILED, causes:["
        "WorkflowError[cause=DATASET_FILE_DOWNLOAD_FAILED, message=timeout], "
        "WorkflowError[cause=POST_COMPUTE_FAILED_UNKNOWN_ISSUE, message=null]]]"
    )
