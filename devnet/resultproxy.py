"""A development result proxy: the endpoints of iexec-result-proxy a worker and a scheduler use.

The routes are those of the proxy's ``ProxyController``. Results are accepted under the same rules as
the real proxy (``ProxyService``): for a standard task, task REVEALING, the uploader's contribution PROVED,
the recomputed digest matching the contributed result hash; for a TEE task (its post-compute enclave
uploads before anything is on chain), task ACTIVE and the upload signed by the task's enclave challenge
named in the authorization the token was given for. They are stored as files named after a content
identifier, a CIDv0 over the sha2-256 of the zip bytes, instead of being pushed to IPFS, and served back
at ``GET /ipfs/<cid>`` as an IPFS gateway serves them (a requester's client downloads them there).
The zip comes as Base64 (Java clients) or as a JSON array of bytes (the Rust post-compute).

Every refusal is a 4xx answer with a message; a chain read that fails is a 503.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import logging
import os
import re
import secrets
import tempfile
import time
import uuid
import zipfile
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import aiohttp
import cid
import jwt
from aiohttp import web
from pydantic import BaseModel, ValidationError
from web3.exceptions import Web3Exception

from worker.protocol.crypto import ZERO_ADDRESS, authorization_hash, recover_eip191, result_hash
from worker.protocol.errors import ChainError
from worker.protocol.models import ResultModel as WorkerResultModel
from worker.protocol.models import WorkerpoolAuthorization
from worker.protocol.status import ChainContributionStatus, ChainTaskStatus
from worker.protocol.tee import enclave_message
from worker.result import IEXEC_OUT, ResultError, compute_result_digest, read_computed_file

if TYPE_CHECKING:
    from devnet.toolkit import Toolkit

log = logging.getLogger(__name__)

DEFAULT_MAX_RESULT_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_ZIP_ENTRIES = 10_000
_TASK_ID = re.compile(r"^0x[0-9a-fA-F]{64}$")
_CID = re.compile(r"^[A-Za-z0-9]{10,128}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_CHUNK = 1024 * 1024
_Model = TypeVar("_Model", bound=BaseModel)


@dataclass(frozen=True)
class ProxyTask:
    status: ChainTaskStatus
    final_deadline: int
    """Unix seconds."""
    deal_id: str


@dataclass(frozen=True)
class ProxyDeal:
    workerpool_owner: str
    tag: str
    """bytes32 hex; bit 0 set means a TEE deal."""
    requester: str = ZERO_ADDRESS


@dataclass(frozen=True)
class ProxyContribution:
    status: ChainContributionStatus
    result_hash: str


class ResultProxyChain(Protocol):
    """The chain reads the proxy needs. Implementations raise ``ChainError`` when the node fails."""

    async def task(self, chain_task_id: str) -> ProxyTask:
        """Status ``UNSET`` for a task that does not exist on chain."""
        ...

    async def deal(self, deal_id: str) -> ProxyDeal: ...

    async def contribution(self, chain_task_id: str, worker: str) -> ProxyContribution: ...

    async def now(self) -> int:
        """Timestamp of the latest block: deadlines are the chain's, whatever the wall clock says."""
        ...


class ToolkitResultProxyChain:
    """``ResultProxyChain`` over the devnet toolkit's views of the real PoCo contracts."""

    def __init__(self, toolkit: Toolkit) -> None:
        self._toolkit = toolkit

    async def task(self, chain_task_id: str) -> ProxyTask:
        try:
            task = await self._toolkit.view_task(chain_task_id)
        except (Web3Exception, aiohttp.ClientError, OSError, ValueError) as exc:
            raise ChainError(f"viewTask({chain_task_id}) failed: {exc}") from exc
        return ProxyTask(status=task.status, final_deadline=task.final_deadline, deal_id=task.deal_id)

    async def deal(self, deal_id: str) -> ProxyDeal:
        try:
            deal = await self._toolkit.view_deal(deal_id)
        except (Web3Exception, aiohttp.ClientError, OSError, ValueError) as exc:
            raise ChainError(f"viewDeal({deal_id}) failed: {exc}") from exc
        return ProxyDeal(workerpool_owner=deal.workerpool.owner, tag=deal.tag, requester=deal.requester)

    async def contribution(self, chain_task_id: str, worker: str) -> ProxyContribution:
        try:
            contribution = await self._toolkit.view_contribution(chain_task_id, worker)
        except (Web3Exception, aiohttp.ClientError, OSError, ValueError) as exc:
            raise ChainError(f"viewContribution({chain_task_id}, {worker}) failed: {exc}") from exc
        return ProxyContribution(status=contribution.status, result_hash=contribution.result_hash)

    async def now(self) -> int:
        try:
            block = await self._toolkit.w3.eth.get_block("latest")
        except (Web3Exception, aiohttp.ClientError, OSError, ValueError) as exc:
            raise ChainError(f"latest block cannot be read: {exc}") from exc
        return int(block["timestamp"])


