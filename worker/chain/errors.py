"""Chain-side failures, in terms of what the caller does next."""

from __future__ import annotations

from worker.protocol.errors import ChainError, WorkerError
from worker.protocol.status import ReplicateStatusCause


class ContractReverted(WorkerError):
    """A call or a simulated transaction reverted: retrying the same call gives the same answer.

    ``reason`` is the revert string, or None for a bare ``require`` (most PoCo checks).
    """

    def __init__(self, message: str, *, reason: str | None) -> None:
        super().__init__(message)
        self.reason = reason


class NonceTooLow(ChainError):
    """The node already holds a transaction of this wallet with this nonce."""


class ReceiptTimeout(ChainError):
    """A sent transaction was not mined in time; it may still be. Retrying waits for the same one."""

    def __init__(self, message: str, *, tx_hash: str) -> None:
        super().__init__(message)
        self.tx_hash = tx_hash


class TaskNotFound(ChainError):
    """The task or its deal is not (yet) on chain, as seen by this node."""


class TransactionRefused(WorkerError):
    """A worker transaction cannot succeed, or did not: fail the replicate with ``cause``.

    Raised before anything is sent when the chain state predicts a revert (the wallet's nonce and
    balance are untouched), and after mining when the receipt lacks the task event.
    """

    def __init__(self, message: str, *, cause: ReplicateStatusCause, task_id: str, sent: bool) -> None:
        super().__init__(message)
        self.cause = cause
        self.task_id = task_id
        self.sent = sent
