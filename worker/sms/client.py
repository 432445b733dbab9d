"""Client of the Secret Management Service (SMS), as the worker calls it.

Routes, bodies and signatures of iexec-sms ``TeeController``, ``SecretController`` and the
iexec-sms-library ``SmsClient``: the framework and the TEE services properties, the session created
for a task (authorised by the worker's EIP-191 signature of the workerpool authorization hash), and
the web2 secrets the worker owns (its result-proxy token). Secrets and signatures are never logged
nor put in an error message.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
from eth_account.signers.local import LocalAccount
from pydantic import ValidationError

from worker.protocol.crypto import authorization_hash, sign_eip191
from worker.protocol.models import WorkerpoolAuthorization
from worker.protocol.redact import display_url
from worker.protocol.tee import (
    TeeFramework,
    TeeServicesProperties,
    TeeSession,
    TeeSessionGenerationError,
    web2_secret_hash,
)
from worker.sms.errors import SmsError, SmsSessionRefused

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 30.0
_MAX_ANSWER = 1024 * 1024  # an SMS answer is a few kB; more is not an SMS
_MAX_ERROR_TEXT = 200


class SmsClient:
    """One SMS, at the URL the scheduler gave with the task (``smsUrl``)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, account: LocalAccount) -> None:
        self._session = session
        self.url = url.rstrip("/")
        self._account = account

    # -- configuration --------------------------------------------------------------------------

    async def framework(self) -> TeeFramework:
        status, text = await self._call("GET", "/tee/framework")
        self._expect(status, text, "GET /tee/framework", 200)
        try:
            value = json.loads(text)
            return TeeFramework(value if isinstance(value, str) else "")
        except ValueError as exc:
            raise SmsError(
                f"{self._where('GET /tee/framework')}: not a TEE framework ({_short(text)!r})"
            ) from exc

    async def properties(self, framework: TeeFramework, version: str) -> TeeServicesProperties | None:
        """Images and enclaves of the pre/post-compute stages; None when the SMS has no such version."""
        path = f"/tee/properties/{framework.value}/{version}"
        status, text = await self._call("GET", path)
        if status in (404, 409):
            return None
        self._expect(status, text, f"GET {path}", 200)
        try:
            return TeeServicesProperties.model_validate_json(text)
        except ValidationError as exc:
            raise SmsError(f"{self._where('GET ' + path)}: unreadable properties") from exc

    # -- sessions -------------------------------------------------------------------------------

    async def create_session(self, authorization: WorkerpoolAuthorization) -> TeeSession:
        """``POST /tee/sessions`` signed by this worker; SmsSessionRefused carries the SMS's error."""
        call = "POST /tee/sessions"
        auth_hash = authorization_hash(
            authorization.worker_wallet, authorization.chain_task_id, authorization.enclave_challenge
        )
        status, text = await self._call(
            "POST",
            "/tee/sessions",
            body=authorization.to_json(),
            headers={
                "Authorization": sign_eip191(auth_hash, self._account.key),
                "Content-Type": "application/json",
            },
        )
        body = _json(text)
        data = body.get("data") if isinstance(body, dict) else None
        if status == 200 and isinstance(data, dict):
            try:
                return TeeSession.model_validate(data)
            except ValidationError:
                pass
        error = body.get("error") if isinstance(body, dict) else None
        try:
            reason = TeeSessionGenerationError(str(error))
        except ValueError:
            reason = TeeSessionGenerationError.UNKNOWN_ISSUE
        raise SmsSessionRefused(
            f"{self._where(call)} refused the session: HTTP {status}, {reason.value}", reason, status=status
        )

    # -- web2 secrets of this worker ------------------------------------------------------------

    async def has_web2_secret(self, owner: str, name: str) -> bool:
        status, text = await self._call(
            "HEAD", "/secrets/web2", params={"ownerAddress": owner, "secretName": name}
        )
        if status == 404:
            return False
        self._expect(status, text, "HEAD /secrets/web2", 200, 204)
        return True

    async def push_web2_secret(self, name: str, value: str) -> None:
        """Store (or replace) the secret ``name`` owned by this worker's wallet, then check it is there."""
        owner = self._account.address
        exists = await self.has_web2_secret(owner, name)
        method = "PUT" if exists else "POST"
        signature = sign_eip191(web2_secret_hash(owner, name, value), self._account.key)
        status, text = await self._call(
            method,
            "/secrets/web2",
            params={"ownerAddress": owner, "secretName": name},
            body=value,
            headers={"Authorization": signature, "Content-Type": "text/plain"},
        )
        self._expect(status, text, f"{method} /secrets/web2 ({name})", 200, 204)
        if not await self.has_web2_secret(owner, name):
            raise SmsError(f"{self._where('HEAD /secrets/web2')}: secret {name} not stored after {method}")

    # -- HTTP ------------------------------------------------------------------------------------

    def _where(self, call: str) -> str:
        return f"SMS {display_url(self.url)} {call}"

    def _expect(self, status: int, text: str, call: str, *ok: int) -> None:
        if status not in ok:
            raise SmsError(f"{self._where(call)}: HTTP {status} {_short(text)!r}", status=status)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: str | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        try:
            async with self._session.request(
                method,
                self.url + path,
                data=body.encode() if body is not None else None,
                headers=headers,
                params=params,
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
                raise_for_status=False,
                allow_redirects=False,
            ) as response:
                raw = await response.content.read(_MAX_ANSWER + 1)
                if len(raw) > _MAX_ANSWER:
                    raise SmsError(
                        f"{self._where(method + ' ' + path)}: answer larger than {_MAX_ANSWER} bytes"
                    )
                return response.status, raw.decode("utf-8", "replace")
        except TimeoutError as exc:
            raise SmsError(
                f"{self._where(method + ' ' + path)}: no answer within {REQUEST_TIMEOUT:g} s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise SmsError(f"{self._where(method + ' ' + path)}: {type(exc).__name__} ({exc})") from exc


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_TEXT else text[:_MAX_ERROR_TEXT] + "…"