class ResultModel(WorkerResultModel):
    """``ResultModel`` as the proxy (Jackson ``byte[]``) reads it: the zip in Base64 or as an array of bytes."""

    zip: str | list[int]  # type: ignore[assignment]


class _Refused(Exception):
    """Answered as ``status`` with ``message``; never carries a token or a signature."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Proxy:
    def __init__(
        self,
        chain: ResultProxyChain,
        storage_dir: Path,
        *,
        max_result_bytes: int,
        max_zip_entries: int,
    ) -> None:
        self._chain = chain
        self._results = storage_dir / "ipfs"
        self._index = storage_dir / "tasks"
        self._max_result_bytes = max_result_bytes
        self._max_zip_entries = max_zip_entries
        # Tokens live as long as the process; a restarted proxy hands out new ones.
        self._secret = secrets.token_bytes(64)
        self._tokens: dict[str, str] = {}
        # The authorization each token was last asked with, per (task, wallet): a TEE upload is checked
        # against its enclave challenge.
        self._authorizations: dict[tuple[str, str], WorkerpoolAuthorization] = {}
        self._task_locks: dict[str, asyncio.Lock] = {}
        self._results.mkdir(parents=True, exist_ok=True)
        self._index.mkdir(parents=True, exist_ok=True)
        # Stored results survive a restart; the index is read once so requests never touch the disk for it.
        self._cids: dict[str, str] = {
            entry.name: entry.read_text().strip()
            for entry in self._index.iterdir()
            if _TASK_ID.match(entry.name)
        }

    # -- endpoints -------------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        signature = request.headers.get("Authorization", "").strip()
        if not signature:
            raise _Refused(
                401, "Authorization header must hold the worker's signature of the authorization hash"
            )
        auth = await _parse_body(request, WorkerpoolAuthorization)
        task_id = _task_id(auth.chain_task_id)
        wallet = _address(auth.worker_wallet, "workerWallet")
        challenge = _address(auth.enclave_challenge, "enclaveChallenge")
        auth_hash = authorization_hash(wallet, task_id, challenge)
        if _signer(auth_hash, signature) != wallet:
            raise _Refused(
                401, f"Authorization header is not a signature of the authorization hash by {wallet}"
            )

        task = await self._chain.task(task_id)
        if task.status is ChainTaskStatus.UNSET:
            raise _Refused(401, f"task {task_id} does not exist on chain")
        if await self._chain.now() > task.final_deadline:
            raise _Refused(401, f"task {task_id} is past its final deadline")
        deal = await self._chain.deal(task.deal_id)
        tee = int(deal.tag, 16) & 1 == 1
        if tee == (challenge == ZERO_ADDRESS):
            raise _Refused(401, f"enclaveChallenge {challenge} does not match the deal (TEE: {tee})")
        if _signer(auth_hash, auth.signature.value) != deal.workerpool_owner.lower():
            raise _Refused(401, f"the authorization of task {task_id} is not signed by the workerpool owner")

        self._authorizations[(task_id, wallet)] = auth
        token = self._tokens.get(wallet)
        if token is None:
            claims = {"aud": wallet, "sub": str(uuid.uuid4()), "iat": int(time.time())}
            token = self._tokens[wallet] = jwt.encode(claims, self._secret, algorithm="HS256")
        return web.Response(text=token)

    async def upload(self, request: web.Request) -> web.Response:
        wallet = self._authenticate(request)
        model = await _parse_body(request, ResultModel)
        task_id = _task_id(model.chain_task_id)
        if isinstance(model.zip, list):
            try:
                zip_bytes = bytes(model.zip)
            except ValueError as exc:
                raise _Refused(400, "zip must be bytes: integers 0 to 255") from exc
        else:
            try:
                zip_bytes = base64.b64decode(model.zip, validate=True)
            except binascii.Error as exc:
                raise _Refused(400, "zip must be the Base64 of the result zip") from exc
        if len(zip_bytes) > self._max_result_bytes:
            raise _Refused(400, f"zip is larger than the {self._max_result_bytes} bytes this proxy accepts")

        async with self._task_locks.setdefault(task_id, asyncio.Lock()):
            if self._stored_cid(task_id) is not None:
                raise _Refused(401, f"a result is already stored for task {task_id}")
            task = await self._chain.task(task_id)
            deal = await self._chain.deal(task.deal_id) if task.status is not ChainTaskStatus.UNSET else None
            if deal is not None and int(deal.tag, 16) & 1:
                await self._check_tee_upload(task_id, task, deal, wallet, model)
                content_id = await asyncio.to_thread(self._store, task_id, zip_bytes)
                self._cids[task_id] = content_id
                log.info("TEE result stored task=%s cid=%s bytes=%d", task_id, content_id, len(zip_bytes))
                return web.Response(text=f"/ipfs/{content_id}")
            if task.status is not ChainTaskStatus.REVEALING:
                raise _Refused(401, f"task {task_id} is {task.status.name} on chain, not REVEALING")
            contribution = await self._chain.contribution(task_id, wallet)
            if contribution.status is not ChainContributionStatus.PROVED:
                raise _Refused(
                    401,
                    f"contribution of {wallet} to task {task_id} is {contribution.status.name}, not PROVED",
                )
            digest = await asyncio.to_thread(self._digest_of_zip, zip_bytes)
            if result_hash(task_id, digest).lower() != contribution.result_hash.lower():
                raise _Refused(
                    401, f"result digest {digest} does not match the result hash revealed for task {task_id}"
                )
            content_id = await asyncio.to_thread(self._store, task_id, zip_bytes)
            self._cids[task_id] = content_id
        log.info("result stored task=%s cid=%s bytes=%d", task_id, content_id, len(zip_bytes))
        return web.Response(text=f"/ipfs/{content_id}")

    async def _check_tee_upload(
        self, task_id: str, task: ProxyTask, deal: ProxyDeal, wallet: str, model: ResultModel
    ) -> None:
        if task.status is not ChainTaskStatus.ACTIVE:
            raise _Refused(401, f"TEE task {task_id} is {task.status.name} on chain, not ACTIVE")
        if await self._chain.now() > task.final_deadline:
            raise _Refused(401, f"task {task_id} is past its final deadline")
        if wallet == deal.requester.lower():
            return  # the requester's own token (legacy uploads)
        authorization = self._authorizations.get((task_id, wallet))
        digest = model.determinist_hash or ""
        if authorization is None or not digest or not model.enclave_signature:
            raise _Refused(401, f"no enclave-signed result for TEE task {task_id} from {wallet}")
        try:
            signer = recover_eip191(enclave_message(task_id, wallet, digest), model.enclave_signature)
        except ValueError as exc:
            raise _Refused(401, f"enclave signature of task {task_id} cannot be recovered") from exc
        if signer != authorization.enclave_challenge.lower():
            raise _Refused(401, f"result of TEE task {task_id} is not signed by its enclave challenge")
        del self._authorizations[(task_id, wallet)]

    async def gateway(self, request: web.Request) -> web.StreamResponse:
        """``GET /ipfs/<cid>``: the stored bytes, as an IPFS gateway serves a file."""
        content_id = request.match_info["cid"]
        if not _CID.match(content_id) or content_id not in self._cids.values():
            raise _Refused(404, f"no content {content_id!r} here")
        return web.FileResponse(self._results / content_id, headers={"Content-Type": "application/zip"})

    async def head(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        task_id = _task_id(request.match_info["chain_task_id"])
        return web.Response(status=204 if self._stored_cid(task_id) is not None else 404)

    async def ipfs_hash(self, request: web.Request) -> web.Response:
        task_id = _task_id(request.match_info["chain_task_id"])
        content_id = self._stored_cid(task_id)
        if content_id is None:
            raise _Refused(404, f"no result stored for task {task_id}")
        return web.Response(text=content_id)

    # -- helpers ---------------------------------------------------------------------------------

    def _authenticate(self, request: web.Request) -> str:
        token = request.headers.get("Authorization", "").strip().removeprefix("Bearer ").strip()
        if not token:
            raise _Refused(401, "Authorization header must hold the token from POST /v1/results/token")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                options={"verify_aud": False, "require": ["aud", "sub", "iat"]},
            )
        except jwt.InvalidTokenError as exc:
            raise _Refused(401, "token is not valid: ask a new one at POST /v1/results/token") from exc
        wallet = claims["aud"]
        if not isinstance(wallet, str) or self._tokens.get(wallet) != token:
            raise _Refused(401, "token is not valid: ask a new one at POST /v1/results/token")
        return wallet

    def _stored_cid(self, task_id: str) -> str | None:
        return self._cids.get(task_id)

    def _store(self, task_id: str, zip_bytes: bytes) -> str:
        # sha2-256 multihash: function code 0x12, digest length 0x20.
        multihash = b"\x12\x20" + hashlib.sha256(zip_bytes).digest()
        content_id = str(cid.make_cid(0, "dag-pb", multihash))
        _write_atomically(self._results / content_id, zip_bytes)
        _write_atomically(self._index / task_id, content_id.encode())
        return content_id

    def _digest_of_zip(self, zip_bytes: bytes) -> str:
        with tempfile.TemporaryDirectory(prefix="iexec-result-") as tmp:
            base = Path(tmp)
            self._extract(zip_bytes, base / IEXEC_OUT)
            try:
                computed = read_computed_file(base / IEXEC_OUT / "computed.json")
                return compute_result_digest(base, computed, callback=False)
            except ResultError as exc:
                raise _Refused(401, f"result digest cannot be recomputed from the zip: {exc}") from exc

    def _extract(self, zip_bytes: bytes, destination: Path) -> None:
        """Unzip without ever writing outside ``destination`` nor more than the size limit."""
        destination.mkdir()
        written = 0
        try:
            with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
                entries = archive.infolist()
                if len(entries) > self._max_zip_entries:
                    raise _Refused(400, f"zip has more than {self._max_zip_entries} entries")
                for entry in entries:
                    parts = PurePosixPath(entry.filename).parts
                    if not parts or entry.filename.startswith("/") or ".." in parts:
                        raise _Refused(
                            400, f"zip entry {entry.filename!r} would land outside the result folder"
                        )
                    target = destination.joinpath(*parts)
                    if entry.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(entry) as source, open(target, "xb") as sink:
                        while chunk := source.read(_CHUNK):
                            written += len(chunk)
                            if written > self._max_result_bytes:
                                raise _Refused(
                                    400, f"zip expands to more than {self._max_result_bytes} bytes"
                                )
                            sink.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError) as exc:
            raise _Refused(400, f"zip cannot be extracted: {exc}") from exc


def create_result_proxy_app(
    chain: ResultProxyChain,
    storage_dir: Path,
    *,
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    max_zip_entries: int = DEFAULT_MAX_ZIP_ENTRIES,
) -> web.Application:
    proxy = _Proxy(chain, storage_dir, max_result_bytes=max_result_bytes, max_zip_entries=max_zip_entries)
    # Base64 grows the zip by a third; the rest of the JSON body is small.
    app = web.Application(client_max_size=max_result_bytes * 4 // 3 + 64 * 1024, middlewares=[_answer_errors])
    app.router.add_post("/v1/results/token", proxy.token)
    app.router.add_post("/v1/results", proxy.upload)
    app.router.add_route("HEAD", "/v1/results/{chain_task_id}", proxy.head)
    app.router.add_get("/v1/results/{chain_task_id}/ipfshash", proxy.ipfs_hash)
    app.router.add_get("/ipfs/{cid}", proxy.gateway)
    return app


class ResultProxy:
    """Serves the development result proxy on a local port, inside the caller's event loop."""

    def __init__(self, chain: ResultProxyChain, storage_dir: Path, **options: Any) -> None:
        self._app = create_result_proxy_app(chain, storage_dir, **options)
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the result proxy is not started: call start() first")
        return self._url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        runner = web.AppRunner(self._app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self._url = f"http://{bound_host}:{bound_port}"
        log.info("result proxy listening on %s", self._url)
        return self._url

    async def stop(self) -> None:
        runner, self._runner, self._url = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> ResultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


@web.middleware
async def _answer_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except _Refused as exc:
        log.info("result proxy refused %s %s: %d %s", request.method, request.path, exc.status, exc.message)
        return web.Response(status=exc.status, text=exc.message)
    except ChainError as exc:
        log.warning("result proxy cannot read the chain: %s", exc)
        return web.Response(status=503, text=f"chain cannot be read, retry later: {exc}")


async def _parse_body(request: web.Request, model: type[_Model]) -> _Model:
    body = await request.read()
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in err["loc"]) or "body" for err in exc.errors())
        raise _Refused(400, f"body is not a valid {model.__name__} JSON (check: {fields})") from exc


def _task_id(value: str) -> str:
    if not _TASK_ID.match(value):
        raise _Refused(400, f"chainTaskId {value!r} must be 0x followed by 64 hex digits")
    return value.lower()


def _address(value: str, name: str) -> str:
    if not _ADDRESS.match(value):
        raise _Refused(400, f"{name} {value!r} must be an address, 0x followed by 40 hex digits")
    return value.lower()


def _signer(message_hash: str, signature: str) -> str | None:
    try:
        return recover_eip191(message_hash, signature)
    except ValueError:
        return None


def _write_atomically(path: Path, data: bytes) -> None:
    # Two tasks may store the same content (the same CID) at the same time: each writes a name of its own.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


__all__ = [
    "ProxyContribution",
    "ProxyDeal",
    "ProxyTask",
    "ResultProxy",
    "ResultProxyChain",
    "ToolkitResultProxyChain",
    "create_result_proxy_app",
]
