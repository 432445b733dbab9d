"""The one place where adapter errors become the causes a replicate reports to the scheduler.

Adapters raise their own errors (``DatasetChecksumMismatch``, ``ImagePullError``, ``ResultZipFailed``, …)
and know nothing of replicate statuses. ``TaskWork`` runs each stage inside ``failures_of(stage)``,
which turns them into ``StepFailed`` with the cause this table gives, the adapter's message kept.
Rows are read top down and the first whose stage and type match wins, so a narrow type sits above a
wider one. The chain's pre-check verdicts (``TransactionRefused``) already are causes of the protocol
(CANT_CONTRIBUTE_SINCE_*, as iexec-worker ``ContributionService`` names them) and pass through as
they are.

A full disk is the worker's fault whatever the stage and whatever adapter met it: an error with ENOSPC (or
EDQUOT) anywhere in its chain becomes ``DISK_FULL_CAUSE`` (ABORTED_BY_WORKER), which no error result
follows, so nothing is contributed for a task this worker could not hold; the message names the disk and
the fix.
"""

from __future__ import annotations

import errno
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
DISK_FULL_CAUSE: Final = Cause.ABORTED_BY_WORKER
"""A stage that ran out of disk: the worker's fault, not the app's; no error result is contributed."""
_NO_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT})

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


def disk_full_error(error: BaseException | None) -> OSError | None:
    """The "no space left" error in ``error``'s chain (causes and contexts), or None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in _NO_SPACE:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def disk_full_message(where: object, error: OSError | None = None) -> str:
    """What an operator reads when a stage ran out of disk: the folder, the error, the fix."""
    seen = f" ({error.strerror or error})" if error is not None else ""
    return (
        f"the disk holding {where} is full{seen}: the worker gave up this task; free space on that file "
        "system or point IEXEC_WORKER_BASE_DIR to a larger one (IEXEC_WORKER_BASE_DIR_MIN_FREE_BYTES pauses "
        "demand before it fills up)"
    )


def cause_of(stage: Stage, error: BaseException) -> Cause | None:
    """The cause ``error`` raised during ``stage`` is reported with, or None when it is not an adapter's."""
    if isinstance(error, StepFailed):
        return error.cause
    if disk_full_error(error) is not None:
        return DISK_FULL_CAUSE
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
        full = disk_full_error(error)
        text = (
            str(error)
            if full is None
            else f"{error}; {disk_full_message(full.filename or 'the task folder', full)}"
        )
        raise StepFailed(cause, f"{what}: {text}" if what else text) from error
    except OSError as error:
        full = disk_full_error(error)
        if full is None:
            raise
        text = disk_full_message(full.filename or "the task folder", full)
        raise StepFailed(DISK_FULL_CAUSE, f"{what}: {text}" if what else text) from error
