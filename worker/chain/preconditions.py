"""Why a contribute or reveal would revert, named from the hub views before anything is sent.

PoCo checks are mostly bare ``require`` statements (PoCo ``IexecPoco2Facet``), so a revert alone says
nothing; the same conditions read from the views give the replicate its ReplicateStatusCause.
Deadlines are compared with the latest block's timestamp, the clock the contract uses.

The rules are pure functions of the views (``contribute_cause``, ``reveal_cause``), so the
transaction sender can read the views in one batch with its other questions to the node;
``cannot_contribute_cause`` and ``cannot_reveal_cause`` read them and apply the same rules.
"""

from __future__ import annotations

from worker.chain.client import ChainClient
from worker.chain.models import ChainAccount, ChainContribution, ChainDeal, ChainTask
from worker.protocol.crypto import result_hash, result_seal
from worker.protocol.errors import ChainError
from worker.protocol.status import ChainContributionStatus, ChainTaskStatus, ReplicateStatusCause


def contribute_cause(
    task: ChainTask,
    contribution: ChainContribution,
    worker: str,
    now: int,
    *,
    stake: tuple[ChainAccount, ChainDeal] | None = None,
) -> ReplicateStatusCause | None:
    """The first reason ``contribute`` would fail, in the order the scheduler expects them, or None.

    ``stake`` (the worker's hub account and the task's deal) is None when no stake is locked
    (contribute-and-finalize).
    """
    if stake is not None:
        account, deal = stake
        if account.stake < deal.worker_stake:
            return ReplicateStatusCause.STAKE_TOO_LOW
    if task.status != ChainTaskStatus.ACTIVE:
        return ReplicateStatusCause.TASK_NOT_ACTIVE
    if task.contribution_deadline <= now:
        return ReplicateStatusCause.CONTRIBUTION_TIMEOUT
    if task.has_contributor(worker) or contribution.status != ChainContributionStatus.UNSET:
        return ReplicateStatusCause.CONTRIBUTION_ALREADY_SET
    return None


def reveal_cause(
    task: ChainTask, contribution: ChainContribution, worker: str, result_digest: str, now: int
) -> ReplicateStatusCause | None:
    """Why ``reveal(task_id, result_digest)`` from ``worker`` would revert, or None."""
    if task.status != ChainTaskStatus.REVEALING:
        return ReplicateStatusCause.CANNOT_REVEAL
    if task.reveal_deadline <= now:
        return ReplicateStatusCause.REVEAL_TIMEOUT
    if contribution.status != ChainContributionStatus.CONTRIBUTED:
        return ReplicateStatusCause.CANNOT_REVEAL
    task_id = task.task_id
    expected_hash = result_hash(task_id, result_digest).lower()
    if contribution.result_hash != task.consensus_value or contribution.result_hash != expected_hash:
        return ReplicateStatusCause.CANNOT_REVEAL
    if contribution.result_seal != result_seal(worker, task_id, result_digest).lower():
        return ReplicateStatusCause.CANNOT_REVEAL
    return None


async def cannot_contribute_cause(
    client: ChainClient, task_id: str, worker: str, *, check_stake: bool = True, now: int | None = None
) -> ReplicateStatusCause | None:
    """``contribute_cause`` from the views read now; CHAIN_UNREACHABLE when the node does not answer.

    ``check_stake`` is False for contribute-and-finalize, which locks no stake. ``now`` defaults to
    the latest block timestamp.
    """
    try:
        views = await client.task_views(task_id, worker, stake=check_stake, balance=False, fee=None)
        stake = None
        if views.account is not None:
            stake = (views.account, await client.deal(views.task.deal_id))
    except ChainError:
        return ReplicateStatusCause.CHAIN_UNREACHABLE
    when = views.block.timestamp if now is None else now
    return contribute_cause(views.task, views.contribution, worker, when, stake=stake)


async def cannot_reveal_cause(
    client: ChainClient, task_id: str, worker: str, result_digest: str, *, now: int | None = None
) -> ReplicateStatusCause | None:
    """``reveal_cause`` from the views read now; CHAIN_UNREACHABLE when the node does not answer."""
    try:
        views = await client.task_views(task_id, worker, stake=False, balance=False, fee=None)
    except ChainError:
        return ReplicateStatusCause.CHAIN_UNREACHABLE
    when = views.block.timestamp if now is None else now
    return reveal_cause(views.task, views.contribution, worker, result_digest, when)
