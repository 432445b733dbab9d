"""Unit tests of the TEE replicate path's pure parts: how enclave exits become causes."""

from __future__ import annotations

import pytest

from worker.compute import ContainerResult
from worker.protocol.status import ReplicateStatusCause as Cause
from worker.protocol.tee import ComputeStage, WorkflowError
from worker.replicate.tee_work import stage_failure


def ended(code: int, *, timed_out: bool = False) -> ContainerResult:
    return ContainerResult("c", code, timed_out, "", "", 1.0)


@pytest.mark.parametrize(
    ("stage", "code", "reported", "cause"),
    [
        (ComputeStage.PRE, 0, [], None),
        (ComputeStage.PRE, 1, [], Cause.PRE_COMPUTE_FAILED_UNKNOWN_ISSUE),
        (
            ComputeStage.PRE,
            1,
            ["PRE_COMPUTE_INVALID_DATASET_CHECKSUM"],
            Cause.PRE_COMPUTE_INVALID_DATASET_CHECKSUM,
        ),
        (ComputeStage.PRE, 2, [], Cause.PRE_COMPUTE_EXIT_REPORTING_FAILED),
        (ComputeStage.PRE, 3, [], Cause.PRE_COMPUTE_TASK_ID_MISSING),
        (ComputeStage.PRE, 139, [], Cause.PRE_COMPUTE_FAILED_UNKNOWN_ISSUE),
        (ComputeStage.POST, 1, ["POST_COMPUTE_IPFS_UPLOAD_FAILED"], Cause.POST_COMPUTE_IPFS_UPLOAD_FAILED),
        (ComputeStage.POST, 1, ["SOMETHING_NEW"], Cause.POST_COMPUTE_FAILED_UNKNOWN_ISSUE),
        (ComputeStage.POST, 2, ["POST_COMPUTE_IPFS_UPLOAD_FAILED"], Cause.POST_COMPUTE_EXIT_REPORTING_FAILED),
        (ComputeStage.POST, 3, [], Cause.POST_COMPUTE_TASK_ID_MISSING),
    ],
)
def test_exit_codes_and_reported_causes(
    stage: ComputeStage, code: int, reported: list[str], cause: Cause | None
) -> None:
    failure = stage_failure(stage, ended(code), [WorkflowError(cause=c, message="m") for c in reported])
    assert (failure.cause if failure else None) is cause


def test_a_timeout_wins_over_the_exit_code() -> None:
    failure = stage_failure(ComputeStage.POST, ended(137, timed_out=True), [])
    assert failure is not None
    assert failure.cause is Cause.POST_COMPUTE_TIMEOUT
