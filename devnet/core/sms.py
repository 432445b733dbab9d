"""The development scheduler's side of TEE tasks: the SMS of each framework (iexec-core ``SmsService``).

For a deal whose tag names a framework, iexec-core checks that the SMS configured for it serves that
framework before ``initialize``; after it, asks the SMS for the task's enclave challenge (signing
H(chainTaskId) with the workerpool owner's key) and pushes the result proxy URL as the owner's web2
secret ``iexec-result-iexec-result-proxy-url`` (``pushWorkerpoolResultProxyUrl``). Any failure leaves
the task without a challenge: it then fails to initialize, as in iexec-core.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import aiohttp
from eth_account.signers.local import LocalAccount

from worker.protocol.crypto import sign_eip191
from worker.protocol.tee import RESULT_PROXY_URL, TeeFramework, challenge_request_hash, web2_secret_hash

log = logging.getLogger(__name__)

TIMEOUT = aiohttp.ClientTimeout(total=15)


class SchedulerSms:
    def __init__(
        self,
        urls: Mapping[TeeFramework, str],
        session: aiohttp.ClientSession,
        signer: LocalAccount,
        result_proxy_url: str,
    ) -> None:
        self._urls = {framework: url.rstrip("/") for framework, url in urls.items()}
        self._session = session
        self._signer = signer
        self._result_proxy_url = result_proxy_url

    async def verified_url(self, framework: TeeFramework) -> str | None:
        """The SMS URL for ``framework`` when that SMS serves it (``getVerifiedSmsUrl``)."""
        url = self._urls.get(framework)
        if url is None:
            log.warning("no SMS configured for %s: its tasks cannot be initialized", framework.value)
            return None
        try:
            async with self._session.get(f"{url}/tee/framework", timeout=TIMEOUT) as answer:
                served = json.loads(await answer.text()) if answer.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("SMS %s unreachable: %s", url, exc)
            return None
        if served != framework.value:
            log.warning("SMS %s serves %s, not %s", url, served, framework.value)
            return None
        return url

    async def enclave_challenge(self, url: str, task_id: str) -> str | None:
        signature = sign_eip191(challenge_request_hash(task_id), self._signer.key)
        try:
            async with self._session.post(
                f"{url}/tee/challenges/{task_id}", headers={"Authorization": signature}, timeout=TIMEOUT
            ) as answer:
                text = (await answer.text()).strip()
                if answer.status != 200:
                    log.warning(
                        "SMS %s refused the enclave challenge of %s: HTTP %d", url, task_id, answer.status
                    )
                    return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("SMS %s unreachable for the enclave challenge of %s: %s", url, task_id, exc)
            return None
        return text.lower() if text.startswith("0x") and len(text) == 42 else None

    async def push_result_proxy_url(self, url: str) -> bool:
        owner = self._signer.address.lower()
        value = self._result_proxy_url
        query = {"ownerAddress": owner, "secretName": RESULT_PROXY_URL}
        headers = {
            "Authorization": sign_eip191(web2_secret_hash(owner, RESULT_PROXY_URL, value), self._signer.key)
        }
        try:
            async with self._session.head(f"{url}/secrets/web2", params=query, timeout=TIMEOUT) as answer:
                method = "PUT" if answer.status in (200, 204) else "POST"
            async with self._session.request(
                method,
                f"{url}/secrets/web2",
                params=query,
                data=value.encode(),
                headers=headers,
                timeout=TIMEOUT,
            ) as answer:
                return answer.status in (200, 204)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("SMS %s unreachable to push the result proxy URL: %s", url, exc)
            return False
