"""The worker's transition table: which status a replicate may enter from which.

This is data. The pipeline does the I/O, then moves the machine; an illegal move is a bug and
raises ``TransitionNotAllowed``. A dict lookup is the whole machine: no guard, callback or I/O hangs
on a move, and the diagram in docs/replicate-states.md is generated from the same table. Each event is named after the status it enters, so the table
reads as "X may be entered from ...". Statuses only the scheduler sets (RESULT_UPLOAD_REQUESTED,
RECOVERING, WORKER_LOST) are not states of the worker.
"""

from __future__ import annotations

from collections.abc import Mapping

from worker.protocol.status import ReplicateStatus

RS = ReplicateStatus

# Statuses that are over for the worker: nothing more is sent for them.
TERMINAL: frozenset[ReplicateStatus] = frozenset({RS.COMPLETED, RS.FAILED, RS.ABORTED})

_ACTIVE = (
    RS.CREATED, RS.STARTING, RS.STARTED, RS.APP_DOWNLOADING, RS.APP_DOWNLOADED, RS.APP_DOWNLOAD_FAILED,
    RS.DATA_DOWNLOADING, RS.DATA_DOWNLOADED, RS.DATA_DOWNLOAD_FAILED, RS.COMPUTING, RS.COMPUTED,
    RS.CONTRIBUTING, RS.CONTRIBUTED, RS.REVEALING, RS.REVEALED, RS.RESULT_UPLOADING, RS.RESULT_UPLOADED,
    RS.RESULT_UPLOAD_FAILED, RS.CONTRIBUTE_AND_FINALIZE_ONGOING, RS.CONTRIBUTE_AND_FINALIZE_DONE, RS.COMPLETING,
)  # fmt: skip
_DEAD_ENDS = (
    RS.START_FAILED, RS.COMPUTE_FAILED, RS.CONTRIBUTE_FAILED, RS.REVEAL_FAILED, RS.CONTRIBUTE_AND_FINALIZE_FAILED,
    RS.COMPLETE_FAILED,
)  # fmt: skip

# target status -> the statuses it may be entered from. A failure is always entered from its ongoing
# status: the scheduler accepts e.g. START_FAILED only after STARTING.
TABLE: Mapping[ReplicateStatus, tuple[ReplicateStatus, ...]] = {
    RS.STARTING: (RS.CREATED,),
    RS.STARTED: (RS.STARTING,),
    RS.START_FAILED: (RS.STARTING,),
    RS.APP_DOWNLOADING: (RS.STARTED,),
    RS.APP_DOWNLOADED: (RS.APP_DOWNLOADING,),
    RS.APP_DOWNLOAD_FAILED: (RS.APP_DOWNLOADING,),
    RS.DATA_DOWNLOADING: (RS.APP_DOWNLOADED,),
    RS.DATA_DOWNLOADED: (RS.DATA_DOWNLOADING,),
    RS.DATA_DOWNLOAD_FAILED: (RS.DATA_DOWNLOADING,),
    RS.COMPUTING: (RS.DATA_DOWNLOADED,),
    RS.COMPUTED: (RS.COMPUTING,),
    RS.COMPUTE_FAILED: (RS.COMPUTING,),
    # A failed download is contributed as an error result, so Java and Python workers agree.
    RS.CONTRIBUTING: (RS.COMPUTED, RS.APP_DOWNLOAD_FAILED, RS.DATA_DOWNLOAD_FAILED),
    RS.CONTRIBUTED: (RS.CONTRIBUTING,),
    RS.CONTRIBUTE_FAILED: (RS.CONTRIBUTING,),
    RS.REVEALING: (RS.CONTRIBUTED,),
    RS.REVEALED: (RS.REVEALING,),
    RS.REVEAL_FAILED: (RS.REVEALING,),
    # The scheduler moves the replicate to RESULT_UPLOAD_REQUESTED before PLEASE_UPLOAD: locally REVEALED.
    RS.RESULT_UPLOADING: (RS.REVEALED,),
    RS.RESULT_UPLOADED: (RS.RESULT_UPLOADING,),
    RS.RESULT_UPLOAD_FAILED: (RS.RESULT_UPLOADING,),
    # Trust-1 TEE tasks: one contributeAndFinalize proves and finalizes the task in one transaction.
    RS.CONTRIBUTE_AND_FINALIZE_ONGOING: (RS.COMPUTED,),
    RS.CONTRIBUTE_AND_FINALIZE_DONE: (RS.CONTRIBUTE_AND_FINALIZE_ONGOING,),
    RS.CONTRIBUTE_AND_FINALIZE_FAILED: (RS.CONTRIBUTE_AND_FINALIZE_ONGOING,),
    # PLEASE_COMPLETE is broadcast to every worker of a task and the reference handles it in any state
    # (a winner that never revealed gets it too): the task folder is purged whatever the replicate did.
    RS.COMPLETING: tuple(s for s in (*_ACTIVE, *_DEAD_ENDS) if s is not RS.COMPLETING),
    RS.COMPLETED: (RS.COMPLETING,),
    RS.COMPLETE_FAILED: (RS.COMPLETING,),
    RS.ABORTED: (*_ACTIVE, *_DEAD_ENDS),
    RS.FAILED: (*_ACTIVE, *_DEAD_ENDS),
}

WORKER_STATES: tuple[ReplicateStatus, ...] = tuple(
    s for s in ReplicateStatus if s is RS.CREATED or s in TABLE
)


class TransitionNotAllowed(RuntimeError):
    """A move the table does not allow: a bug of the pipeline, never an outside event."""


class ReplicateState:
    """A replicate's place in the table; ``move`` raises on a transition the table does not allow."""

    def __init__(self, status: ReplicateStatus = RS.CREATED) -> None:
        if status not in WORKER_STATES:
            raise ValueError(f"{status} is set by the scheduler, never held by the worker")
        self._status = status

    @property
    def status(self) -> ReplicateStatus:
        return self._status

    def can_move(self, target: ReplicateStatus) -> bool:
        return target in TABLE and self.status in TABLE[target]

    def move(self, target: ReplicateStatus) -> None:
        if target not in TABLE:
            raise ValueError(f"{target} is set by the scheduler, never by the worker")
        if self._status not in TABLE[target]:
            raise TransitionNotAllowed(f"{self._status} -> {target} is not in the worker's transition table")
        self._status = target

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


__all__ = [
    "TABLE",
    "TERMINAL",
    "WORKER_STATES",
    "ReplicateState",
    "TransitionNotAllowed",
    "mermaid",
]


def mermaid() -> str:
    """The table as a Mermaid state diagram (docs/replicate-states.md holds the checked-in copy)."""
    lines = ["stateDiagram-v2", f"    [*] --> {RS.CREATED.value}"]
    for target, sources in TABLE.items():
        lines += [f"    {source.value} --> {target.value}" for source in sources]
    lines += [f"    {s.value} --> [*]" for s in sorted(TERMINAL, key=lambda s: s.ordinal)]
    return "\n".join(lines) + "\n"
