"""What can go wrong producing and publishing a result; ``worker.replicate.causes`` maps each to a
status cause (the names follow the reference's post-compute causes)."""

from __future__ import annotations

from worker.protocol.errors import WorkerError


class ResultError(WorkerError):
    """The result of a replicate cannot be produced or published."""


class ComputedFileInvalid(ResultError):
    """``computed.json`` is missing, unreadable, too large or malformed."""


class ComputedFileMissing(ComputedFileInvalid):
    """The app wrote no ``computed.json``: the post-compute has nothing to publish next to the zip."""


class ResultDigestUnavailable(ResultError):
    """The result digest cannot be computed (deterministic output missing or unreadable)."""


class ResultFolderUnreadable(ResultError):
    """``iexec_out`` cannot be listed."""


class ResultFileNameTooLong(ResultError):
    """A file of ``iexec_out`` has a name longer than the reference accepts."""


class ResultZipFailed(ResultError):
    """``iexec_out`` cannot be zipped within the result size limit."""


class ResultNotUploaded(ResultError):
    """The result could not be uploaded, or no link to it could be obtained."""
