"""Handing replicates to workers (``/replicates/available``) and the consensus prediction behind it.

A task gets one more replicate only while the contributions already made plus the ones still
expected cannot reach PoCo's consensus threshold (iexec-core ``ConsensusHelper``, ``PredictionHelper``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from eth_account.signers.local import LocalAccount

from worker.protocol.crypto import ZERO_ADDRESS, authorization_hash, sign_eip191
from worker.protocol.models import ReplicateTaskSummary, Signature, WorkerpoolAuthorization
from worker.protocol.status import ChainTaskStatus, ReplicateStatus

from .chain import SchedulerChain
from .state import CONTRIBUTION_PHASE, Modifier, Replicate, SchedulerState, Task, TaskStatus

log = logging.getLogger(__name__)

RS = ReplicateStatus
DEMAND_TOLERANCE_S = 0.5
DEFAULT_GAS_PRICE_CAP_WEI = 22_000_000_000


def worker_weight(score: int) -> int:
    return max(score // 3, 3) - 1


def _fold(weights: Iterable[int]) -> int:
    acc = 0
    for weight in weights:
        acc = max(acc, 1) * weight
    return acc


def _contributed_groups(replicates: Iterable[Replicate]) -> dict[str, int]:
    members: dict[str, list[int]] = {}
    for replicate in replicates:
        if replicate.last_relevant_status is RS.CONTRIBUTED and replicate.contribution_hash:
            members.setdefault(replicate.contribution_hash, []).append(replicate.worker_weight)
    return {result_hash: _fold(weights) for result_hash, weights in members.items()}


def _pending_weight(replicates: Iterable[Replicate], now: int, max_execution_time: int) -> int:
    def pending(replicate: Replicate) -> bool:
        last = replicate.last_relevant_status
        return (
            last is not None
            and last not in (RS.CONTRIBUTED, RS.FAILED)
            and now - replicate.created_at < max_execution_time
            and replicate.worker_weight > 0
        )

    return _fold(r.worker_weight for r in replicates if pending(r))


def needs_more_contributions(task: Task, now: int) -> bool:
    replicates = list(task.replicates.values())
    groups = _contributed_groups(replicates)
    best_group = max(groups.values(), default=0)
    pending = _pending_weight(replicates, now, task.timeref)
    best = best_group * pending if best_group and pending else best_group or pending
    others = sum(groups.values()) - best_group
    trust = max(task.trust, 1)
    return not best * trust > (1 + best + others) * (trust - 1)


def sign_authorization(task: Task, wallet: str, signer: LocalAccount) -> WorkerpoolAuthorization:
    """Signed by the scheduler over H(worker ‖ task ‖ enclave challenge): the TEE task's, or zero."""
    challenge = task.enclave_challenge.lower() if task.sms_url else ZERO_ADDRESS
    signature = sign_eip191(authorization_hash(wallet, task.task_id, challenge), signer.key)
    return WorkerpoolAuthorization(
        chain_task_id=task.task_id,
        deal_id=task.deal_id,
        task_index=task.index,
        worker_wallet=wallet,
        enclave_challenge=challenge,
        signature=Signature(value=signature),
    )


class ReplicateSupply:
    def __init__(
        self,
        state: SchedulerState,
        chain: SchedulerChain,
        signer: LocalAccount,
        *,
        ask_for_replicate_period_ms: int,
        gas_price_cap_wei: int = DEFAULT_GAS_PRICE_CAP_WEI,
    ) -> None:
        self._state = state
        self._chain = chain
        self._signer = signer
        self._period_s = ask_for_replicate_period_ms / 1000
        self._gas_price_cap = gas_price_cap_wei

    def _allowed_to_ask(self, wallet: str) -> bool:
        worker = self._state.worker(wallet)
        now = time.monotonic()
        if (
            worker.last_demand is not None
            and (now - worker.last_demand) + DEMAND_TOLERANCE_S <= self._period_s
        ):
            return False
        worker.last_demand = now
        worker.last_demand_date = time.time()
        return True

    async def has_enough_gas(self, wallet: str) -> bool:
        return await self._chain.balance(wallet) >= 1_000_000 * self._gas_price_cap

    async def available(self, wallet: str, block_number: int) -> ReplicateTaskSummary | None:
        """A new replicate for ``wallet`` with its signed authorization, or None (HTTP 204)."""
        if not self._allowed_to_ask(wallet) or block_number <= 0:
            return None
        if not await self.has_enough_gas(wallet):
            log.info("worker %s has too little native coin for gas: no replicate", wallet)
            return None
        worker = self._state.workers.get(wallet)
        if worker is None or not worker.registered or len(worker.computing) >= worker.max_nb_tasks:
            return None
        now = self._state.chain_now
        candidates = [
            task
            for task in self._state.tasks.values()
            if task.status in CONTRIBUTION_PHASE
            and task.contribution_deadline > now
            and task.tag not in worker.excluded_tags
            # iexec-core skips a TEE task whose enclave challenge is missing
            and (task.tee_framework is None or (task.sms_url and int(task.enclave_challenge, 16) != 0))
        ]
        # RUNNING before INITIALIZED (Java sorts the status enum descending), then the most urgent.
        candidates.sort(key=lambda t: (t.status is not TaskStatus.RUNNING, t.contribution_deadline))
        for task in candidates:
            async with task.lock:
                if task.status not in CONTRIBUTION_PHASE or wallet in task.replicates:
                    continue
                if not needs_more_contributions(task, now):
                    continue
                chain_task = await self._chain.view_task(task.task_id)
                if chain_task is None or chain_task.status is not ChainTaskStatus.ACTIVE:
                    continue
                if len(worker.computing) >= worker.max_nb_tasks:
                    return None
                weight = worker_weight(await self._chain.score(wallet))
                replicate = Replicate(task.task_id, wallet, created_at=now, worker_weight=weight)
                replicate.append(RS.CREATED, Modifier.POOL_MANAGER)
                task.replicates[wallet] = replicate
                worker.participating.append(task.task_id)
                worker.computing.append(task.task_id)
                log.info("task %s: replicate created for worker %s", task.task_id, wallet)
                return ReplicateTaskSummary(
                    workerpool_authorization=sign_authorization(task, wallet, self._signer),
                    sms_url=task.sms_url,
                )
        return None
