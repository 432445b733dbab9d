"""JSON bodies exchanged with the scheduler (iexec-core) and the result proxy, as Jackson writes them.

Field names on the wire are camelCase; Python code uses snake_case. Parsing is lenient (unknown
fields ignored), serialisation keeps nulls, as the Java side does. Models: iexec-core-library's
``SchedulerClient`` and ``notification`` package, iexec-common ``ReplicateStatusUpdate``,
``ReplicateStatusDetails`` and ``ResultModel``, iexec-commons-poco ``WorkerpoolAuthorization``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from worker.protocol.status import (
    ReplicateStatus,
    ReplicateStatusCause,
    TaskAbortCause,
    TaskNotificationType,
)

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
_BYTES32 = re.compile(r"^0x[0-9a-f]{64}$")


def normalise_bytes32(value: Any) -> str:
    """A task or deal id as the worker keys it: ``0x`` + 64 lowercase hex digits, else ValueError.

    Ids come from the scheduler and are normalised once, where they are read: the same task in two
    letter cases is one task, and a malformed id is refused there instead of failing deeper.
    """
    if not isinstance(value, str):
        raise ValueError("must be a string of 0x and 64 hex digits")
    text = value.strip().lower()
    if not _BYTES32.match(text):
        raise ValueError(f"{value[:80]!r} is not 0x followed by 64 hex digits")
    return text


Bytes32Id = Annotated[str, BeforeValidator(normalise_bytes32)]


class WireModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


class PublicConfiguration(WireModel):
    worker_pool_address: str
    scheduler_public_address: str
    config_server_url: str
    result_repository_url: str = Field(alias="resultRepositoryURL")
    ask_for_replicate_period: int  # milliseconds
    required_worker_version: str = ""

    def lombok_string(self) -> str:
        """Lombok ``toString()``: the scheduler hashes this text to answer pings."""
        return (
            f"PublicConfiguration(workerPoolAddress={self.worker_pool_address}, "
            f"schedulerPublicAddress={self.scheduler_public_address}, "
            f"configServerUrl={self.config_server_url}, "
            f"resultRepositoryURL={self.result_repository_url}, "
            f"askForReplicatePeriod={self.ask_for_replicate_period}, "
            f"requiredWorkerVersion={self.required_worker_version})"
        )


class PublicChainConfig(WireModel):
    chain_id: int
    sidechain: bool = False
    chain_node_url: str
    iexec_hub_contract_address: str
    block_time: timedelta = timedelta(seconds=5)

    @field_validator("block_time", mode="before")
    @classmethod
    def _seconds_or_iso(cls, value: Any) -> Any:
        # Jackson's JavaTimeModule writes a Duration as seconds (a number) or ISO-8601 ("PT5S").
        if isinstance(value, int | float):
            return timedelta(seconds=value)
        return value


class Signature(WireModel):
    value: str


class WorkerModel(WireModel):
    name: str
    wallet_address: str
    os: str
    cpu: str
    cpu_nb: int
    memory_size: int
    gpu_enabled: bool = False
    tee_enabled: bool = False
    tdx_enabled: bool = False


class WorkerpoolAuthorization(WireModel):
    chain_task_id: Bytes32Id
    deal_id: Bytes32Id
    task_index: int
    worker_wallet: str
    enclave_challenge: str = ZERO_ADDRESS
    signature: Signature


class ReplicateTaskSummary(WireModel):
    workerpool_authorization: WorkerpoolAuthorization
    sms_url: str | None = None


class TaskNotificationExtra(WireModel):
    workerpool_authorization: WorkerpoolAuthorization | None = None
    sms_url: str | None = None
    block_number: int = 0
    task_abort_cause: TaskAbortCause | None = None


class TaskNotification(WireModel):
    chain_task_id: Bytes32Id
    workers_address: list[str] | None = Field(default_factory=list)
    task_notification_type: TaskNotificationType
    task_notification_extra: TaskNotificationExtra | None = None

    @property
    def task_abort_cause(self) -> TaskAbortCause:
        extra = self.task_notification_extra
        return extra.task_abort_cause if extra and extra.task_abort_cause else TaskAbortCause.UNKNOWN

    def to_wire(self) -> dict[str, Any]:
        # Jackson also writes the derived getter getTaskAbortCause().
        body = super().to_wire()
        body["taskAbortCause"] = self.task_abort_cause.value
        return body

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_wire(), separators=(",", ":"))

    def concerns(self, wallet: str) -> bool:
        """Java ``isWorkerInvolved``: [] is a broadcast, null is ignored, else exact match."""
        if self.workers_address is None:
            return False
        return not self.workers_address or wallet in self.workers_address


class ChainReceipt(WireModel):
    block_number: int
    tx_hash: str


MAX_LOG_LENGTH = 100_000
"""iexec-common ``ComputeLogs.MAX_LOG_LENGTH``: the scheduler keeps at most this many UTF-16 code units of each
of stdout and stderr, the last ones (the worker tails them before sending, iexec-core again on receipt)."""


def tail_log(text: str, limit: int = MAX_LOG_LENGTH) -> str:
    """The last ``limit`` UTF-16 code units of ``text``, as Java's ``substring(length - limit)`` keeps them.

    A surrogate pair cut in half at the start is dropped whole: a lone half is not valid text to send.
    """
    if len(text) * 2 <= limit:
        return text
    units = 0
    start = len(text)
    while start > 0:
        width = 2 if ord(text[start - 1]) > 0xFFFF else 1
        if units + width > limit:
            break
        units += width
        start -= 1
    return text[start:]


class ComputeLogs(WireModel):
    wallet_address: str | None = None
    stdout: str | None = None
    stderr: str | None = None

    def tailed(self, limit: int = MAX_LOG_LENGTH) -> ComputeLogs:
        """Both streams cut to their last ``limit`` UTF-16 code units (iexec-common ``ComputeLogs.tailLogs``)."""
        return self.model_copy(
            update={
                "stdout": None if self.stdout is None else tail_log(self.stdout, limit),
                "stderr": None if self.stderr is None else tail_log(self.stderr, limit),
            }
        )


class ReplicateStatusDetails(WireModel):
    chain_receipt: ChainReceipt | None = None
    result_link: str | None = None
    chain_callback_data: str | None = None
    error_message: str | None = None
    cause: ReplicateStatusCause | None = None
    compute_logs: ComputeLogs | None = None
    exit_code: int | None = None
    tee_session_generation_error: str | None = None

    @field_validator("cause", mode="before")
    @classmethod
    def _lenient_cause(cls, value: Any) -> Any:
        # A cause this worker does not know yet must not reject the whole update.
        if isinstance(value, str) and value not in ReplicateStatusCause.__members__:
            return ReplicateStatusCause.UNKNOWN
        return value


class ReplicateStatusUpdate(WireModel):
    status: ReplicateStatus
    modifier: str | None = None
    date: str | None = None
    details: ReplicateStatusDetails | None = None


class ResultModel(WireModel):
    chain_task_id: str
    deal_id: str = "0x" + "00" * 32
    task_index: int = 0
    image: str | None = None
    cmd: str | None = None
    zip: str  # Base64 of iexec_out.zip
    determinist_hash: str | None = None
    enclave_signature: str = "0x" + "00" * 65
