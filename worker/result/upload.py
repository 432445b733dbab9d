"""Client of the result proxy and the result link a standard task is finalized with.

The proxy's routes are those of iexec-result-proxy ``ProxyController``; the link is built as
iexec-worker ``ResultService`` builds it. The link text goes on chain byte for byte
(``finalize(results = utf8(link))``), so it is written exactly as the reference worker writes it,
spaces included. The proxy's token is a bearer credential: it is never logged nor put in an error
message. A result proxy named in the deal's params is the requester's choice: it must lead to a public
address (``worker.protocol.targets``) unless it is the scheduler's own result repository or the operator
allowlisted its network, and its redirects are not followed.

The result zip (up to the maximum result size) is never held in memory: the upload's JSON body is
streamed, the zip read and Base64-encoded slice by slice in a thread as the connection takes it, with
its exact length announced.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import socket
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

import aiohttp
from eth_account.signers.local import LocalAccount
from yarl import URL

from worker.protocol.bounded import RESULT_PROXY_ANSWER_LIMIT, AnswerTooLarge, read_capped
from worker.protocol.crypto import ZERO_ADDRESS, authorization_hash, sign_eip191
from worker.protocol.errors import WorkerError
from worker.protocol.models import ResultModel, WorkerpoolAuthorization
from worker.protocol.redact import display_url
from worker.protocol.targets import TargetPolicy, TargetRefused
from worker.result.errors import ResultNotUploaded

log = logging.getLogger(__name__)

IPFS_STORAGE = "ipfs"
ETHEREUM_STORAGE = "ethereum"
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_UPLOAD_TIMEOUT = 300.0
_MAX_ERROR_TEXT = 300
# A CID is base58 or base32: nothing that could break out of the JSON-like link text.
_IPFS_HASH = re.compile(r"^[A-Za-z0-9]{10,128}$")
_T = TypeVar("_T")


class ResultProxyError(WorkerError):
    """A call to the result proxy failed; ``status`` is the HTTP status, None when no answer came."""

    def __init__(self, call: str, reason: str, *, status: int | None = None) -> None:
        super().__init__(f"{call}: {reason}")
        self.call = call
        self.reason = reason
        self.status = status

    @property
    def transient(self) -> bool:
        """Worth retrying: no answer, or the proxy (or the chain node behind it) is failing."""
        return self.status is None or self.status == 429 or self.status >= 500


def result_link(storage: str, location: str) -> str:
    return f'{{ "storage": "{storage}", "location": "{location}" }}'


def result_proxy_url(storage_proxy: str | None, result_repository_url: str) -> str:
    """Deal param ``iexec_result_storage_proxy`` when set, else the scheduler's ``resultRepositoryURL``."""
    url = (storage_proxy or "").strip() or result_repository_url.strip()
    if not url.lower().startswith(("http://", "https://")):
        raise ResultNotUploaded(
            f"result proxy URL {display_url(url)!r} is not an http(s) URL; fix the deal param "
            "iexec_result_storage_proxy or the scheduler's resultRepositoryURL",
        )
    return url.rstrip("/")


async def get_token(
    session: aiohttp.ClientSession,
    proxy_url: str,
    authorization: WorkerpoolAuthorization,
    account: LocalAccount,
    *,
    max_seconds: float = DEFAULT_REQUEST_TIMEOUT,
) -> str:
    """A token for ``POST /v1/results``, given for the worker's signature of the authorization hash."""
    call = f"POST {display_url(proxy_url)}/v1/results/token"
    if account.address.lower() != authorization.worker_wallet.lower():
        raise ResultProxyError(
            call,
            f"the workerpool authorization is for {authorization.worker_wallet}, not for this worker "
            f"({account.address})",
        )
    auth_hash = authorization_hash(
        authorization.worker_wallet, authorization.chain_task_id, authorization.enclave_challenge
    )
    signature = sign_eip191(auth_hash, account.key)
    token = await _request(
        session,
        "POST",
        f"{proxy_url}/v1/results/token",
        call,
        max_seconds=max_seconds,
        body=authorization.to_json(),
        authorization=signature,
    )
    if token is None or not token.strip():
        raise ResultProxyError(call, "the proxy answered without a token")
    return token.strip()


