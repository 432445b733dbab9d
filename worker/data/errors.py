"""What can go wrong fetching a task's data; ``worker.replicate.causes`` maps each to a status cause."""

from __future__ import annotations

from worker.protocol.errors import WorkerError


class DataError(WorkerError):
    """A dataset or an input file could not be made available to the app."""


class DatasetUnavailable(DataError):
    """The dataset cannot be fetched (bad URI, every source failed)."""


class DatasetChecksumMismatch(DataError):
    """The dataset was fetched but its sha256 is not the on-chain checksum."""


class InputFileUnavailable(DataError):
    """An input file of the deal cannot be fetched."""
