"""Checking a WorkerpoolAuthorization before acting on it (iexec-worker ``WorkerpoolAuthorizationService``).

Everything is local or an ``eth_call``: a forged authorization costs the worker no gas.
"""

from __future__ import annotations

import functools
import logging
from typing import Protocol

from worker.protocol.crypto import ZERO_ADDRESS, authorization_hash, recover_eip191
from worker.protocol.models import WorkerpoolAuthorization

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1024)
def signer_of(digest: str, signature: str) -> str:
    """``recover_eip191``, remembered: a pure function costing milliseconds of CPU, asked once when the
    replicate is taken and again before its contribution. Raises ValueError for a malformed signature."""
    return recover_eip191(digest, signature)


class PoolOwnerReader(Protocol):
    async def workerpool_owner(self, pool_address: str) -> str: ...


async def verify_authorization(
    client: PoolOwnerReader,
    authorization: WorkerpoolAuthorization,
    pool_address: str,
    worker_address: str,
    *,
    enclave_challenge: str | None = ZERO_ADDRESS,
    task_id: str | None = None,
) -> bool:
    """True when the authorization names this worker (and task, when given) with the expected
    enclave challenge and is signed (EIP-191 over authHash) by ``owner()`` of the configured pool.
    ``enclave_challenge`` None takes the one it carries (a TEE task's, which only the SMS knows); the
    signature covers it either way.

    Raises ChainError when the pool owner cannot be read: the answer is then unknown, not "no".
    """
    if authorization.worker_wallet.lower() != worker_address.lower():
        log.warning(
            "authorization for task %s names wallet %s, not this worker",
            authorization.chain_task_id,
            authorization.worker_wallet,
        )
        return False
    if enclave_challenge is not None and authorization.enclave_challenge.lower() != enclave_challenge.lower():
        log.warning(
            "authorization for task %s has an unexpected enclave challenge", authorization.chain_task_id
        )
        return False
    if task_id is not None and authorization.chain_task_id.lower() != task_id.lower():
        log.warning("authorization for task %s presented for task %s", authorization.chain_task_id, task_id)
        return False
    digest = authorization_hash(
        authorization.worker_wallet, authorization.chain_task_id, authorization.enclave_challenge
    )
    try:
        signer = signer_of(digest, authorization.signature.value)
    except ValueError:
        log.warning("authorization for task %s: malformed signature", authorization.chain_task_id)
        return False
    owner = await client.workerpool_owner(pool_address)
    if signer != owner.lower():
        log.warning(
            "authorization for task %s signed by %s, not by %s (owner of workerpool %s)",
            authorization.chain_task_id,
            signer,
            owner,
            pool_address,
        )
        return False
    return True