async def upload(
    session: aiohttp.ClientSession,
    proxy_url: str,
    token: str,
    task_id: str,
    zip_path: Path,
    result_digest: str,
    *,
    max_seconds: float = DEFAULT_UPLOAD_TIMEOUT,
) -> str:
    """Send the result zip; returns the proxy's answer (``/ipfs/<hash>``)."""
    call = f"POST {display_url(proxy_url)}/v1/results"
    try:
        handle = await asyncio.to_thread(open, zip_path, "rb")
    except OSError as exc:
        raise ResultProxyError(call, f"cannot read the result zip {zip_path}: {exc.strerror or exc}") from exc
    try:
        body = _ResultBody(task_id, handle, result_digest)
        answer = await _request(
            session,
            "POST",
            f"{proxy_url}/v1/results",
            call,
            max_seconds=max_seconds,
            body=body.chunks(),
            body_size=body.size,
            authorization=token,
        )
    except OSError as exc:
        raise ResultProxyError(call, f"cannot read the result zip {zip_path}: {exc.strerror or exc}") from exc
    finally:
        await asyncio.to_thread(handle.close)
    return (answer or "").strip()


async def get_ipfs_hash(
    session: aiohttp.ClientSession,
    proxy_url: str,
    task_id: str,
    *,
    max_seconds: float = DEFAULT_REQUEST_TIMEOUT,
) -> str | None:
    """The IPFS hash of the result stored for ``task_id``; None when the proxy has none."""
    call = f"GET {display_url(proxy_url)}/v1/results/{task_id}/ipfshash"
    answer = await _request(
        session,
        "GET",
        f"{proxy_url}/v1/results/{task_id}/ipfshash",
        call,
        max_seconds=max_seconds,
        missing_ok=True,
    )
    if answer is None:
        return None
    ipfs_hash = answer.strip()
    if not _IPFS_HASH.match(ipfs_hash):
        raise ResultProxyError(call, f"the proxy answered {_shorten(ipfs_hash)!r}, which is not an IPFS hash")
    return ipfs_hash


async def upload_result(
    session: aiohttp.ClientSession,
    *,
    task_id: str,
    authorization: WorkerpoolAuthorization,
    account: LocalAccount,
    zip_path: Path,
    result_digest: str,
    callback: str | None,
    storage_proxy: str | None,
    result_repository_url: str,
    storage_provider: str | None = None,
    attempts: int = 3,
    retry_delay: float = 2.0,
    max_seconds: float = DEFAULT_UPLOAD_TIMEOUT,
    targets: TargetPolicy | None = None,
) -> str:
    """Upload the result of a standard task and return its result link text.

    A callback task is not uploaded: its link names the callback contract. Raises ``ResultNotUploaded`` with
    RESULT_LINK_MISSING when no link can be produced. Calls that fail transiently (no answer, 5xx) are
    tried ``attempts`` times.
    """
    if callback and callback.strip() and callback.strip().lower() != ZERO_ADDRESS:
        # Java workers print the address as web3j decodes it from the deal: lowercase, not EIP-55.
        return result_link(ETHEREUM_STORAGE, callback.strip().lower())
    provider = (storage_provider or "").strip() or IPFS_STORAGE
    if provider != IPFS_STORAGE:
        raise ResultNotUploaded(
            f"task {task_id}: result storage provider {provider!r} is not supported for standard tasks; "
            f"the requester must set iexec_result_storage_provider to {IPFS_STORAGE!r}",
        )
    proxy_url = result_proxy_url(storage_proxy, result_repository_url)
    policy = (targets or TargetPolicy()).trusting([result_repository_url])
    try:
        await policy.check(URL(proxy_url), _resolve)
    except TargetRefused as exc:
        raise ResultNotUploaded(
            f"result of task {task_id}: result proxy {display_url(proxy_url)} refused: {exc}"
        ) from exc

    def retried(make: Callable[[], Awaitable[_T]]) -> Awaitable[_T]:
        return _retry(make, attempts=attempts, delay=retry_delay)

    try:
        token = await retried(
            lambda: get_token(session, proxy_url, authorization, account, max_seconds=DEFAULT_REQUEST_TIMEOUT)
        )
        try:
            await retried(
                lambda: upload(
                    session, proxy_url, token, task_id, zip_path, result_digest, max_seconds=max_seconds
                )
            )
        except ResultProxyError as refused:
            # A result may already be stored for this task (an upload that succeeded before a restart, or
            # by another worker of the same consensus); the proxy then refuses a second one.
            if refused.transient or await get_ipfs_hash(session, proxy_url, task_id) is None:
                raise
            log.info("result of task %s was already stored by the result proxy", task_id)
        ipfs_hash = await retried(lambda: get_ipfs_hash(session, proxy_url, task_id))
    except ResultProxyError as exc:
        raise ResultNotUploaded(f"result of task {task_id} is not uploaded: {exc}") from exc
    if ipfs_hash is None:
        raise ResultNotUploaded(
            f"result of task {task_id}: the proxy {display_url(proxy_url)} accepted the upload but knows "
            "no IPFS hash for it",
        )
    link = result_link(IPFS_STORAGE, f"/ipfs/{ipfs_hash}")
    log.info("result of task %s uploaded: %s", task_id, link)
    return link


