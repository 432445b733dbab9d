"""The table that turns adapter errors into the causes reported to the scheduler (pure unit tests)."""

from __future__ import annotations

import pytest

from worker.chain import ReceiptTimeout, TaskNotFound, TransactionRefused
from worker.compute import ArgsError, ContainerError, DockerUnavailableError, ImageNotFoundError
from worker.data import DatasetChecksumMismatch, DatasetUnavailable, InputFileUnavailable
from worker.protocol.errors import ChainError, StepFailed, WorkerError
from worker.protocol.status import ReplicateStatusCause as Cause
from worker.replicate.causes import cause_of, failures_of
from worker.replicate.ports import Stage
from worker.result import (
    ComputedFileInvalid,
    ComputedFileMissing,
    ResultDigestUnavailable,
    ResultFileNameTooLong,
    ResultFolderUnreadable,
    ResultNotUploaded,
    ResultZipFailed,
)

CASES = [
    (Stage.START, TaskNotFound("no task"), Cause.TASK_DESCRIPTION_NOT_FOUND),
    (Stage.CONTRIBUTE, ChainError("node down"), Cause.CHAIN_UNREACHABLE),
    (Stage.REVEAL, ReceiptTimeout("slow", tx_hash="0x01"), Cause.CHAIN_UNREACHABLE),
    (Stage.DOWNLOAD_APP, DockerUnavailableError("engine down"), Cause.APP_NOT_FOUND_LOCALLY),
    (Stage.DOWNLOAD_APP, ImageNotFoundError("no such tag", image="x:1"), Cause.APP_IMAGE_DOWNLOAD_FAILED),
    (Stage.DOWNLOAD_APP, ContainerError("odd", name="c"), Cause.APP_IMAGE_DOWNLOAD_FAILED),
    (Stage.DOWNLOAD_DATA, DatasetChecksumMismatch("sha256"), Cause.DATASET_FILE_BAD_CHECKSUM),
    (Stage.DOWNLOAD_DATA, DatasetUnavailable("404"), Cause.DATASET_FILE_DOWNLOAD_FAILED),
    (Stage.DOWNLOAD_DATA, InputFileUnavailable("404"), Cause.INPUT_FILES_DOWNLOAD_FAILED),
    (Stage.COMPUTE, ArgsError("unbalanced quote"), Cause.TASK_DESCRIPTION_INVALID),
    (Stage.COMPUTE, ContainerError("cannot start", name="c"), Cause.APP_NOT_FOUND_LOCALLY),
    (Stage.COMPUTE, DockerUnavailableError("engine down"), Cause.APP_NOT_FOUND_LOCALLY),
    (Stage.COMPUTE, ComputedFileInvalid("missing"), Cause.POST_COMPUTE_COMPUTED_FILE_NOT_FOUND),
    (Stage.COMPUTE, ComputedFileMissing("none"), Cause.POST_COMPUTE_SEND_COMPUTED_FILE_FAILED),
    (Stage.COMPUTE, ResultDigestUnavailable("no path"), Cause.POST_COMPUTE_RESULT_DIGEST_COMPUTATION_FAILED),
    (Stage.CONTRIBUTE, ResultDigestUnavailable("no path"), Cause.DETERMINISM_HASH_NOT_FOUND),
    (Stage.COMPUTE, ResultFileNameTooLong("long"), Cause.POST_COMPUTE_TOO_LONG_RESULT_FILE_NAME),
    (Stage.COMPUTE, ResultFolderUnreadable("ls"), Cause.POST_COMPUTE_FAILED_UNKNOWN_ISSUE),
    (Stage.COMPUTE, ResultZipFailed("too big"), Cause.POST_COMPUTE_OUT_FOLDER_ZIP_FAILED),
    (Stage.UPLOAD, ResultNotUploaded("proxy 500"), Cause.RESULT_LINK_MISSING),
    (
        Stage.CONTRIBUTE,
        TransactionRefused("stake", cause=Cause.STAKE_TOO_LOW, task_id="0x01", sent=False),
        Cause.STAKE_TOO_LOW,
    ),
]


@pytest.mark.parametrize(
    ("stage", "error", "cause"), CASES, ids=[type(c[1]).__name__ + "-" + c[0] for c in CASES]
)
def test_each_adapter_error_has_its_cause(stage: Stage, error: WorkerError, cause: Cause) -> None:
    assert cause_of(stage, error) is cause


def test_an_error_no_adapter_raises_has_no_cause() -> None:
    assert cause_of(Stage.COMPUTE, WorkerError("ours")) is None
    assert cause_of(Stage.COMPUTE, ValueError("bug")) is None


def test_failures_of_raises_step_failed_with_the_cause_and_the_message() -> None:
    with pytest.raises(StepFailed) as caught, failures_of(Stage.DOWNLOAD_APP, "cannot pull x:1"):
        raise ImageNotFoundError("manifest unknown", image="x:1")
    assert caught.value.cause is Cause.APP_IMAGE_DOWNLOAD_FAILED
    assert str(caught.value) == "cannot pull x:1: manifest unknown"
    assert isinstance(caught.value.__cause__, ImageNotFoundError)


def test_failures_of_lets_bugs_and_step_failures_through() -> None:
    with pytest.raises(KeyError), failures_of(Stage.COMPUTE):
        raise KeyError("bug")
    with pytest.raises(StepFailed) as caught, failures_of(Stage.COMPUTE):
        raise StepFailed(Cause.APP_COMPUTE_TIMEOUT, "killed")
    assert caught.value.cause is Cause.APP_COMPUTE_TIMEOUT
