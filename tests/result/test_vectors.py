"""Known-answer vectors (shared/vectors/vectors.json) for the result digest and the error result.

Unit tests over the shared fixture folders, read in place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.vectors import VECTORS_DIR, load_vectors
from worker.protocol.status import ReplicateStatus, ReplicateStatusCause
from worker.replicate.causes import cause_of
from worker.replicate.ports import Stage
from worker.result import (
    ComputedFile,
    ResultError,
    compute_result_digest,
    read_computed_file,
    run_standard_post_compute,
    write_error_result,
)

_DIGEST_CASES: list[dict[str, Any]] = load_vectors()["result_digest"]


def _build_output(case: dict[str, Any], tmp_path: Path) -> tuple[Path, ComputedFile]:
    """The output folder and computed file a vector describes."""
    if "output" in case:
        output = VECTORS_DIR / case["output"]
        if "path" in case:
            return output, ComputedFile(deterministic_output_path=case["path"])
        return output, read_computed_file(output / "computed.json")
    iexec_out = tmp_path / "iexec_out"
    iexec_out.mkdir()
    if case["case"] == "empty directory":
        pass
    elif case["case"] == "directory {a.txt:'a', b.txt:'b'}":
        (iexec_out / "a.txt").write_text("a")
        (iexec_out / "b.txt").write_text("b")
    else:
        pytest.fail(f"vector {case['case']!r} has no folder and no builder here: add one")
    return tmp_path, ComputedFile(deterministic_output_path="/iexec_out")


@pytest.mark.parametrize("case", _DIGEST_CASES, ids=[c["case"] for c in _DIGEST_CASES])
def test_result_digest_vector(case: dict[str, Any], tmp_path: Path) -> None:
    output, computed = _build_output(case, tmp_path)
    callback = case.get("callback") is not None
    if case["expected"] is None:
        with pytest.raises(ResultError) as caught:
            compute_result_digest(output, computed, callback=callback)
        assert (
            cause_of(Stage.COMPUTE, caught.value)
            is ReplicateStatusCause.POST_COMPUTE_RESULT_DIGEST_COMPUTATION_FAILED
        )
    else:
        assert compute_result_digest(output, computed, callback=callback) == case["expected"]


def test_callback_digest_vector(vectors: dict[str, Any]) -> None:
    vector = vectors["ids_and_signatures"]["callback_digest"]
    computed = ComputedFile(callback_data=vector["callback_data"])
    assert compute_result_digest(Path("/nonexistent"), computed, callback=True) == vector["expected"]


def test_error_result_is_byte_identical_to_java_workers(vectors: dict[str, Any], tmp_path: Path) -> None:
    expected = vectors["error_result"]
    output = tmp_path / "output"
    write_error_result(
        output / "iexec_out",
        ReplicateStatus.APP_DOWNLOAD_FAILED,
        [(ReplicateStatusCause.APP_IMAGE_DOWNLOAD_FAILED, "")],
    )
    assert (output / "iexec_out" / "error.txt").read_bytes() == expected["error_txt"].encode()
    assert json.loads((output / "iexec_out" / "computed.json").read_text()) == {
        "deterministic-output-path": "/iexec_out/error.txt",
        "callback-data": None,
        "task-id": None,
        "result-digest": None,
        "enclave-signature": None,
        "error-message": None,
    }

    result = run_standard_post_compute(output)
    computed = read_computed_file(result.computed_path)
    assert compute_result_digest(output, computed, callback=False) == expected["expected_digest"]
