"""What the pre-compute and post-compute enclaves tell the worker while a TEE task computes.

The rules of iexec-worker ``ComputeController``, ``ComputeExitCauseService`` and
``ResultService.writeComputedFile``: every call carries, in ``Authorization``, the EIP-191 signature
of H(chainTaskId ‖ worker wallet) by the task's enclave challenge, the key the SMS gave the enclaves
only; nothing signed otherwise is read. Exit causes are kept once per stage and task until the
worker reads them when the container ends; the computed file is written once, to
``<task>/output/computed.json``, if the task is ACTIVE on chain, its deal names a TEE framework, and
the file carries a non-zero digest and a 65-byte enclave signature (whose signer is checked before
anything goes on chain). Answers are HTTP status codes, as the reference's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from worker.chain import ChainDeal, ChainTask
from worker.protocol.errors import WorkerError
from worker.protocol.models import WorkerpoolAuthorization
from worker.protocol.status import ChainTaskStatus
from worker.protocol.tee import ComputeStage, WorkflowError, signed_by_enclave, tee_framework
from worker.replicate.store import ReplicateStore
from worker.result import ComputedFile, ResultError, parse_computed_file

log = logging.getLogger("iexec.worker.enclave")

_TASK_ID = re.compile(r"^0x[0-9a-f]{64}$")
_BYTES32 = re.compile(r"^0x[0-9a-fA-F]{64}$")
MAX_CAUSES = 64
COMPUTED_FILE = "computed.json"


class CallbackChain(Protocol):
    async def task(self, task_id: str) -> ChainTask: ...

    async def deal(self, deal_id: str) -> ChainDeal: ...


@dataclass(frozen=True)
class Answer:
    status: int
    text: str = ""


class EnclaveCallbacks:
    def __init__(self, store: ReplicateStore, chain: CallbackChain, worker: str, task_root: Path) -> None:
        self._store = store
        self._chain = chain
        self._worker = worker.lower()
        self._task_root = task_root
        self._causes: dict[tuple[ComputeStage, str], list[WorkflowError]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -- the routes -----------------------------------------------------------------------------

    async def exit_causes(
        self, stage_name: str, task_id: str, signature: str, causes: list[WorkflowError]
    ) -> Answer:
        stage = ComputeStage.parse(stage_name)
        if stage is None:
            return Answer(404, f"unknown compute stage {stage_name!r}: pre or post")
        task_id = task_id.lower()
        refused = await self._refused(task_id, signature)
        if refused is not None:
            return refused
        if not causes:
            return Answer(400, "no cause given")
        key = (stage, task_id)
        if key in self._causes:
            return Answer(208, "causes already reported for this stage")
        self._causes[key] = causes[:MAX_CAUSES]
        log.info(
            "%s: %s-compute enclave reports %s",
            task_id, stage.value, ", ".join(f"{c.cause} ({c.message or 'no message'})" for c in causes[:5]),
        )  # fmt: skip
        return Answer(200)

    async def computed(self, task_id: str, signature: str, body: bytes) -> Answer:
        task_id = task_id.lower()
        refused = await self._refused(task_id, signature)
        if refused is not None:
            return refused
        try:
            computed = parse_computed_file(body, source="computed file sent by the post-compute enclave")
        except ResultError as exc:
            return Answer(400, str(exc))
        if (computed.task_id or "").lower() != task_id:
            return Answer(400, "task-id of the computed file is not the task of the path")
        async with self._locks.setdefault(task_id, asyncio.Lock()):
            problem = await self._cannot_write(task_id, computed)
            if problem is not None:
                log.warning("%s: computed file refused: %s", task_id, problem)
                return Answer(401, problem)
            await asyncio.to_thread(
                _write_new, self._output(task_id) / COMPUTED_FILE, computed.to_json().encode()
            )
        log.info("%s: computed file received from the post-compute enclave", task_id)
        return Answer(200, task_id)

    # -- what the worker reads ------------------------------------------------------------------

    def take_causes(self, stage: ComputeStage, task_id: str) -> list[WorkflowError]:
        """The causes the stage's enclave reported, once: a rerun of the stage starts clean."""
        return self._causes.pop((stage, task_id.lower()), [])

    def forget(self, task_id: str) -> None:
        for stage in ComputeStage:
            self._causes.pop((stage, task_id.lower()), None)
        self._locks.pop(task_id.lower(), None)

    # -- checks ---------------------------------------------------------------------------------

    def _output(self, task_id: str) -> Path:
        return self._task_root / task_id / "output"

    async def _refused(self, task_id: str, signature: str) -> Answer | None:
        if not _TASK_ID.match(task_id):
            return Answer(400, "chainTaskId must be 0x followed by 64 hex digits")
        record = await self._store.get(task_id)
        if record is None or record.final:
            return Answer(404, "no workerpool authorization for this task on this worker")
        try:
            authorization = WorkerpoolAuthorization.model_validate(record.authorization)
        except ValidationError:
            return Answer(404, "no workerpool authorization for this task on this worker")
        if not signature or not signed_by_enclave(
            task_id, self._worker, signature, authorization.enclave_challenge
        ):
            log.warning("%s: a call to the enclave endpoints was not signed by the task's enclave", task_id)
            return Answer(401, "Authorization is not signed by the task's enclave challenge")
        return None

    async def _cannot_write(self, task_id: str, computed: ComputedFile) -> str | None:
        if (self._output(task_id) / COMPUTED_FILE).exists():
            return "a computed file was already received for this task"
        digest = computed.result_digest or ""
        if not _BYTES32.match(digest) or int(digest, 16) == 0:
            return "result-digest is not a non-zero bytes32"
        signature = (computed.enclave_signature or "").removeprefix("0x")
        if len(signature) != 130 or not re.fullmatch(r"[0-9a-fA-F]*", signature):
            return "enclave-signature is not 65 bytes of hex"
        try:
            task = await self._chain.task(task_id)
            if task.status is not ChainTaskStatus.ACTIVE:
                return f"task is {task.status.name} on chain, not ACTIVE"
            deal = await self._chain.deal(task.deal_id)
        except WorkerError as exc:
            return f"the chain cannot be read: {exc}"
        if tee_framework(deal.tag) is None:
            return "the deal's tag names no TEE framework"
        return None


def _write_new(path: Path, data: bytes) -> None:
    """Write ``path`` once; never through a link, never over an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
