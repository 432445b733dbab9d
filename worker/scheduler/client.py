"""REST client of the scheduler (iexec-core), as a worker sees it.

The endpoints are those of iexec-core's ``WorkerController`` and ``ReplicatesController``.
Every request carries ``Content-Type: application/json``; text answers are raw (no JSON quotes)
except ``updateStatus``, which answers a JSON string. The wallet address is always lowercase: the
scheduler compares addresses as exact strings. Authenticated calls log in again once on 401 (the
JWT dies with every scheduler restart, or after an hour) and retry. The JWT and the login
signature stay in memory and out of logs and error messages.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from eth_account.signers.local import LocalAccount
from pydantic import BaseModel, ValidationError

from worker.protocol.bounded import SCHEDULER_ANSWER_LIMIT, AnswerTooLarge, read_capped
from worker.protocol.crypto import LOGIN_CHALLENGE_BYTES, is_login_challenge, sign_login_challenge
from worker.protocol.errors import SchedulerError
from worker.protocol.models import (
    PublicChainConfig,
    PublicConfiguration,
    ReplicateStatusUpdate,
    ReplicateTaskSummary,
    Signature,
    TaskNotification,
    WorkerModel,
    normalise_bytes32,
)
from worker.protocol.status import TaskNotificationType

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

JSON_HEADERS: Mapping[str, str] = {"Content-Type": "application/json"}
# Without a deadline, give an update this long: far beyond a scheduler restart, short of forever.
DEFAULT_UPDATE_BUDGET_SECONDS = 600.0


class UpdateKind(enum.Enum):
    NEXT_ACTION = "next_action"  # 200 with a TaskNotificationType
    ACCEPTED = "accepted"  # 200 with an empty body: recorded, nothing to do next
    ALREADY_REPORTED = "already_reported"  # 208: recorded earlier, counts as done
    ABORT = "abort"  # 202: refused (unknown replicate, bad transition, failed check)


@dataclass(frozen=True)
class UpdateOutcome:
    """What the scheduler made of a status update."""

    kind: UpdateKind
    action: TaskNotificationType | None = None

    @property
    def recorded(self) -> bool:
        """The status is in the scheduler's history (now or from an earlier attempt)."""
        return self.kind is not UpdateKind.ABORT


