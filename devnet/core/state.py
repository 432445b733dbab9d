"""Tasks, replicates and workers of the development scheduler, kept in memory only.

Nothing is persisted: a restart forgets every task and worker, like a fresh iexec-core database.
Each replicate keeps its ordered status history, which tests read back. A task carries an asyncio
lock; whoever changes a task or one of its replicates holds it (HTTP handlers and the duty loop).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from worker.protocol.crypto import ZERO_ADDRESS
from worker.protocol.models import ComputeLogs, ReplicateStatusDetails, TaskNotification
from worker.protocol.status import ReplicateStatus, ReplicateStatusCause
from worker.protocol.tee import (
    TEE_GRAMINE_ONLY_TAG,
    TEE_SCONE_ONLY_TAG,
    TEE_TDX_ONLY_TAG,
    TeeFramework,
    tee_framework,
)

RS = ReplicateStatus


class TaskStatus(StrEnum):
    RECEIVED = "RECEIVED"
    INITIALIZING = "INITIALIZING"
    INITIALIZED = "INITIALIZED"
    INITIALIZE_FAILED = "INITIALIZE_FAILED"
    RUNNING = "RUNNING"
    RUNNING_FAILED = "RUNNING_FAILED"
    CONTRIBUTION_TIMEOUT = "CONTRIBUTION_TIMEOUT"
    CONSENSUS_REACHED = "CONSENSUS_REACHED"
    REOPENING = "REOPENING"
    REOPENED = "REOPENED"
    REOPEN_FAILED = "REOPEN_FAILED"
    AT_LEAST_ONE_REVEALED = "AT_LEAST_ONE_REVEALED"
    RESULT_UPLOADING = "RESULT_UPLOADING"
    RESULT_UPLOADED = "RESULT_UPLOADED"
    RESULT_UPLOAD_TIMEOUT = "RESULT_UPLOAD_TIMEOUT"
    FINALIZING = "FINALIZING"
    FINALIZED = "FINALIZED"
    FINALIZE_FAILED = "FINALIZE_FAILED"
    FINAL_DEADLINE_REACHED = "FINAL_DEADLINE_REACHED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


TS = TaskStatus
CONTRIBUTION_PHASE = frozenset({TS.INITIALIZED, TS.RUNNING})
REVEAL_PHASE = frozenset(
    {TS.CONSENSUS_REACHED, TS.AT_LEAST_ONE_REVEALED, TS.RESULT_UPLOADING, TS.RESULT_UPLOADED}
)
COMPLETION_PHASE = frozenset({TS.FINALIZING, TS.FINALIZED, TS.COMPLETED})
FINAL_TASK_STATUSES = frozenset({TS.COMPLETED, TS.FAILED})

# A replicate whose last relevant status is one of these makes its task RUNNING (START_FAILED excluded).
RUNNING_REPLICATE_STATUSES = frozenset({
    RS.STARTED, RS.APP_DOWNLOADING, RS.APP_DOWNLOAD_FAILED, RS.APP_DOWNLOADED, RS.DATA_DOWNLOADING,
    RS.DATA_DOWNLOAD_FAILED, RS.DATA_DOWNLOADED, RS.COMPUTING, RS.COMPUTE_FAILED, RS.COMPUTED, RS.CONTRIBUTING,
    RS.CONTRIBUTE_FAILED, RS.CONTRIBUTED, RS.CONTRIBUTE_AND_FINALIZE_ONGOING, RS.CONTRIBUTE_AND_FINALIZE_FAILED,
    RS.CONTRIBUTE_AND_FINALIZE_DONE,
})  # fmt: skip

TEE_SCONE_TAG = TEE_SCONE_ONLY_TAG
TEE_GRAMINE_TAG = TEE_GRAMINE_ONLY_TAG
TEE_TDX_TAG = TEE_TDX_ONLY_TAG


class Modifier(StrEnum):
    WORKER = "WORKER"
    POOL_MANAGER = "POOL_MANAGER"


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class StatusChange:
    status: ReplicateStatus
    modifier: Modifier
    wall_time: float
    details: ReplicateStatusDetails | None = None

    @property
    def cause(self) -> ReplicateStatusCause | None:
        return self.details.cause if self.details else None


@dataclass
class Replicate:
    task_id: str
    wallet: str
    created_at: int  # chain seconds
    worker_weight: int
    history: list[StatusChange] = field(default_factory=list)
    contribution_hash: str | None = None
    result_link: str | None = None
    chain_callback_data: str | None = None

    def append(
        self, status: ReplicateStatus, modifier: Modifier, details: ReplicateStatusDetails | None = None
    ) -> None:
        self.history.append(StatusChange(status, modifier, time.time(), details))

    @property
    def statuses(self) -> list[ReplicateStatus]:
        return [change.status for change in self.history]

    @property
    def last_status(self) -> ReplicateStatus:
        return self.history[-1].status

    @property
    def last_relevant_status(self) -> ReplicateStatus | None:
        for change in reversed(self.history):
            if change.status not in (RS.WORKER_LOST, RS.RECOVERING):
                return change.status
        return None

    def contains(self, status: ReplicateStatus) -> bool:
        return any(change.status is status for change in self.history)


@dataclass(frozen=True)
class DealParams:
    storage_provider: str = "ipfs"
    storage_proxy: str = ""

    @classmethod
    def parse(cls, params: str) -> DealParams:
        # Non-JSON params are plain app arguments (Java DealParams): defaults apply.
        try:
            data: Any = json.loads(params) if params else {}
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        return cls(
            storage_provider=str(data.get("iexec_result_storage_provider") or "ipfs"),
            storage_proxy=str(data.get("iexec_result_storage_proxy") or ""),
        )


@dataclass
class Task:
    task_id: str
    deal_id: str
    index: int
    trust: int
    tag: str
    callback: str
    deal_params: DealParams
    timeref: int
    contribution_deadline: int
    final_deadline: int
    initialization_block: int
    history: list[tuple[TaskStatus, float]] = field(default_factory=list)
    replicates: dict[str, Replicate] = field(default_factory=dict)
    reveal_deadline: int = 0
    consensus: str | None = None
    consensus_block: int = 0
    result_link: str | None = None
    chain_callback_data: str | None = None
    sms_url: str | None = None
    """The SMS of the task's TEE framework (iexec-core ``task.smsUrl``); None for a standard task."""
    enclave_challenge: str = ZERO_ADDRESS
    status_changed_at: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    compute_logs: dict[str, ComputeLogs] = field(default_factory=dict)
    """iexec-core ``TaskLogs``: the app logs each worker sent, by wallet; the first one sent is kept."""

    @property
    def status(self) -> TaskStatus:
        return self.history[-1][0]

    def set_status(self, *statuses: TaskStatus) -> None:
        for status in statuses:
            self.history.append((status, time.time()))
        self.status_changed_at = time.monotonic()

    @property
    def statuses(self) -> list[TaskStatus]:
        return [status for status, _ in self.history]

    @property
    def has_callback(self) -> bool:
        return bool(self.callback) and int(self.callback, 16) != 0

    @property
    def tee_framework(self) -> TeeFramework | None:
        return tee_framework(self.tag)

    @property
    def contribute_and_finalize(self) -> bool:
        """Trust 1 and a TEE framework: the worker ends the task with one ``contributeAndFinalize``."""
        return self.trust == 1 and self.tee_framework is not None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_TASK_STATUSES


