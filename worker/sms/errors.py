"""What the SMS adapter raises: its own errors, which the replicate core turns into causes."""

from __future__ import annotations

from worker.protocol.errors import WorkerError
from worker.protocol.tee import TeeSessionGenerationError


class SmsError(WorkerError):
    """A call to the SMS failed or was refused; ``status`` is the HTTP status, None when no answer came."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SmsSessionRefused(SmsError):
    """``POST /tee/sessions`` answered with a ``TeeSessionGenerationError``."""

    def __init__(self, message: str, error: TeeSessionGenerationError, *, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.error = error


class SecretProvisioningFailed(WorkerError):
    """The TDX secret provider agent did not leave a readable session file."""
