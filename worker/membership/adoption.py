"""Takes back, at start-up, a replicate the scheduler gave this worker but the worker never stored.

A worker killed between receiving a replicate and writing it to its store has no record of it, while
the scheduler has: its interrupted-replicates answer lists it with PLEASE_CONTRIBUTE (the replicate is
before CONTRIBUTING, nothing of it is on chain), a freshly signed workerpool authorization, and marks
it RECOVERING. Dropping it, as the reference worker does, would leave the task waiting for a
contribution until its deadline. The authorization is checked as an offered one is (this worker, the
pool owner's signature, the enclave challenge matching the deal), then the replicate is taken from
the start; it reports STARTED rather than the STARTING iexec-core refuses from RECOVERING.
"""

from __future__ import annotations

import logging
from typing import Protocol

from worker.chain import verify_authorization
from worker.membership.ports import Chain
from worker.protocol.crypto import ZERO_ADDRESS
from worker.protocol.errors import WorkerError
from worker.protocol.models import TaskNotification, WorkerpoolAuthorization
from worker.protocol.status import TaskNotificationType

log = logging.getLogger("iexec.worker")


class Adopting(Protocol):
    @property
    def active(self) -> list[str]: ...

    async def admit(
        self, authorization: WorkerpoolAuthorization, *, sms_url: str | None = None, recovering: bool = False
    ) -> bool: ...


async def adopt_unstored(
    chain: Chain, replicates: Adopting, interrupted: list[TaskNotification], *, pool_address: str, wallet: str
) -> list[str]:
    """Take every interrupted replicate this worker holds no record of and may still compute; their ids."""
    taken: list[str] = []
    for notification in interrupted:
        task_id = notification.chain_task_id
        if task_id in replicates.active or not notification.concerns(wallet):
            continue
        extra = notification.task_notification_extra
        authorization = extra.workerpool_authorization if extra else None
        if (
            notification.task_notification_type is not TaskNotificationType.PLEASE_CONTRIBUTE
            or authorization is None
        ):
            log.info(
                "%s: the scheduler recovers it with %s but this worker has no record of it; left to the scheduler",
                task_id, notification.task_notification_type,
            )  # fmt: skip
            continue
        try:
            valid = await verify_authorization(
                chain, authorization, pool_address, wallet, enclave_challenge=None
            )
            tee = valid and (await chain.task_description(task_id)).tee_framework is not None
        except WorkerError as exc:
            log.warning(
                "%s: cannot check the recovered replicate's authorization (%s); left to the scheduler",
                task_id,
                exc,
            )
            continue
        if not valid or tee == (authorization.enclave_challenge.lower() == ZERO_ADDRESS):
            log.error(
                "%s: the scheduler's recovery carries an authorization this worker cannot use "
                "(not for this wallet, not signed by the owner of POOL_ADDRESS=%s, or a wrong enclave challenge); "
                "not taken", task_id, pool_address,
            )  # fmt: skip
            continue
        if await replicates.admit(authorization, sms_url=extra.sms_url if extra else None, recovering=True):
            log.warning(
                "%s: received but never stored before the last stop: taken back from the scheduler", task_id
            )
            taken.append(task_id)
    return taken
