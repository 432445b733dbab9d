"""The one error type of the result stage: it carries the cause the replicate fails with."""

from __future__ import annotations

from worker.protocol.errors import WorkerError
from worker.protocol.status import ReplicateStatusCause


class ResultError(WorkerError):
    """The result of a replicate cannot be produced; the replicate fails with ``cause``."""

    def __init__(self, cause: ReplicateStatusCause, message: str) -> None:
        super().__init__(message)
        self.cause = cause

    def __str__(self) -> str:
        return f"{self.cause.value}: {super().__str__()}"
