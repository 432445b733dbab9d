"""Errors of the compute adapter, split by what the caller should do about them.

Retryable ones also derive from ``TransientError``: the Docker engine or a registry could not be reached, or a
pull ran out of time. The others say the image reference, the credentials or the container request is wrong.
"""

from __future__ import annotations

from worker.protocol.errors import TransientError, WorkerError


class ComputeError(WorkerError):
    """Root of the errors raised by the Docker adapter."""


class DockerUnavailableError(ComputeError, TransientError):
    """The Docker engine did not answer (socket missing, daemon stopped or overloaded).

    Also raised when the engine went away in the middle of an answer (a container wait or a pull stream cut
    short by a dockerd restart): ``cause`` is the transport error as the HTTP client saw it. The caller waits
    for the engine to answer again and redoes the whole operation; a cut stream says nothing about the app.
    """

    def __init__(self, message: str, *, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause


class ImagePullError(ComputeError):
    """An app image could not be pulled; ``image`` is the reference as requested."""

    def __init__(self, message: str, *, image: str) -> None:
        super().__init__(message)
        self.image = image


class ImageNotFoundError(ImagePullError):
    """The registry answered that this repository or tag does not exist."""


class ImageDigestMismatch(ImagePullError):
    """The image the registry served is not the one the app registered on chain (its checksum)."""


class RegistryAuthError(ImagePullError):
    """The registry refused the credentials, or asks for credentials the worker does not have."""


class RegistryUnreachableError(ImagePullError, TransientError):
    """The registry could not be reached (DNS, connection refused, TLS, 5xx)."""


class ImagePullTimeoutError(ImagePullError, TransientError):
    """The pull did not finish within its time budget."""


class InvalidImageReferenceError(ImagePullError):
    """The image reference cannot be parsed into a repository and a tag or digest."""


class ContainerError(ComputeError):
    """A container could not be created, started or inspected; ``name`` is the container name."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class ImageBuildError(ComputeError):
    """A local image build failed (used by the devnet images)."""
