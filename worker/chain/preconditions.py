"""Why a contribute or reveal would revert, named from the hub views before anything is sent.

PoCo checks are mostly bare ``require`` statements (PoCo ``IexecPoco2Facet``), so a revert alone says
nothing; the same conditions read from the views give the replicate its ReplicateStatusCause.
Deadlines are compared with the latest block's timestamp, the clock the contract uses.
"""

from __future__ import annotations

import asyncio

from worker.chain.client import ChainClient
from worker.protocol.crypto import result_hash, result_seal
from worker.protocol.errors import ChainError
from worker.protocol.status import ChainContributionStatus, ChainTaskStatus, ReplicateStatusCause


async def cannot_contribute_cause(
    client: ChainClient, task_id: str, worker: str, *, check_stake: bool = True, now: int | None = None
) -> ReplicateStatusCause | None:
    """The first reason ``contribute`` would fail, in the order the scheduler expects them, or None.

    ``check_stake`` is False for contribute-and-finalize, which locks no stake. ``now`` defaults to
    the latest block timestamp.
    """
    try:
        task = await client.task(task_id)
        if now is None:
            now = (await client.latest_block()).timestamp
        stake_ok = True
        if check_stake:
            deal, account = await asyncio.gather(client.deal(task.deal_id), client.account(worker))
            stake_ok = account.stake >= deal.worker_stake
        contribution = await client.contribution(task_id, worker)
    except ChainError:
        return ReplicateStatusCause.CHAIN_UNREACHABLE
    if not stake_ok:
        return ReplicateStatusCause.STAKE_TOO_LOW
    if task.status != ChainTaskStatus.ACTIVE:
        return ReplicateStatusCause.TASK_NOT_ACTIVE
    if task.contribution_deadline <= now:
        return ReplicateStatusCause.CONTRIBUTION_TIMEOUT
    if task.has_contributor(worker) or contribution.status != ChainContributionStatus.UNSET:
        return ReplicateStatusCause.CONTRIBUTION_ALREADY_SET
    return None


async def cannot_reveal_cause(
    client: ChainClient, task_id: str, worker: str, result_digest: str, *, now: int | None = None
) -> ReplicateStatusCause | None:
    """Why ``reveal(task_id, result_digest)`` from ``worker`` would revert, or None."""
    try:
        task, contribution = await asyncio.gather(client.task(task_id), client.contribution(task_id, worker))
        if now is None:
            now = (await client.latest_block()).timestamp
    except ChainError:
        return ReplicateStatusCause.CHAIN_UNREACHABLE
    if task.status != ChainTaskStatus.REVEALING:
        return ReplicateStatusCause.CANNOT_REVEAL
    if task.reveal_deadline <= now:
        return ReplicateStatusCause.REVEAL_TIMEOUT
    if contribution.status != ChainContributionStatus.CONTRIBUTED:
        return ReplicateStatusCause.CANNOT_REVEAL
    expected_hash = result_hash(task_id, result_digest).lower()
    if contribution.result_hash != task.consensus_value or contribution.result_hash != expected_hash:
        return ReplicateStatusCause.CANNOT_REVEAL
    if contribution.result_seal != result_seal(worker, task_id, result_digest).lower():
        return ReplicateStatusCause.CANNOT_REVEAL
    return None
