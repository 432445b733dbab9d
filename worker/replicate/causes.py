"""The one place where adapter errors become the causes a replicate reports to the scheduler.

Adapters raise their own errors (``DatasetChecksumMismatch``, ``ImagePullError``, ``ResultZipFailed``, …)
and know nothing of replicate statuses. ``TaskWork`` runs each stage inside ``failures_of(stage)``,
which turns them into ``StepFailed`` with the cause this table gives, the adapter's message kept.
Rows are read top down and the first whose stage and type match wins, so a narrow type sits above a
wider one. The chain's pre-check verdicts (``TransactionRefused``) already are causes of the protocol
(CANT_CONTRIBUTE_SINCE_*, as iexec-worker ``ContributionService`` names them) and pass through as
they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from worker.chain import TaskNotFound, TransactionRefused
from worker.compute import ArgsError, ComputeError, DockerUnavailableError, ImagePullError
from worker.data import DatasetChecksumMismatch, DatasetUnavailable, InputFileUnavailable
from worker.protocol.errors import ChainError, StepFailed, WorkerError
from worker.protocol.status import ReplicateStatusCause as Cause
from worker.replicate.ports import Stage
from worker.result import (
    ComputedFileInvalid,
    ComputedFileMissing,
    ResultDigestUnavailable,
    ResultFileNameTooLong,
    ResultFolderUnreadable,
    ResultNotUploaded,
    ResultZipFailed,
    UnsafeResultPath,
)

ANY: Final = None

# (stage or ANY, adapter error, cause reported)
CAUSES: Final[tuple[tuple[Stage | None, type[WorkerError], Cause], ...]] = (
    (ANY, TaskNotFound, Cause.TASK_DESCRIPTION_NOT_FOUND),
    (ANY, ChainError, Cause.CHAIN_UNREACHABLE),
    # The worker's own engine is down: not the app's fault, so no error result is contributed.
    (Stage.DOWNLOAD_APP, DockerUnavailableError, Cause.APP_NOT_FOUND_LOCALLY),
    (Stage.DOWNLOAD_APP, ImagePullError, Cause.APP_IMAGE_DOWNLOAD_FAILED),
    (Stage.DOWNLOAD_APP, ComputeError, Cause.APP_IMAGE_DOWNLOAD_FAILED),
    (ANY, DatasetChecksumMismatch, Cause.DATASET_FILE_BAD_CHECKSUM),
    (ANY, DatasetUnavailable, Cause.DATASET_FILE_DOWNLOAD_FAILED),
    (ANY, InputFileUnavailable, Cause.INPUT_FILES_DOWNLOAD_FAILED),
    (Stage.COMPUTE, ArgsError, Cause.TASK_DESCRIPTION_INVALID),
    (Stage.COMPUTE, ComputeError, Cause.APP_NOT_FOUND_LOCALLY),
    # The post-compute's causes, named as the reference names them (since 9.2 only logged after an app run).
    (ANY, ComputedFileMissing, Cause.POST_COMPUTE_SEND_COMPUTED_FILE_FAILED),
    (ANY, ComputedFileInvalid, Cause.POST_COMPUTE_COMPUTED_FILE_NOT_FOUND),
    (Stage.COMPUTE, ResultDigestUnavailable, Cause.POST_COMPUTE_RESULT_DIGEST_COMPUTATION_FAILED),
    (ANY, ResultDigestUnavailable, Cause.DETERMINISM_HASH_NOT_FOUND),
    (ANY, ResultFileNameTooLong, Cause.POST_COMPUTE_TOO_LONG_RESULT_FILE_NAME),
    (ANY, ResultFolderUnreadable, Cause.POST_COMPUTE_FAILED_UNKNOWN_ISSUE),
    (ANY, UnsafeResultPath, Cause.POST_COMPUTE_FAILED_UNKNOWN_ISSUE),
    (ANY, ResultZipFailed, Cause.POST_COMPUTE_OUT_FOLDER_ZIP_FAILED),
    (ANY, ResultNotUploaded, Cause.RESULT_LINK_MISSING),
)


def cause_of(stage: Stage, error: BaseException) -> Cause | None:
    """The cause ``error`` raised during ``stage`` is reported with, or None when it is not an adapter's."""
    if isinstance(error, StepFailed):
        return error.cause
    if isinstance(error, TransactionRefused):
        return error.cause
    for row_stage, kind, cause in CAUSES:
        if (row_stage is ANY or row_stage is stage) and isinstance(error, kind):
            return cause
    return None


@contextmanager
def failures_of(stage: Stage, what: str = "") -> Iterator[None]:
    """Turn an adapter error raised inside the block into ``StepFailed``; ``what`` prefixes its message."""
    try:
        yield
    except StepFailed:
        raise
    except WorkerError as error:
        cause = cause_of(stage, error)
        if cause is None:
            raise
        raise StepFailed(cause, f"{what}: {error}" if what else str(error)) from error
