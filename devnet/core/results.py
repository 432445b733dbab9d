"""Whether a task's result is stored where its deal says (the scheduler's ``isResultUploaded``)."""

from __future__ import annotations

import logging
from typing import Protocol

import aiohttp

from .state import Task

log = logging.getLogger(__name__)


class ResultChecker(Protocol):
    async def is_uploaded(self, task: Task) -> bool: ...


class ProxyResultChecker:
    """Callback deals and non-IPFS storage count as uploaded; IPFS results are asked to the proxy.

    iexec-core asks ``HEAD /v1/results/{id}`` with its own proxy token; the unauthenticated
    ``GET /v1/results/{id}/ipfshash`` answers the same question without one.
    """

    def __init__(self, default_proxy_url: str, session: aiohttp.ClientSession) -> None:
        self._default = default_proxy_url.rstrip("/")
        self._session = session

    async def is_uploaded(self, task: Task) -> bool:
        if task.has_callback or task.deal_params.storage_provider != "ipfs":
            return True
        base = (task.deal_params.storage_proxy or self._default).rstrip("/")
        if not base:
            return False
        url = f"{base}/v1/results/{task.task_id}/ipfshash"
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
                return response.status == 200 and bool((await response.text()).strip())
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("result proxy %s unreachable while checking task %s: %s", base, task.task_id, exc)
            return False
