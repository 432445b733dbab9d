"""What the membership policies need from the scheduler, the chain, the push channel and the replicates.

The real implementations are ``worker.scheduler.SchedulerClient``, ``worker.chain.ChainClient``,
``worker.scheduler.stomp.PushChannel`` and ``worker.replicate.supervisor.Supervisor``; unit tests
implement these Protocols with fakes.
"""

from __future__ import annotations

from typing import Protocol

from worker.chain import ChainAccount, ChainTask, TaskDescription
from worker.protocol.models import (
    ReplicateStatusUpdate,
    ReplicateTaskSummary,
    TaskNotification,
    WorkerpoolAuthorization,
)
from worker.protocol.status import ReplicateStatus
from worker.scheduler import UpdateOutcome


class Scheduler(Protocol):
    async def ping(self) -> str | None: ...

    async def ask_for_replicate(self, block_number: int) -> ReplicateTaskSummary | None: ...

    async def update_status(
        self, chain_task_id: str, update: ReplicateStatusUpdate, *, deadline: float | None = None
    ) -> UpdateOutcome: ...


class Chain(Protocol):
    async def latest_block_number(self) -> int: ...

    async def balance(self, address: str) -> int: ...

    async def account(self, address: str) -> ChainAccount: ...

    async def task(self, task_id: str) -> ChainTask: ...

    async def task_description(self, task_id: str) -> TaskDescription: ...

    async def workerpool_owner(self, pool_address: str) -> str: ...


class Push(Protocol):
    @property
    def is_connected(self) -> bool: ...

    async def wait_connected(self, timeout: float | None = None) -> bool: ...  # noqa: ASYNC109


class Replicates(Protocol):
    """The supervisor as the policies see it."""

    @property
    def computing(self) -> int: ...

    @property
    def free_slots(self) -> int: ...

    @property
    def active(self) -> list[str]: ...

    def status_of(self, task_id: str) -> ReplicateStatus | None: ...

    def notify(self, notification: TaskNotification) -> None: ...

    async def admit(self, authorization: WorkerpoolAuthorization, *, sms_url: str | None = None) -> bool:
        """Take a replicate; ``sms_url`` is the SMS of a TEE task, kept with the replicate."""
        ...
