"""Follows the chain for the worker's own tasks, so that no step depends on the push channel alone.

Every poll reads the head of every endpoint (which also sets lagging nodes aside), then the hub
logs of the watched tasks since the last poll, re-reading ``reorg_depth`` blocks back (as deep as a
receipt must be, IEXEC_WORKER_TX_CONFIRMATIONS) so that a short reorganisation cannot hide an event. What it does with them:

- ``TaskConsensus`` whose value is this worker's own resultHash (read from ``viewContribution``,
  never assumed): a local PLEASE_REVEAL carrying the consensus block, once the replicate is
  CONTRIBUTED and ``reveal_allowed`` agrees (the scheduler has seen the consensus too: iexec-core
  counts as winners only replicates still CONTRIBUTED then, so an earlier reveal would keep the task
  from its reveal phase). It covers a PLEASE_REVEAL lost while the push channel was down; the
  pipeline drops it when the scheduler's own notification came first.
- A deadline passed, by the latest block's timestamp (the contract's clock): contribution deadline
  while this worker has no contribution on chain, reveal deadline while its contribution is not
  proved, final deadline while the task is not completed: a local PLEASE_ABORT, whose cause says
  which (CONTRIBUTION_TIMEOUT, REVEAL_TIMEOUT; past the final deadline, what this worker still lacked
  then, or TASK_NOT_ACTIVE once its own part was done).
- ``TaskFinalize``: logged, and the task's deadlines stop mattering. No local PLEASE_COMPLETE:
  COMPLETING is only valid once the scheduler has seen the finalization itself, and it says so in
  its answer to RESULT_UPLOADED or by the push channel; a notification missed there is replayed by
  the scheduler's interrupted-replicates recovery, so a local one would only race it.

A task enters the watch when the replicate is taken (or resumed); its past ``backfill_blocks``
blocks are read once then, so a consensus reached while the worker was down is not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from worker.chain.abi import TASK_CONSENSUS_TOPIC, TASK_FINALIZE_TOPIC
from worker.chain.client import ChainClient
from worker.protocol.crypto import to_hex
from worker.protocol.errors import ChainError
from worker.protocol.status import (
    FINAL_STATUSES,
    ChainContributionStatus,
    ChainTaskStatus,
    ReplicateStatus,
    TaskAbortCause,
    TaskNotificationType,
)

log = logging.getLogger("iexec.worker.watcher")

DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_REORG_DEPTH = 3
DEFAULT_BACKFILL_BLOCKS = 5_000

_FINAL_DEADLINE_CAUSES: dict[ChainContributionStatus, TaskAbortCause] = {
    ChainContributionStatus.UNSET: TaskAbortCause.CONTRIBUTION_TIMEOUT,
    ChainContributionStatus.CONTRIBUTED: TaskAbortCause.REVEAL_TIMEOUT,
}
Deliver = Callable[[str, TaskNotificationType, int, TaskAbortCause | None], None]
"""(task id, action, block number or 0, abort cause or None)"""
RevealAllowed = Callable[[str], Awaitable[bool]]
"""Whether the worker may reveal for this task now (asked once the consensus is this worker's result)."""

_BEFORE_REVEALED = frozenset(s for s in ReplicateStatus if s.ordinal < ReplicateStatus.REVEALED.ordinal)


@dataclass
class _Watched:
    contribution_deadline: int
    final_deadline: int
    reveal_deadline: int = 0
    consensus: tuple[int, str] | None = None  # (block, value) of the TaskConsensus seen
    revealed_sent: bool = False
    waiting_logged: bool = False
    finalized: bool = False
    aborted: bool = False


class ChainWatcher:
    def __init__(
        self,
        client: ChainClient,
        worker: str,
        tasks: Callable[[], Iterable[tuple[str, ReplicateStatus | None]]],
        deliver: Deliver,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        reorg_depth: int = DEFAULT_REORG_DEPTH,
        backfill_blocks: int = DEFAULT_BACKFILL_BLOCKS,
        reveal_allowed: RevealAllowed | None = None,
    ) -> None:
        """``tasks`` lists the replicates held now, with their status; ``deliver`` hands over a local notification.

        ``reveal_allowed`` (default: always) is asked again at every poll until it agrees.
        """
        self._reveal_allowed = reveal_allowed
        self._client = client
        self._worker = worker.lower()
        self._tasks = tasks
        self._deliver = deliver
        self._poll_interval = poll_interval
        self._reorg_depth = reorg_depth
        self._backfill = backfill_blocks
        self._watched: dict[str, _Watched] = {}
        self._scanned: int | None = None
        self.latest_block: int | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop``; node errors are logged and retried at the next poll."""
        failing = False
        while not stop.is_set():
            try:
                await self.poll()
            except ChainError as exc:
                if not failing:
                    log.warning("chain watch: %s; retrying every %.0f s", exc, self._poll_interval)
                failing = True
            else:
                if failing:
                    log.info("chain watch: the node answers again")
                failing = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._poll_interval)

    async def poll(self) -> None:
        """One round: heads, new tasks, logs since the last round, consensus and deadlines."""
        best = await self._client.refresh_heads()
        self.latest_block = best
        held = {task_id.lower(): status for task_id, status in self._tasks()}
        for gone in set(self._watched) - set(held):
            del self._watched[gone]
        new = [task_id for task_id in held if task_id not in self._watched]
        for task_id in new:
            task = await self._client.task(task_id)
            self._watched[task_id] = _Watched(
                contribution_deadline=task.contribution_deadline,
                final_deadline=task.final_deadline,
                reveal_deadline=task.reveal_deadline,
                finalized=task.status is ChainTaskStatus.COMPLETED,
            )
        if new:
            await self._scan(new, max(best - self._backfill, 0), best)
        if self._scanned is None or best != self._scanned:
            start = best if self._scanned is None else min(self._scanned, best)
            others = [task_id for task_id in self._watched if task_id not in new]
            if others:
                await self._scan(others, max(start + 1 - self._reorg_depth, 0), best)
        self._scanned = best
        if not self._watched:
            return
        await self._consensus(held)
        await self._deadlines(held)

    async def _scan(self, task_ids: list[str], first: int, last: int) -> None:
        if first > last:
            return
        logs = await self._client.logs([[TASK_CONSENSUS_TOPIC, TASK_FINALIZE_TOPIC], task_ids], first, last)
        for entry in logs:
            topics = [to_hex(bytes(t)).lower() for t in entry["topics"]]
            task_id = topics[1]
            watched = self._watched.get(task_id)
            if watched is None:
                continue
            block = int(entry["blockNumber"])
            if topics[0] == TASK_CONSENSUS_TOPIC:
                value = to_hex(bytes(entry["data"])[:32]).lower()
                if watched.consensus != (block, value):
                    log.info("%s: consensus on chain in block %d", task_id, block)
                    watched.consensus = (block, value)
                    watched.reveal_deadline = (await self._client.task(task_id)).reveal_deadline
            elif not watched.finalized:
                log.info("%s: finalized on chain in block %d", task_id, block)
                watched.finalized = True

    async def _consensus(self, held: dict[str, ReplicateStatus | None]) -> None:
        for task_id, watched in self._watched.items():
            if watched.consensus is None or watched.revealed_sent:
                continue
            if held.get(task_id) is not ReplicateStatus.CONTRIBUTED:
                continue  # the pipeline would drop it; try again once the contribution is reported
            block, value = watched.consensus
            contribution = await self._client.contribution(task_id, self._worker)
            if (
                contribution.status is not ChainContributionStatus.CONTRIBUTED
                or contribution.result_hash != value
            ):
                watched.revealed_sent = True
                log.info("%s: the consensus is not this worker's result; the scheduler decides", task_id)
                continue
            if self._reveal_allowed is not None and not await self._reveal_allowed(task_id):
                if not watched.waiting_logged:
                    watched.waiting_logged = True
                    log.info(
                        "%s: this worker's result won the consensus on chain (block %d); revealing once the "
                        "scheduler has seen it too",
                        task_id,
                        block,
                    )
                continue
            watched.revealed_sent = True
            log.info("%s: this worker's result won the consensus (block %d): reveal", task_id, block)
            self._deliver(task_id, TaskNotificationType.PLEASE_REVEAL, block, None)

    async def _deadlines(self, held: dict[str, ReplicateStatus | None]) -> None:
        now = (await self._client.latest_block()).timestamp
        for task_id, watched in self._watched.items():
            if watched.finalized or watched.aborted:
                continue
            status = held.get(task_id)
            if status is None or status in FINAL_STATUSES or status is ReplicateStatus.ABORTED:
                continue
            reason: str | None = None
            cause: TaskAbortCause | None = None
            if now >= watched.final_deadline > 0:
                # Named by what this worker still lacked when the task could no longer complete.
                contribution = await self._client.contribution(task_id, self._worker)
                reason, cause = (
                    "final deadline",
                    _FINAL_DEADLINE_CAUSES.get(contribution.status, TaskAbortCause.TASK_NOT_ACTIVE),
                )
            elif now >= watched.contribution_deadline > 0 and watched.consensus is None:
                contribution = await self._client.contribution(task_id, self._worker)
                if contribution.status is ChainContributionStatus.UNSET:
                    reason, cause = "contribution deadline", TaskAbortCause.CONTRIBUTION_TIMEOUT
            elif now >= watched.reveal_deadline > 0 and status in _BEFORE_REVEALED:
                contribution = await self._client.contribution(task_id, self._worker)
                if contribution.status is not ChainContributionStatus.PROVED:
                    reason, cause = "reveal deadline", TaskAbortCause.REVEAL_TIMEOUT
            if reason is None:
                continue
            watched.aborted = True
            log.warning("%s: the %s has passed on chain (block time %d): aborting", task_id, reason, now)
            self._deliver(task_id, TaskNotificationType.PLEASE_ABORT, 0, cause)
