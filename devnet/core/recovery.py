"""``GET /replicates/interrupted``: what a restarting worker should do for each task it was in.

Rules of iexec-core ``ReplicateSupplyService.getMissedTaskNotifications``. Answering has side
effects, as in iexec-core: statuses the chain shows but the worker never reported are recorded,
and every recovered replicate gets RECOVERING.
"""

from __future__ import annotations

import logging

from eth_account.signers.local import LocalAccount

from worker.protocol.models import (
    ChainReceipt,
    ReplicateStatusDetails,
    TaskNotification,
    TaskNotificationExtra,
)
from worker.protocol.status import (
    ChainContributionStatus,
    ReplicateStatus,
    TaskAbortCause,
    TaskNotificationType,
    is_valid_transition,
)

from .chain import SchedulerChain, is_zero
from .results import ResultChecker
from .state import (
    COMPLETION_PHASE,
    CONTRIBUTION_PHASE,
    REVEAL_PHASE,
    Modifier,
    Replicate,
    SchedulerState,
    Task,
    TaskStatus,
)
from .supply import sign_authorization, worker_weight

log = logging.getLogger(__name__)

RS = ReplicateStatus
TNT = TaskNotificationType
CCS = ChainContributionStatus


class Recovery:
    def __init__(
        self, state: SchedulerState, chain: SchedulerChain, results: ResultChecker, signer: LocalAccount
    ) -> None:
        self._state = state
        self._chain = chain
        self._results = results
        self._signer = signer

    async def interrupted(self, wallet: str, block_number: int) -> list[TaskNotification]:
        worker = self._state.workers.get(wallet)
        if worker is None:
            return []
        notifications = []
        for task_id in list(worker.participating):
            task = self._state.tasks.get(task_id)
            if task is None or wallet not in task.replicates:
                continue
            async with task.lock:
                replicate = task.replicates[wallet]
                action = await self._action(task, replicate, block_number)
                if action is None:
                    continue
                if not replicate.contains(RS.RECOVERING) and is_valid_transition(
                    replicate.last_status, RS.RECOVERING
                ):
                    replicate.append(RS.RECOVERING, Modifier.POOL_MANAGER)
                extra = TaskNotificationExtra(
                    workerpool_authorization=sign_authorization(task, wallet, self._signer),
                    sms_url=task.sms_url,  # iexec-core leaves it out; a restarted worker needs it
                    block_number=task.consensus_block if action is TNT.PLEASE_REVEAL else 0,
                    task_abort_cause=self._abort_cause(task) if action is TNT.PLEASE_ABORT else None,
                )
            log.info("task %s: worker %s recovers with %s", task_id, wallet, action)
            notifications.append(
                TaskNotification(
                    chain_task_id=task_id,
                    workers_address=[wallet],
                    task_notification_type=action,
                    task_notification_extra=extra,
                )
            )
        return notifications

    @staticmethod
    def _abort_cause(task: Task) -> TaskAbortCause:
        if TaskStatus.CONTRIBUTION_TIMEOUT in task.statuses:
            return TaskAbortCause.CONTRIBUTION_TIMEOUT
        if task.status in REVEAL_PHASE:
            return TaskAbortCause.CONSENSUS_REACHED
        return TaskAbortCause.UNKNOWN

    async def _action(self, task: Task, replicate: Replicate, block_number: int) -> TNT | None:
        last = replicate.last_relevant_status
        if last is None:
            return None
        if TaskStatus.CONTRIBUTION_TIMEOUT in task.statuses:
            return TNT.PLEASE_ABORT
        if task.status in CONTRIBUTION_PHASE:
            if task.contribute_and_finalize and last in (RS.COMPUTED, RS.CONTRIBUTE_AND_FINALIZE_ONGOING):
                return TNT.PLEASE_CONTRIBUTE_AND_FINALIZE
            if task.contribute_and_finalize and last is RS.CONTRIBUTE_AND_FINALIZE_DONE:
                return TNT.PLEASE_WAIT
            if last.ordinal < RS.CONTRIBUTING.ordinal:
                return TNT.PLEASE_CONTRIBUTE
            if last is RS.CONTRIBUTING:
                contribution = await self._chain.view_contribution(task.task_id, replicate.wallet)
                if contribution.status not in (CCS.CONTRIBUTED, CCS.PROVED) or is_zero(
                    contribution.result_hash
                ):
                    return TNT.PLEASE_CONTRIBUTE
                replicate.contribution_hash = contribution.result_hash
                replicate.worker_weight = worker_weight(await self._chain.score(replicate.wallet))
                self._record(replicate, RS.CONTRIBUTED, block_number)
                return TNT.PLEASE_WAIT
            return TNT.PLEASE_WAIT if last is RS.CONTRIBUTED else None
        if task.status in REVEAL_PHASE:
            if not replicate.contains(RS.CONTRIBUTED):
                return TNT.PLEASE_ABORT
            if last is RS.CONTRIBUTED:
                return TNT.PLEASE_REVEAL
            if last is RS.REVEALING:
                contribution = await self._chain.view_contribution(task.task_id, replicate.wallet)
                if contribution.status is not CCS.PROVED:
                    return TNT.PLEASE_REVEAL
                self._record(replicate, RS.REVEALED, block_number)
                return TNT.PLEASE_WAIT
            if last is RS.REVEALED:
                return TNT.PLEASE_WAIT
            if last is RS.RESULT_UPLOAD_REQUESTED:
                return TNT.PLEASE_UPLOAD
            if last is RS.RESULT_UPLOADING:
                if not await self._results.is_uploaded(task):
                    return TNT.PLEASE_UPLOAD
                self._record(replicate, RS.RESULT_UPLOADED, block_number)
                return TNT.PLEASE_WAIT
            return TNT.PLEASE_WAIT if last is RS.RESULT_UPLOADED else None
        if task.status in COMPLETION_PHASE and (
            replicate.contains(RS.REVEALED) or replicate.contains(RS.CONTRIBUTE_AND_FINALIZE_DONE)
        ):
            return TNT.PLEASE_COMPLETE if task.status is TaskStatus.COMPLETED else TNT.PLEASE_WAIT
        return None

    @staticmethod
    def _record(replicate: Replicate, status: ReplicateStatus, block_number: int) -> None:
        if replicate.contains(status) or not is_valid_transition(replicate.last_status, status):
            return
        receipt = ChainReceipt(block_number=block_number, tx_hash="")
        replicate.append(status, Modifier.POOL_MANAGER, ReplicateStatusDetails(chain_receipt=receipt))
