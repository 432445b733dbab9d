"""``POST /replicates/{id}/updateStatus``: the checks iexec-core runs before recording a status.

Order (iexec-core ``ReplicatesService``): unknown replicate, status already in the history (never
twice), transition graph, task readable for COMPUTED, then per-status on-chain checks. Accepted
updates are appended with modifier WORKER and answered with the next action.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from worker.protocol.models import ReplicateStatusDetails, ReplicateStatusUpdate
from worker.protocol.status import (
    FAILED_BEFORE_COMPUTED,
    ChainContributionStatus,
    ChainTaskStatus,
    ReplicateStatus,
    ReplicateStatusCause,
    TaskNotificationType,
    is_valid_transition,
    next_action,
)

from .chain import ContributionView, SchedulerChain, is_zero
from .results import ResultChecker
from .state import Modifier, Replicate, SchedulerState, Task
from .supply import worker_weight

log = logging.getLogger(__name__)

RS = ReplicateStatus
CCS = ChainContributionStatus


class UpdateError(StrEnum):
    UNKNOWN_REPLICATE = "UNKNOWN_REPLICATE"
    UNKNOWN_TASK = "UNKNOWN_TASK"
    BAD_WORKFLOW_TRANSITION = "BAD_WORKFLOW_TRANSITION"
    ALREADY_REPORTED = "ALREADY_REPORTED"
    GENERIC_CANT_UPDATE = "GENERIC_CANT_UPDATE"


@dataclass(frozen=True)
class UpdateOutcome:
    error: UpdateError | None = None
    action: TaskNotificationType | None = None


@dataclass(frozen=True)
class ChainCheckPolicy:
    """How long to wait for the chain to show what a worker reports (iexec-core: 3 tries, 6 blocks apart)."""

    tries: int = 3
    delay_s: float = 0.5
    block_wait_s: float = 5.0


DEFAULT_CHECK_POLICY = ChainCheckPolicy()


class StatusUpdater:
    def __init__(
        self,
        state: SchedulerState,
        chain: SchedulerChain,
        results: ResultChecker,
        *,
        policy: ChainCheckPolicy = DEFAULT_CHECK_POLICY,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._state = state
        self._chain = chain
        self._results = results
        self._policy = policy
        self._on_change = on_change

    async def update(self, task_id: str, wallet: str, update: ReplicateStatusUpdate) -> UpdateOutcome:
        task = self._state.tasks.get(task_id)
        replicate = task.replicates.get(wallet) if task else None
        if task is None or replicate is None:
            return UpdateOutcome(UpdateError.UNKNOWN_REPLICATE)
        async with task.lock:
            outcome = await self._update_locked(task, replicate, update)
        if outcome.error is None:
            self._on_change()
        return outcome

    async def _update_locked(
        self, task: Task, replicate: Replicate, update: ReplicateStatusUpdate
    ) -> UpdateOutcome:
        status = update.status
        if replicate.contains(status):
            return UpdateOutcome(UpdateError.ALREADY_REPORTED)
        if not is_valid_transition(replicate.last_status, status):
            return UpdateOutcome(UpdateError.BAD_WORKFLOW_TRANSITION)
        if status is RS.COMPUTED and not await self._task_readable(task):
            return UpdateOutcome(UpdateError.UNKNOWN_TASK)
        details = update.details
        if not await self._passes_checks(task, replicate, status, details):
            log.info("task %s: %s from %s refused by on-chain checks", task.task_id, status, replicate.wallet)
            return UpdateOutcome(UpdateError.GENERIC_CANT_UPDATE)
        if details is not None and details.compute_logs is not None:
            # The logs belong to the task-logs store, not to the replicate history (iexec-core
            # ReplicatesController: tailed again, stored for COMPUTED or an app's COMPUTE_FAILED, first wins).
            if status is RS.COMPUTED or (
                status is RS.COMPUTE_FAILED and details.cause is ReplicateStatusCause.APP_COMPUTE_FAILED
            ):
                logs = details.compute_logs.model_copy(update={"wallet_address": replicate.wallet}).tailed()
                task.compute_logs.setdefault(replicate.wallet, logs)
            details = details.model_copy(update={"compute_logs": None})
        replicate.append(status, Modifier.WORKER, details)
        if status is RS.COMPUTED or status in FAILED_BEFORE_COMPUTED:
            self._state.worker(replicate.wallet).release(task.task_id, participation=False)
        log.info("task %s: replicate of %s is now %s", task.task_id, replicate.wallet, status)
        cause = details.cause if details else None
        return UpdateOutcome(
            action=next_action(status, cause, contribute_and_finalize=task.contribute_and_finalize)
        )

    async def _task_readable(self, task: Task) -> bool:
        try:
            return await self._chain.view_task(task.task_id) is not None
        except Exception as exc:  # noqa: BLE001 - any chain failure means "cannot read the task"
            log.warning("task %s: cannot read it on chain: %s", task.task_id, exc)
            return False

    async def _passes_checks(
        self,
        task: Task,
        replicate: Replicate,
        status: ReplicateStatus,
        details: ReplicateStatusDetails | None,
    ) -> bool:
        if status in (RS.CONTRIBUTE_FAILED, RS.REVEAL_FAILED):
            return False
        receipt_block = details.chain_receipt.block_number if details and details.chain_receipt else 0
        if status is RS.CONTRIBUTED:
            if not await self._block_available(receipt_block):
                return False
            contribution = await self._contribution_matching(task, replicate, {CCS.CONTRIBUTED, CCS.PROVED})
            if contribution is None or is_zero(contribution.result_hash):
                return False
            replicate.contribution_hash = contribution.result_hash
            replicate.worker_weight = worker_weight(await self._chain.score(replicate.wallet))
            return True
        if status is RS.REVEALED:
            return await self._block_available(receipt_block) and (
                await self._contribution_matching(task, replicate, {CCS.PROVED}) is not None
            )
        if status is RS.RESULT_UPLOADED:
            if not await self._results.is_uploaded(task) or not await self._task_readable(task):
                return False
            data = details.chain_callback_data if details else None
            link = details.result_link if details else None
            if not (data if task.has_callback else link):
                return False
            replicate.result_link, replicate.chain_callback_data = link, data
            return True
        if status is RS.RESULT_UPLOAD_FAILED:
            return not await self._results.is_uploaded(task)
        if status is RS.CONTRIBUTE_AND_FINALIZE_DONE:
            chain_task = await self._chain.view_task(task.task_id)
            if (
                chain_task is None
                or chain_task.status is not ChainTaskStatus.COMPLETED
                or await self._contribution_matching(task, replicate, {CCS.PROVED}) is None
                or not await self._results.is_uploaded(task)
            ):
                return False
            replicate.result_link = chain_task.results.decode("utf-8", "replace")
            replicate.chain_callback_data = details.chain_callback_data if details else None
            return True
        return True

    async def _block_available(self, block_number: int) -> bool:
        """The scheduler's node has reached the block of the worker's receipt (short wait)."""
        deadline = asyncio.get_running_loop().time() + self._policy.block_wait_s
        while True:
            try:
                if (await self._chain.latest_block()).number >= block_number:
                    return True
            except Exception as exc:  # noqa: BLE001 - an unreachable node counts as "not yet"
                log.warning("chain unreachable while waiting for block %d: %s", block_number, exc)
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(self._policy.delay_s)

    async def _contribution_matching(
        self, task: Task, replicate: Replicate, wanted: set[ChainContributionStatus]
    ) -> ContributionView | None:
        for attempt in range(self._policy.tries):
            try:
                contribution = await self._chain.view_contribution(task.task_id, replicate.wallet)
            except Exception as exc:  # noqa: BLE001 - retried like any other "not yet"
                log.warning("task %s: viewContribution failed: %s", task.task_id, exc)
            else:
                if contribution.status in wanted:
                    return contribution
            if attempt + 1 < self._policy.tries:
                await asyncio.sleep(self._policy.delay_s)
        return None
