"""The scheduler's background loop: picks up deals, moves tasks on, runs the detectors.

One loop, polling the chain every ``poll_interval_s`` (or sooner when a handler records a status),
does what iexec-core spreads over listeners and cron detectors (``TaskUpdateManager``, ``TaskListeners``,
the ``detector`` package): initialize the
tasks of deals sent to our workerpool, detect consensus, request the upload, finalize, and fail
tasks on contribution timeout or final deadline; lost workers and reveal timeouts are marked on
their replicates. "Now" for deadlines is the latest block's timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Protocol

from worker.protocol.crypto import chain_task_id, to_bytes
from worker.protocol.models import ReplicateStatusDetails, TaskNotification, TaskNotificationExtra
from worker.protocol.status import (
    FINAL_STATUSES,
    ChainTaskStatus,
    ReplicateStatus,
    ReplicateStatusCause,
    TaskAbortCause,
    TaskNotificationType,
    is_valid_transition,
)
from worker.protocol.tee import is_tee_tag, tee_framework

from .chain import ChainTask, DealView, SchedulerChain
from .sms import SchedulerSms
from .state import (
    CONTRIBUTION_PHASE,
    REVEAL_PHASE,
    RUNNING_REPLICATE_STATUSES,
    DealParams,
    Modifier,
    Replicate,
    SchedulerState,
    Task,
    TaskStatus,
)

log = logging.getLogger(__name__)

RS = ReplicateStatus
TS = TaskStatus
TNT = TaskNotificationType


def _current(replicate: Replicate) -> ReplicateStatus | None:
    """The replicate's status seen through RECOVERING: a recovered worker is back where it was.

    Recovery records what the chain shows (REVEALED, say) and then RECOVERING, so the last status
    alone would hide a revealed replicate from the upload request forever. WORKER_LOST still counts.
    """
    for change in reversed(replicate.history):
        if change.status is not RS.RECOVERING:
            return change.status
    return None


class Publisher(Protocol):
    async def publish(self, destination: str, body: str, content_type: str = "application/json") -> None: ...


@dataclass(frozen=True)
class DutySettings:
    workerpool: str
    poll_interval_s: float = 0.5
    worker_lost_after_s: float = 60.0
    result_upload_timeout_s: float = 120.0
    from_block: int | None = None  # None: deals announced from the scheduler's start on


class Duties:
    def __init__(
        self,
        state: SchedulerState,
        chain: SchedulerChain,
        publisher: Publisher,
        settings: DutySettings,
        sms: SchedulerSms | None = None,
    ) -> None:
        self._state = state
        self._chain = chain
        self._publisher = publisher
        self._settings = settings
        self._sms = sms
        self._wake = asyncio.Event()
        self._next_block: int | None = settings.from_block

    def wake(self) -> None:
        """Run the next round now (a replicate status changed)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The development scheduler outlives a node hiccup: log it and poll again.
                log.exception("scheduler round failed; retrying in %.1f s", self._settings.poll_interval_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.poll_interval_s):
                    waiters = {asyncio.create_task(stop.wait()), asyncio.create_task(self._wake.wait())}
                    try:
                        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for waiter in waiters:
                            waiter.cancel()

    async def observe_chain(self) -> None:
        block = await self._chain.latest_block()
        self._state.chain_block, self._state.chain_now = block.number, block.timestamp
        self._state.last_chain_ok = time.monotonic()

    async def tick(self) -> None:
        await self.observe_chain()
        await self._pick_up_deals()
        for task in list(self._state.tasks.values()):
            if task.is_final:
                continue
            try:
                async with task.lock:
                    await self._update_task(task)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task %s: update failed; retried next round", task.task_id)
        await self._detect_lost_workers()

    # -- deals --------------------------------------------------------------------------------

    async def _pick_up_deals(self) -> None:
        head = self._state.chain_block
        if self._next_block is None:
            self._next_block = head + 1
        if self._next_block > head:
            return
        deals = await self._chain.deals_for_workerpool(self._settings.workerpool, self._next_block, head)
        for deal_id in deals:
            await self._initialize_deal(deal_id)
        self._next_block = head + 1

    async def _initialize_deal(self, deal_id: str) -> None:
        deal = await self._chain.view_deal(deal_id)
        if deal is None:
            log.warning("deal %s announced to our workerpool is not readable on chain; skipped", deal_id)
            return
        if is_tee_tag(deal.tag) and deal.trust not in (0, 1):
            # iexec-core DealWatcherService: a TEE deal is proved by one enclave, never by consensus.
            log.warning(
                "deal %s: TEE deal with trust %d ignored (TEE deals need trust 0 or 1)", deal_id, deal.trust
            )
            return
        sms_url = await self._sms_url(deal)
        for index in range(deal.bot_first, deal.bot_first + deal.bot_size):
            task_id = chain_task_id(deal_id, index)
            if task_id in self._state.tasks:
                continue
            if is_tee_tag(deal.tag) and sms_url is None:
                self._state.tasks[task_id] = self._task(deal_id, index, deal, None, TS.INITIALIZE_FAILED)
                log.warning(
                    "task %s: no SMS serves the deal's TEE framework (tag %s): not initialized",
                    task_id,
                    deal.tag,
                )
                continue
            chain_task = await self._chain.view_task(task_id)
            if chain_task is None:
                try:
                    await self._chain.initialize(deal_id, index)
                except Exception:
                    log.exception("task %s (deal %s, index %d): initialize failed", task_id, deal_id, index)
                    continue
                chain_task = await self._chain.view_task(task_id)
            if chain_task is None:
                log.error("task %s: not on chain after initialize", task_id)
                continue
            task = self._task(deal_id, index, deal, chain_task)
            if sms_url is not None:
                assert self._sms is not None
                task.sms_url = sms_url
                challenge = await self._sms.enclave_challenge(sms_url, task_id)
                if challenge is None:
                    task.set_status(TS.RECEIVED, TS.INITIALIZING, TS.INITIALIZE_FAILED, TS.FAILED)
                    self._state.tasks[task_id] = task
                    continue
                task.enclave_challenge = challenge
                await self._sms.push_result_proxy_url(sms_url)
            task.set_status(TS.RECEIVED, TS.INITIALIZING, TS.INITIALIZED)
            self._state.tasks[task_id] = task
            log.info("task %s: initialized (deal %s, index %d)", task_id, deal_id, index)

    async def _sms_url(self, deal: DealView) -> str | None:
        framework = tee_framework(deal.tag)
        if framework is None or self._sms is None:
            return None
        return await self._sms.verified_url(framework)

    def _task(
        self,
        deal_id: str,
        index: int,
        deal: DealView,
        chain_task: ChainTask | None,
        failed: TaskStatus | None = None,
    ) -> Task:
        task = Task(
            task_id=chain_task_id(deal_id, index),
            deal_id=deal_id,
            index=index,
            trust=deal.trust,
            tag=deal.tag,
            callback=deal.callback,
            deal_params=DealParams.parse(deal.params),
            timeref=chain_task.timeref if chain_task else 0,
            contribution_deadline=chain_task.contribution_deadline if chain_task else 0,
            final_deadline=chain_task.final_deadline if chain_task else 0,
            initialization_block=self._state.chain_block,
        )
        if failed is not None:
            task.set_status(TS.RECEIVED, TS.INITIALIZING, failed, TS.FAILED)
        return task

    # -- task progression ---------------------------------------------------------------------

    async def _update_task(self, task: Task) -> None:
        now = self._state.chain_now
        if task.final_deadline <= now:
            task.set_status(TS.FINAL_DEADLINE_REACHED)
            await self._fail(task, None)
            return
        if task.status in CONTRIBUTION_PHASE and task.contribution_deadline <= now:
            task.set_status(TS.CONTRIBUTION_TIMEOUT)
            await self._fail(task, TaskAbortCause.CONTRIBUTION_TIMEOUT)
            return
        if task.status is TS.INITIALIZED and any(
            r.last_relevant_status in RUNNING_REPLICATE_STATUSES for r in task.replicates.values()
        ):
            task.set_status(TS.RUNNING)
        if task.status is TS.RUNNING and task.contribute_and_finalize:
            await self._finalized_by_worker(task)
        elif task.status is TS.RUNNING:
            await self._detect_consensus(task)
        if task.status in REVEAL_PHASE and task.reveal_deadline and task.reveal_deadline <= now:
            self._reveal_timeout(task)
        if task.status is TS.CONSENSUS_REACHED and any(
            _current(r) is RS.REVEALED for r in task.replicates.values()
        ):
            task.set_status(TS.AT_LEAST_ONE_REVEALED)
        if task.status is TS.AT_LEAST_ONE_REVEALED:
            await self._request_upload(task)
        if task.status is TS.RESULT_UPLOADING:
            await self._follow_upload(task)
        if task.status is TS.RESULT_UPLOADED:
            await self._finalize_when_ready(task)

    async def _finalized_by_worker(self, task: Task) -> None:
        """A trust-1 TEE task: the worker's ``contributeAndFinalize`` already finalized it on chain
        (iexec-core ``running2Finalized2Completed``): FINALIZED and COMPLETED without a transaction."""
        done = [r for r in task.replicates.values() if r.contains(RS.CONTRIBUTE_AND_FINALIZE_DONE)]
        if not done:
            return
        if len(done) > 1:
            task.set_status(TS.RUNNING_FAILED)
            await self._fail(task, None)
            return
        chain_task = await self._chain.view_task(task.task_id)
        if chain_task is None or chain_task.status is not ChainTaskStatus.COMPLETED:
            return
        task.result_link = chain_task.results.decode("utf-8", "replace")
        task.chain_callback_data = done[0].chain_callback_data
        task.set_status(TS.FINALIZED, TS.COMPLETED)
        log.info("task %s: completed by %s's contributeAndFinalize", task.task_id, done[0].wallet)
        self._release_workers(task)
        await self._notify(task, TNT.PLEASE_COMPLETE, [], None)

    async def _detect_consensus(self, task: Task) -> None:
        chain_task = await self._chain.view_task(task.task_id)
        if chain_task is None or chain_task.status is not ChainTaskStatus.REVEALING:
            return
        consensus = chain_task.consensus_value.lower()
        winners = [
            r.wallet
            for r in task.replicates.values()
            if r.last_relevant_status is RS.CONTRIBUTED and (r.contribution_hash or "").lower() == consensus
        ]
        if len(winners) < chain_task.winner_counter:
            return
        task.consensus = consensus
        task.reveal_deadline = chain_task.reveal_deadline
        task.consensus_block = await self._chain.consensus_block(task.task_id, task.initialization_block)
        task.set_status(TS.CONSENSUS_REACHED)
        log.info("task %s: consensus reached at block %d", task.task_id, task.consensus_block)
        await self._notify(
            task, TNT.PLEASE_REVEAL, winners, TaskNotificationExtra(block_number=task.consensus_block)
        )
        losers = [wallet for wallet in task.replicates if wallet not in winners]
        if losers:
            extra = TaskNotificationExtra(task_abort_cause=TaskAbortCause.CONSENSUS_REACHED)
            await self._notify(task, TNT.PLEASE_ABORT, losers, extra)

    def _reveal_timeout(self, task: Task) -> None:
        for replicate in task.replicates.values():
            if replicate.last_relevant_status in (RS.CONTRIBUTED, RS.REVEALING) and not replicate.contains(
                RS.FAILED
            ):
                details = ReplicateStatusDetails(cause=ReplicateStatusCause.REVEAL_TIMEOUT)
                replicate.append(RS.FAILED, Modifier.POOL_MANAGER, details)
                log.info("task %s: %s did not reveal in time", task.task_id, replicate.wallet)

    async def _request_upload(self, task: Task) -> None:
        if any(
            _current(r) in (RS.RESULT_UPLOAD_REQUESTED, RS.RESULT_UPLOADING) for r in task.replicates.values()
        ):
            return
        revealed = [r for r in task.replicates.values() if _current(r) is RS.REVEALED]
        if not revealed:
            return
        chosen = random.choice(revealed)
        chosen.append(RS.RESULT_UPLOAD_REQUESTED, Modifier.POOL_MANAGER)
        if task.status is not TS.RESULT_UPLOADING:
            task.set_status(TS.RESULT_UPLOADING)
        else:
            task.status_changed_at = time.monotonic()
        log.info("task %s: result upload requested from %s", task.task_id, chosen.wallet)
        await self._notify(task, TNT.PLEASE_UPLOAD, [chosen.wallet], None)

    async def _follow_upload(self, task: Task) -> None:
        uploaded = [r for r in task.replicates.values() if _current(r) is RS.RESULT_UPLOADED]
        if uploaded:
            task.result_link = uploaded[0].result_link
            task.chain_callback_data = uploaded[0].chain_callback_data
            task.set_status(TS.RESULT_UPLOADED)
            return
        uploader = next(
            (
                r
                for r in task.replicates.values()
                if _current(r) in (RS.RESULT_UPLOAD_REQUESTED, RS.RESULT_UPLOADING)
            ),
            None,
        )
        timed_out = time.monotonic() - task.status_changed_at > self._settings.result_upload_timeout_s
        if uploader is not None and timed_out:
            uploader.append(RS.RESULT_UPLOAD_FAILED, Modifier.POOL_MANAGER)
            uploader = None
        if uploader is None:
            await self._request_upload(task)

    async def _finalize_when_ready(self, task: Task) -> None:
        chain_task = await self._chain.view_task(task.task_id)
        now = self._state.chain_now
        if (
            chain_task is None
            or chain_task.status is not ChainTaskStatus.REVEALING
            or now >= task.final_deadline
        ):
            return
        reveals = chain_task.reveal_counter
        enough = reveals == chain_task.winner_counter or (reveals > 0 and now >= chain_task.reveal_deadline)
        revealed_offchain = sum(1 for r in task.replicates.values() if r.contains(RS.REVEALED))
        if not enough or reveals != revealed_offchain:
            return
        task.set_status(TS.FINALIZING)
        results = (task.result_link or "").encode()
        callback = (
            to_bytes(task.chain_callback_data) if task.has_callback and task.chain_callback_data else b""
        )
        try:
            await self._chain.finalize(task.task_id, results, callback)
        except Exception:
            log.exception("task %s: finalize failed", task.task_id)
            task.set_status(TS.FINALIZE_FAILED)
            await self._fail(task, None)
            return
        task.set_status(TS.FINALIZED, TS.COMPLETED)
        log.info("task %s: completed", task.task_id)
        self._release_workers(task)
        await self._notify(task, TNT.PLEASE_COMPLETE, [], None)

    async def _fail(self, task: Task, cause: TaskAbortCause | None) -> None:
        task.set_status(TS.FAILED)
        log.info("task %s: failed after %s", task.task_id, task.statuses[-2])
        self._release_workers(task)
        if cause is None:
            await self._notify(task, TNT.PLEASE_ABORT, [], None)
        elif task.replicates:
            await self._notify(
                task, TNT.PLEASE_ABORT, list(task.replicates), TaskNotificationExtra(task_abort_cause=cause)
            )

    def _release_workers(self, task: Task) -> None:
        for wallet in task.replicates:
            self._state.worker(wallet).release(task.task_id, participation=True)

    # -- workers ------------------------------------------------------------------------------

    async def _detect_lost_workers(self) -> None:
        horizon = time.monotonic() - self._settings.worker_lost_after_s
        for worker in self._state.workers.values():
            if worker.last_alive is None or worker.last_alive >= horizon:
                continue
            for task_id in list(worker.participating):
                task = self._state.tasks.get(task_id)
                replicate = task.replicates.get(worker.wallet) if task else None
                if task is None or replicate is None or task.final_deadline <= self._state.chain_now:
                    continue
                async with task.lock:
                    if self._mark_lost(replicate):
                        log.info("task %s: worker %s is lost", task_id, worker.wallet)

    @staticmethod
    def _mark_lost(replicate: Replicate) -> bool:
        last = replicate.last_status
        if last in FINAL_STATUSES or replicate.contains(RS.WORKER_LOST):
            return False
        if not is_valid_transition(last, RS.WORKER_LOST):
            return False
        replicate.append(RS.WORKER_LOST, Modifier.POOL_MANAGER)
        return True

    # -- push ---------------------------------------------------------------------------------

    async def _notify(
        self, task: Task, kind: TaskNotificationType, wallets: list[str], extra: TaskNotificationExtra | None
    ) -> None:
        notification = TaskNotification(
            chain_task_id=task.task_id,
            workers_address=wallets,
            task_notification_type=kind,
            task_notification_extra=extra,
        )
        self._state.notifications.append(notification)
        await self._publisher.publish(f"/topic/task/{task.task_id}", notification.to_json())
