"""Fakes of the membership ports: a scripted scheduler, an in-memory chain, a push channel and a
supervisor that only counts. Unit tests only: nothing here starts a service."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from eth_account import Account
from eth_account.signers.local import LocalAccount

from tests.support.chain import task_description
from worker.chain import ChainAccount, ChainTask, TaskDescription, TaskNotFound
from worker.protocol.crypto import authorization_hash, sign_eip191
from worker.protocol.errors import ChainError, SchedulerError
from worker.protocol.models import (
    ReplicateStatusUpdate,
    ReplicateTaskSummary,
    Signature,
    TaskNotification,
    WorkerpoolAuthorization,
)
from worker.protocol.status import ChainTaskStatus, ReplicateStatus
from worker.scheduler import UpdateKind, UpdateOutcome

POOL = "0x" + "70" * 20
# Anvil's well-known development keys: public, never used on a real chain.
OWNER: LocalAccount = Account.from_key("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
WORKER: LocalAccount = Account.from_key("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
WALLET = WORKER.address.lower()


def task_id(n: int) -> str:
    return "0x" + f"{n:064x}"


def authorization(
    task: str, *, signer: LocalAccount = OWNER, wallet: str = WALLET
) -> WorkerpoolAuthorization:
    signature = sign_eip191(authorization_hash(wallet, task), signer.key)
    return WorkerpoolAuthorization(
        chain_task_id=task, deal_id="0x" + "dd" * 32, task_index=0, worker_wallet=wallet,
        signature=Signature(value=signature),
    )  # fmt: skip


@dataclass
class FakeScheduler:
    """Answers pings with a configuration hash, offers queued replicates, records status updates."""

    config_hash: str | None = "0x" + "c0" * 32
    ping_error: bool = False
    offers: list[ReplicateTaskSummary] = field(default_factory=list)
    asked_at_blocks: list[int] = field(default_factory=list)
    updates: list[tuple[str, ReplicateStatusUpdate, float | None]] = field(default_factory=list)
    outcome: UpdateOutcome = field(default_factory=lambda: UpdateOutcome(UpdateKind.ACCEPTED))
    update_error: bool = False

    async def ping(self) -> str | None:
        if self.ping_error:
            raise SchedulerError("connection refused", status=None)
        return self.config_hash

    async def ask_for_replicate(self, block_number: int) -> ReplicateTaskSummary | None:
        self.asked_at_blocks.append(block_number)
        return self.offers.pop(0) if self.offers else None

    async def update_status(
        self, chain_task_id: str, update: ReplicateStatusUpdate, *, deadline: float | None = None
    ) -> UpdateOutcome:
        if self.update_error:
            raise SchedulerError("HTTP 503", status=503)
        self.updates.append((chain_task_id, update, deadline))
        return self.outcome


@dataclass
class FakeChain:
    block: int = 100
    balances: dict[str, int] = field(default_factory=dict)
    stakes: dict[str, ChainAccount] = field(default_factory=dict)
    tasks: dict[str, ChainTaskStatus] = field(default_factory=dict)
    owner: str = OWNER.address
    down: bool = False

    def _check(self) -> None:
        if self.down:
            raise ChainError("node unreachable")

    async def latest_block_number(self) -> int:
        self._check()
        return self.block

    async def balance(self, address: str) -> int:
        self._check()
        return self.balances.get(address, 0)

    async def account(self, address: str) -> ChainAccount:
        self._check()
        return self.stakes.get(address, ChainAccount(stake=0, locked=0))

    async def task(self, task_id: str) -> ChainTask:
        self._check()
        status = self.tasks.get(task_id, ChainTaskStatus.UNSET)
        return ChainTask(task_id, status, "0x" + "dd" * 32, 0, 20, 0, 0, 0)

    async def task_description(self, task_id: str) -> TaskDescription:
        self._check()
        if task_id not in self.tasks:
            raise TaskNotFound(f"task {task_id} not found")
        return task_description(task_id=task_id)

    async def workerpool_owner(self, pool_address: str) -> str:
        self._check()
        return self.owner


@dataclass
class FakePush:
    connected: bool = True
    comes_back: bool = False
    waits: int = 0

    @property
    def is_connected(self) -> bool:
        return self.connected

    async def wait_connected(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        self.waits += 1
        await asyncio.sleep(0)
        if self.comes_back:
            self.connected = True
        return self.connected


@dataclass
class FakeReplicates:
    slots: int = 1
    statuses: dict[str, ReplicateStatus] = field(default_factory=dict)
    admitted: list[str] = field(default_factory=list)
    notified: list[TaskNotification] = field(default_factory=list)
    on_admit: Callable[[str], None] | None = None

    @property
    def computing(self) -> int:
        return sum(1 for s in self.statuses.values() if s.ordinal < ReplicateStatus.COMPUTED.ordinal)

    @property
    def free_slots(self) -> int:
        return max(self.slots - self.computing, 0)

    @property
    def active(self) -> list[str]:
        return list(self.statuses)

    def status_of(self, task_id: str) -> ReplicateStatus | None:
        return self.statuses.get(task_id)

    def notify(self, notification: TaskNotification) -> None:
        self.notified.append(notification)

    async def admit(self, authorization: WorkerpoolAuthorization, *, sms_url: str | None = None) -> bool:
        task = authorization.chain_task_id
        if task in self.statuses:
            return False
        self.statuses[task] = ReplicateStatus.CREATED
        self.admitted.append(task)
        return True
