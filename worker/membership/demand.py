"""Asks the scheduler for replicates while a computing slot is free, the wallet can pay for gas and the
disk under the base folder has its minimum free space (``membership.disk``).

Every offer is checked before it is taken: the authorization must name this worker and be signed by
the owner of the configured workerpool, and the task must exist on chain with an enclave challenge
exactly when its deal names a TEE framework (PoCo refuses any other contribution). A refused offer
costs no gas and no slot; it is logged with the fix when the operator can act on it. A TEE task is
taken even when this worker cannot run it: START then fails with the reference's cause
(TEE_NOT_SUPPORTED), which the scheduler sees.
"""

from __future__ import annotations

import asyncio
import logging

from worker.chain import TaskNotFound, verify_authorization
from worker.membership.disk import DiskSpace
from worker.membership.health import Health
from worker.membership.ports import Chain, Replicates, Scheduler
from worker.membership.waiting import sleep_or_stop
from worker.metrics import Metrics
from worker.protocol.crypto import ZERO_ADDRESS
from worker.protocol.errors import WorkerError
from worker.protocol.models import WorkerpoolAuthorization

log = logging.getLogger("iexec.worker")

MIN_ASK_PERIOD = 0.5


class ReplicateDemand:
    def __init__(
        self,
        scheduler: Scheduler,
        chain: Chain,
        replicates: Replicates,
        health: Health,
        metrics: Metrics,
        *,
        pool_address: str,
        wallet: str,
        ask_period: float,
        disk: DiskSpace | None = None,
    ) -> None:
        """``disk``: the free-space watch; while it says low, no replicate is asked for."""
        self._scheduler = scheduler
        self._chain = chain
        self._replicates = replicates
        self._health = health
        self._metrics = metrics
        self._pool = pool_address.lower()
        self._wallet = wallet.lower()
        self._period = max(ask_period, MIN_ASK_PERIOD)
        self._disk = disk

    async def ask_once(self) -> bool:
        """Ask for one replicate if there is room; True when one was taken."""
        if self._replicates.free_slots <= 0 or self._health.out_of_gas:
            return False
        if self._disk is not None and await self._disk.check():
            return False
        try:
            block = await self._chain.latest_block_number()
            summary = await self._scheduler.ask_for_replicate(block)
        except WorkerError as exc:
            self._metrics.scheduler_errors.labels("available").inc()
            log.warning("asking for a replicate failed: %s", exc)
            return False
        if summary is None:
            return False
        authorization = summary.workerpool_authorization
        if not await self._acceptable(authorization):
            return False
        return await self._replicates.admit(authorization, sms_url=summary.sms_url)

    async def _acceptable(self, authorization: WorkerpoolAuthorization) -> bool:
        task_id = authorization.chain_task_id
        try:
            valid = await verify_authorization(
                self._chain, authorization, self._pool, self._wallet, enclave_challenge=None
            )
            if valid:
                description = await self._chain.task_description(task_id)
                tee = description.tee_framework is not None
                if tee == (authorization.enclave_challenge.lower() == ZERO_ADDRESS):
                    log.error(
                        "%s: the scheduler's authorization %s an enclave challenge for a %s task; replicate "
                        "refused (PoCo would refuse the contribution)",
                        task_id, "lacks" if tee else "carries", "TEE" if tee else "standard",
                    )  # fmt: skip
                    return False
        except TaskNotFound:
            log.warning("%s: offered by the scheduler but not found on chain; skipped", task_id)
            return False
        except WorkerError as exc:
            log.warning("%s: cannot check the offered replicate: %s", task_id, exc)
            return False
        if not valid:
            log.error(
                "%s: authorization not signed by the owner of POOL_ADDRESS=%s; replicate refused (check POOL_ADDRESS)",
                task_id,
                self._pool,
            )
        return valid

    async def run(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, self._period):
            await self.ask_once()
