"""What a replicate pipeline needs from the world, as Protocols.

The pipeline only orchestrates: every piece of I/O sits behind one of these ports, so the real
adapters (scheduler client, chain, Docker, result proxy) are wired in ``worker.app`` and the
pipeline can be driven by fakes in unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from worker.protocol.models import ChainReceipt, ReplicateStatusDetails, WorkerpoolAuthorization
from worker.protocol.status import ReplicateStatus, ReplicateStatusCause, TaskNotificationType


class Stage(StrEnum):
    START = "start"
    DOWNLOAD_APP = "download_app"
    DOWNLOAD_DATA = "download_data"
    COMPUTE = "compute"
    CONTRIBUTE = "contribute"
    CONTRIBUTE_AND_FINALIZE = "contribute_and_finalize"
    REVEAL = "reveal"
    UPLOAD = "upload"
    COMPLETE = "complete"
    ABORT = "abort"


@dataclass(frozen=True)
class ComputeOutcome:
    """What a compute stage that ran the app produced, whatever the app did (iexec-worker 9.2).

    ``exit_code`` is the app's exit status, -1 when it was killed at its time limit or never ran.
    ``result_digest`` is None when the post-compute found no result to contribute (no valid
    computed.json, a name too long, a result too large, ...): the contribution then fails with
    DETERMINISM_HASH_NOT_FOUND. ``failures`` are the causes met on the way; like the reference, they
    are logged, never reported.
    """

    exit_code: int
    stdout: str
    stderr: str
    result_digest: str | None
    callback_data: str | None = None
    app_seconds: float | None = None
    """How long the app container ran, as the engine measured it; None when it never started."""
    failures: tuple[ReplicateStatusCause, ...] = ()


@dataclass(frozen=True)
class UploadOutcome:
    result_link: str
    callback_data: str | None = None


@dataclass(frozen=True)
class FinalizeOutcome:
    """A ``contributeAndFinalize`` mined: its receipt, and the result link and callback data it wrote."""

    receipt: ChainReceipt
    result_link: str
    callback_data: str | None = None


class Reporter(Protocol):
    async def report(
        self,
        task_id: str,
        status: ReplicateStatus,
        details: ReplicateStatusDetails | None = None,
    ) -> TaskNotificationType | None:
        """Send a status; returns the scheduler's next action (already-reported counts as accepted)."""
        ...


class Work(Protocol):
    """The I/O of each stage. Failures raise ``StepFailed`` with the cause to report."""

    async def precheck(self, task_id: str, stage: Stage) -> None: ...

    async def download_app(self, task_id: str) -> None: ...

    async def download_data(self, task_id: str) -> None: ...

    async def write_error_result(
        self, task_id: str, status: ReplicateStatus, cause: ReplicateStatusCause
    ) -> str: ...

    async def compute(self, task_id: str) -> ComputeOutcome: ...

    async def contribute(
        self, task_id: str, result_digest: str, authorization: WorkerpoolAuthorization
    ) -> ChainReceipt: ...

    async def contributes_and_finalizes(self, task_id: str) -> bool:
        """True for a trust-1 TEE task: after COMPUTED it ends with ``contributeAndFinalize``, never ``contribute``."""
        ...

    async def contribute_and_finalize(
        self, task_id: str, result_digest: str, authorization: WorkerpoolAuthorization
    ) -> FinalizeOutcome: ...

    async def reveal(self, task_id: str, result_digest: str, consensus_block: int) -> ChainReceipt: ...

    async def upload(self, task_id: str, authorization: WorkerpoolAuthorization) -> UploadOutcome: ...

    async def purge(self, task_id: str) -> None: ...


class Observer(Protocol):
    """Told of every status a replicate enters and of every stage's duration (logs, metrics, UI)."""

    def status_changed(
        self, task_id: str, old: ReplicateStatus, new: ReplicateStatus, cause: ReplicateStatusCause | None
    ) -> None: ...

    def stage_finished(self, stage: Stage, seconds: float, ok: bool) -> None: ...

    def app_computed(self, task_id: str, seconds: float) -> None:
        """The app of ``task_id`` ran for ``seconds`` (the reference's app-compute duration)."""
        ...

    def replicate_held(self, status: ReplicateStatus, held: bool) -> None:
        """A replicate in ``status`` was taken (or resumed) when ``held``, or let go."""
        ...