async def _retry(make: Callable[[], Awaitable[_T]], *, attempts: int, delay: float) -> _T:
    for attempt in range(1, max(attempts, 1) + 1):
        try:
            return await make()
        except ResultProxyError as exc:
            if not exc.transient or attempt >= attempts:
                raise
            log.warning("result proxy call failed (attempt %d of %d), retrying: %s", attempt, attempts, exc)
            await asyncio.sleep(delay * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


async def _request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    call: str,
    *,
    max_seconds: float,
    body: str | AsyncIterable[bytes] | None = None,
    body_size: int | None = None,
    authorization: str | None = None,
    missing_ok: bool = False,
) -> str | None:
    # The proxy takes the raw signature or token in Authorization, without a "Bearer " prefix.
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if body_size is not None:
        # A streamed body of known size goes with its length, as a Java client sends it, not chunked.
        headers["Content-Length"] = str(body_size)
    if authorization is not None:
        headers["Authorization"] = authorization
    try:
        async with session.request(
            method,
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=max_seconds),
            raise_for_status=False,
            # A redirect would carry the worker's signature or the result to a host nobody checked.
            allow_redirects=False,
        ) as response:
            try:
                raw = await read_capped(response.content.iter_chunked(16 * 1024), RESULT_PROXY_ANSWER_LIMIT)
            except AnswerTooLarge as exc:
                raise ResultProxyError(call, str(exc), status=response.status) from exc
            text = raw.decode(response.charset or "utf-8", errors="replace")
            if missing_ok and response.status == 404:
                return None
            if response.status != 200:
                raise ResultProxyError(call, _refusal(response.status, text), status=response.status)
            return text
    except TimeoutError as exc:
        raise ResultProxyError(call, f"no answer within {max_seconds:g} s") from exc
    except aiohttp.ClientConnectorError as exc:
        raise ResultProxyError(
            call, f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
        ) from exc
    except aiohttp.ClientError as exc:
        raise ResultProxyError(call, f"HTTP request failed ({type(exc).__name__})") from exc


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _refusal(status: int, text: str) -> str:
    reason = f"HTTP {status}" + (f" {_shorten(text)!r}" if text.strip() else "")
    if status == 401:
        return (
            f"{reason}; the proxy refused the worker or the result "
            "(the task must be REVEALING and this worker's result revealed)"
        )
    return reason


def _shorten(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _MAX_ERROR_TEXT else text[:_MAX_ERROR_TEXT] + "…"


class _ResultBody:
    """The ``ResultModel`` JSON of an upload, with the zip's Base64 read and encoded from the file as it is sent.

    The JSON around the zip is the model's own, written once with a placeholder that is then cut out: the
    bytes on the wire are those of ``ResultModel.to_json()`` with the whole Base64 in place. The zip is read
    in slices of a multiple of 3 bytes, whose Base64 texts, without padding but at the very end, concatenate
    into the Base64 of the whole file. Reading and encoding run in a thread, one slice at a time, so neither
    memory nor the event loop carries more than a slice.
    """

    def __init__(self, task_id: str, handle: BinaryIO, result_digest: str) -> None:
        text = ResultModel(chain_task_id=task_id, zip=_ZIP_SLOT, determinist_hash=result_digest).to_json()
        head, slot, tail = text.partition(_ZIP_SLOT)
        if not slot or _ZIP_SLOT in tail:
            raise ValueError("the result model's JSON does not hold the zip placeholder exactly once")
        self._head, self._tail = head.encode(), tail.encode()
        self._handle = handle
        zip_size = os.fstat(handle.fileno()).st_size
        self._zip_size = zip_size
        self.size = len(self._head) + 4 * -(-zip_size // 3) + len(self._tail)

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._head
        sent = 0
        while chunk := await asyncio.to_thread(self._next_slice):
            sent += len(chunk)
            yield chunk
        if sent != 4 * -(-self._zip_size // 3):
            raise OSError(f"the result zip changed while it was sent ({self._zip_size} bytes announced)")
        yield self._tail

    def _next_slice(self) -> bytes:
        return base64.b64encode(self._handle.read(UPLOAD_SLICE_BYTES))


UPLOAD_SLICE_BYTES = 3 * 256 * 1024
"""Bytes of the zip read and Base64-encoded at a time (a multiple of 3: the slices' Base64 concatenate)."""
_ZIP_SLOT = "ZIPSLOT"
