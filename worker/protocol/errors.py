"""Error hierarchy, split by what the caller should do about the error."""

from __future__ import annotations

from worker.protocol.status import ReplicateStatusCause


class WorkerError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigurationError(WorkerError):
    """A setting is missing or wrong: the process stops at start with exit code 2."""


class TransientError(WorkerError):
    """Worth retrying after a delay (node or scheduler unreachable, 5xx, timeouts)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(WorkerError):
    """The process cannot go on: exit 1 so the orchestrator restarts it."""


class ChainError(TransientError):
    """A call to the Ethereum node failed."""


class SchedulerError(TransientError):
    """A call to the scheduler failed; ``status`` is the HTTP status, or None for I/O errors."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status


class StepFailed(WorkerError):
    """A stage of one replicate failed; ``cause`` is what the scheduler is told."""

    def __init__(self, cause: ReplicateStatusCause, message: str = "") -> None:
        super().__init__(message or cause.value)
        self.cause = cause