@dataclass
class WorkerRecord:
    wallet: str
    name: str = ""
    os: str = ""
    cpu: str = ""
    cpu_nb: int = 0
    memory_size: int = 0
    gpu_enabled: bool = False
    tee_enabled: bool = False
    tdx_enabled: bool = False
    registered: bool = False
    participating: list[str] = field(default_factory=list)
    computing: list[str] = field(default_factory=list)
    last_alive: float | None = None  # monotonic
    last_alive_date: float | None = None  # wall clock, for the JSON view
    last_demand: float | None = None  # monotonic
    last_demand_date: float | None = None

    @property
    def max_nb_tasks(self) -> int:
        return 1 if self.gpu_enabled else self.cpu_nb

    @property
    def excluded_tags(self) -> list[str]:
        excluded = []
        if not self.tdx_enabled:
            excluded.append(TEE_TDX_TAG)
        if not self.tee_enabled:
            excluded += [TEE_SCONE_TAG, TEE_GRAMINE_TAG]
        return excluded

    def mark_alive(self) -> None:
        self.last_alive = time.monotonic()
        self.last_alive_date = time.time()

    def release(self, task_id: str, *, participation: bool) -> None:
        if task_id in self.computing:
            self.computing.remove(task_id)
        if participation and task_id in self.participating:
            self.participating.remove(task_id)

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.wallet,
            "name": self.name,
            "walletAddress": self.wallet,
            "os": self.os,
            "cpu": self.cpu,
            "cpuNb": self.cpu_nb,
            "maxNbTasks": self.max_nb_tasks,
            "memorySize": self.memory_size,
            "gpuEnabled": self.gpu_enabled,
            "teeEnabled": self.tee_enabled,
            "tdxEnabled": self.tdx_enabled,
            "participatingChainTaskIds": list(self.participating),
            "computingChainTaskIds": list(self.computing),
            "lastAliveDate": _iso(self.last_alive_date),
            "lastReplicateDemandDate": _iso(self.last_demand_date),
            "excludedTags": self.excluded_tags,
        }


@dataclass
class SchedulerState:
    tasks: dict[str, Task] = field(default_factory=dict)
    workers: dict[str, WorkerRecord] = field(default_factory=dict)
    notifications: list[TaskNotification] = field(default_factory=list)
    chain_now: int = 0  # timestamp of the latest block seen
    chain_block: int = 0
    last_chain_ok: float | None = None  # monotonic time of the last successful chain poll

    def worker(self, wallet: str) -> WorkerRecord:
        return self.workers.setdefault(wallet, WorkerRecord(wallet))

    def replicate(self, task_id: str, wallet: str) -> Replicate | None:
        task = self.tasks.get(task_id)
        return task.replicates.get(wallet) if task else None