class SchedulerClient:
    """Calls of iexec-core's worker API, bound to one wallet.

    ``backoff_initial`` / ``backoff_max`` shape the retries of :meth:`update_status`; ``sleep`` and
    ``clock`` (Unix seconds, the unit of chain deadlines) are there so tests need not wait.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        account: LocalAccount,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        update_read_timeout: float = 300.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self._account = account
        self.address = account.address.lower()
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        # CONTRIBUTED / REVEALED are checked on chain before the answer: ~(10 + 18) blocks.
        self._update_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=update_read_timeout
        )
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._sleep = sleep
        self._clock = clock
        self._token: str | None = None
        self._login_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SchedulerClient({self.base_url!r}, wallet={self.address})"

    # --- public, unauthenticated -------------------------------------------------------------

    async def get_version(self) -> str:
        return (await self._expect_ok("GET", self.base_url + "/version")).strip()

    async def get_public_configuration(self) -> PublicConfiguration:
        text = await self._expect_ok("GET", self.base_url + "/workers/config")
        return _parse(PublicConfiguration, text, "GET /workers/config")

    async def get_chain_config(self, config_server_url: str) -> PublicChainConfig:
        url = config_server_url.rstrip("/") + "/config/chain"
        return _parse(PublicChainConfig, await self._expect_ok("GET", url), f"GET {url}")

    async def get_task_status(self, chain_task_id: str) -> str | None:
        """The scheduler's status of a task (``GET /tasks/{id}``, public); None when it does not know it."""
        url = f"{self.base_url}/tasks/{chain_task_id}"
        status, text = await self._send("GET", url)
        if status == 404:
            return None
        _check(status, text, f"GET {url}")
        task = _json(text, f"GET {url}")
        value = task.get("currentStatus") if isinstance(task, dict) else None
        return value if isinstance(value, str) else None

    # --- authentication ----------------------------------------------------------------------

    async def login(self) -> None:
        """Challenge, raw signature of its quirky hash, JWT.

        As iexec-core ``ChallengeService`` checks it and iexec-commons-poco ``SignatureUtils`` signs it.
        """
        async with self._login_lock:
            await self._login_locked()

    @property
    def logged_in(self) -> bool:
        return self._token is not None

    async def _login_locked(self) -> None:
        self._token = None
        params = {"walletAddress": self.address}
        status, challenge = await self._send("GET", self.base_url + "/workers/challenge", params=params)
        if status == 401:
            raise SchedulerError(
                f"wallet {self.address} is not allowed by the scheduler at {self.base_url}; "
                "ask the workerpool manager to add it to the workers whitelist",
                status=401,
            )
        _check(status, challenge, "GET /workers/challenge")
        challenge = challenge.strip()
        if not is_login_challenge(challenge):
            # The signature is raw: signing what an impostor chose could sign one of its transactions.
            raise SchedulerError(
                f"GET /workers/challenge: the scheduler at {self.base_url} answered {len(challenge)} characters "
                f"that are not a login challenge (Base64 of {LOGIN_CHALLENGE_BYTES} bytes); nothing was signed. "
                "Check that IEXEC_CORE_URL points to a genuine iexec-core",
                status=status,
            )
        signature = sign_login_challenge(challenge, bytes(self._account.key))
        status, jwt = await self._send(
            "POST", self.base_url + "/workers/login", params=params, body=Signature(value=signature).to_json()
        )
        if status == 401:
            raise SchedulerError(
                f"the scheduler at {self.base_url} refused the login of wallet {self.address} "
                "(signature rejected or wallet not whitelisted); check the wallet and the workers whitelist",
                status=401,
            )
        _check(status, "", "POST /workers/login")  # the body is the JWT: never quote it
        if not jwt.strip():
            raise SchedulerError(
                "POST /workers/login: empty token in a 200 answer; check the scheduler", status=status
            )
        self._token = jwt.strip()
        log.info("logged in to the scheduler at %s as %s", self.base_url, self.address)

    async def _fresh_token(self, stale: str | None) -> str:
        # Concurrent 401s share one login: only the first caller with the stale token logs in again.
        async with self._login_lock:
            if self._token is None or self._token == stale:
                await self._login_locked()
            assert self._token is not None
            return self._token

    # --- authenticated -----------------------------------------------------------------------

    async def register(self, model: WorkerModel) -> None:
        # The scheduler identifies the worker by the JWT subject; send the same string anyway.
        body = model.model_copy(update={"wallet_address": self.address}).to_json()
        status, text = await self._authed("POST", "/workers/register", body=body)
        _check(status, text, "POST /workers/register")

    async def ping(self) -> str | None:
        """The scheduler's public-configuration hash; None when it answers an empty body."""
        status, text = await self._authed("POST", "/workers/ping")
        _check(status, text, "POST /workers/ping")
        return text.strip() or None

    async def get_computing_tasks(self) -> list[str]:
        status, text = await self._authed("GET", "/workers/computing")
        _check(status, text, "GET /workers/computing")
        tasks = _json(text, "GET /workers/computing") if text.strip() else []
        if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
            raise SchedulerError("GET /workers/computing: expected a JSON list of task ids", status=status)
        try:
            return [normalise_bytes32(task) for task in tasks]
        except ValueError as exc:
            raise SchedulerError(f"GET /workers/computing: {exc}", status=status) from exc

    async def ask_for_replicate(self, block_number: int) -> ReplicateTaskSummary | None:
        """A new replicate to compute, or None (204) when the scheduler has nothing for us."""
        what = "GET /replicates/available"
        status, text = await self._authed(
            "GET", "/replicates/available", params={"blockNumber": str(block_number)}
        )
        if status == 204 or (status == 200 and not text.strip()):
            return None
        if status == 503:
            raise SchedulerError(
                f"{what}: the scheduler's blockchain node is out of service (503)", status=503
            )
        _check(status, text, what)
        return _parse(ReplicateTaskSummary, text, what)

    async def get_interrupted(self, block_number: int) -> list[TaskNotification]:
        """Replicates to resume after a restart. The scheduler marks them RECOVERING: call it once."""
        what = "GET /replicates/interrupted"
        status, text = await self._authed(
            "GET", "/replicates/interrupted", params={"blockNumber": str(block_number)}
        )
        _check(status, text, what)
        items = _json(text, what) if text.strip() else []
        if not isinstance(items, list):
            raise SchedulerError(f"{what}: expected a JSON list of task notifications", status=status)
        notifications = []
        for item in items:
            # One malformed entry must not hide the others: they are replicates to resume.
            try:
                notifications.append(TaskNotification.model_validate(item))
            except ValidationError as exc:
                log.error("%s: unreadable notification skipped: %s", what, _first_error(exc))
        return notifications

    async def update_status(
        self, chain_task_id: str, update: ReplicateStatusUpdate, *, deadline: float | None = None
    ) -> UpdateOutcome:
        """Report a replicate status, retrying every failed answer until ``deadline``.

        ``deadline`` is Unix seconds (e.g. the task's final deadline on chain); without it the
        update gets DEFAULT_UPDATE_BUDGET_SECONDS. Network errors, 5xx and 401 (after a new login)
        are retried, and so is a 4xx: iexec-core answers its refusals with 202, so a 4xx comes from
        something between (a proxy, a scheduler being redeployed) and the reference worker asks
        again until the final deadline too (iexec-worker ``TaskNotificationService``). Only the
        deadline ends the retries, with the last error.
        """
        end = deadline if deadline is not None else self._clock() + DEFAULT_UPDATE_BUDGET_SECONDS
        path = f"/replicates/{chain_task_id}/updateStatus"
        what = f"POST {path} {update.status.value}"
        body = update.to_json()
        delay = self._backoff_initial
        attempt = 0
        while True:
            attempt += 1
            try:
                status, text = await self._authed(
                    "POST", path, body=body, client_timeout=self._update_timeout
                )
                outcome = _outcome(status, text, what)
                if outcome is not None:
                    return outcome
                error = SchedulerError(f"{what}: HTTP {status}", status=status)
            except SchedulerError as exc:
                error = exc
            reason = str(error).removeprefix(f"{what}: ")
            remaining = end - self._clock()
            if remaining <= 0:
                raise SchedulerError(
                    f"{what}: gave up at the deadline after {attempt} attempts; last error: {reason}",
                    status=error.status,
                ) from error
            # The last pause is cut short so that one attempt still happens at the deadline itself.
            pause = min(delay, remaining)
            log.warning("%s: attempt %d failed (%s); retrying in %.1f s", what, attempt, reason, pause)
            await self._sleep(pause)
            delay = min(delay * 2, self._backoff_max)

    # --- plumbing ----------------------------------------------------------------------------

    async def _authed(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: str | None = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> tuple[int, str]:
        url = self.base_url + path
        token = self._token or await self._fresh_token(None)
        status, text = await self._send(
            method, url, token=token, params=params, body=body, client_timeout=client_timeout
        )
        if status != 401:
            return status, text
        log.info("%s %s: token refused (401), logging in again", method, path)
        token = await self._fresh_token(token)
        status, text = await self._send(
            method, url, token=token, params=params, body=body, client_timeout=client_timeout
        )
        if status == 401:
            raise SchedulerError(
                f"{method} {path}: 401 even with a fresh token; check the scheduler", status=401
            )
        return status, text

    async def _expect_ok(self, method: str, url: str) -> str:
        status, text = await self._send(method, url)
        _check(status, text, f"{method} {url}")
        return text

    async def _send(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        params: Mapping[str, str] | None = None,
        body: str | None = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> tuple[int, str]:
        headers = dict(JSON_HEADERS)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                data=body.encode() if body is not None else None,
                headers=headers,
                timeout=client_timeout or self._timeout,
            ) as response:
                try:
                    raw = await read_capped(response.content.iter_chunked(64 * 1024), SCHEDULER_ANSWER_LIMIT)
                except AnswerTooLarge as exc:
                    raise SchedulerError(f"{method} {url}: {exc}; is IEXEC_CORE_URL a scheduler?") from exc
                log.debug("%s %s -> %d", method, url, response.status)
                return response.status, raw.decode(response.charset or "utf-8", errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            kind = (
                "timed out" if isinstance(exc, TimeoutError) else f"failed ({exc.__class__.__name__}: {exc})"
            )
            raise SchedulerError(
                f"{method} {url} {kind}; check that the scheduler at {self.base_url} is up and reachable"
            ) from exc


def _outcome(status: int, text: str, what: str) -> UpdateOutcome | None:
    """The meaning of an updateStatus answer, or None when it is worth retrying."""
    if status == 208:
        return UpdateOutcome(UpdateKind.ALREADY_REPORTED, _action(text) or TaskNotificationType.PLEASE_WAIT)
    if status == 202:
        return UpdateOutcome(UpdateKind.ABORT, _action(text) or TaskNotificationType.PLEASE_ABORT)
    if 200 <= status < 300:
        action = _action(text)
        if action is None:
            if text.strip():
                log.warning("%s: unknown next action %r, taken as no action", what, text.strip()[:80])
            return UpdateOutcome(UpdateKind.ACCEPTED)
        return UpdateOutcome(UpdateKind.NEXT_ACTION, action)
    return None


def _action(text: str) -> TaskNotificationType | None:
    raw = text.strip()
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # tolerate a raw enum name
    if not isinstance(value, str):
        return None
    try:
        return TaskNotificationType(value)
    except ValueError:
        return None


def _check(status: int, text: str, what: str) -> None:
    if 200 <= status < 300:
        return
    detail = f": {text.strip()[:200]}" if text.strip() else ""
    raise SchedulerError(f"{what}: HTTP {status}{detail}", status=status)


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchedulerError(
            f"{what}: the answer is not JSON ({exc.msg}); is IEXEC_CORE_URL a scheduler?"
        ) from exc


def _parse(model: type[M], text: str, what: str) -> M:
    data = _json(text, what)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SchedulerError(f"{what}: unexpected answer: {_first_error(exc)}") from exc


def _first_error(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
