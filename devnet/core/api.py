"""The worker-facing REST API of the development scheduler (iexec-core 9.x).

Routes, exact bodies and status codes of iexec-core's ``WorkerController`` and
``ReplicatesController``; the logic lives in ``supply``, ``updates`` and ``recovery``.
Also serves the platform config server's ``GET /config/chain``. A handler that raises is logged
and answered 500; the process goes on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from worker.protocol.crypto import keccak_hex, to_hex
from worker.protocol.models import (
    PublicChainConfig,
    PublicConfiguration,
    ReplicateStatusUpdate,
    Signature,
    WorkerModel,
)

from .auth import Authenticator
from .recovery import Recovery
from .state import SchedulerState
from .supply import ReplicateSupply
from .updates import StatusUpdater, UpdateError

log = logging.getLogger(__name__)

CORE_VERSION = "9.3.0"
JSON = "application/json"


@dataclass(frozen=True)
class ApiSettings:
    workerpool: str
    scheduler_address: str
    result_proxy_url: str
    chain_id: int
    chain_node_url: str
    hub: str
    ask_for_replicate_period_ms: int = 5000
    required_worker_version: str = ""
    block_time_s: int = 5
    out_of_service_s: float = 15.0
    """/replicates/* answer 503 when the last successful chain poll is older than this."""


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, separators=(",", ":")), content_type=JSON)


class SchedulerApi:
    def __init__(
        self,
        settings: ApiSettings,
        state: SchedulerState,
        auth: Authenticator,
        supply: ReplicateSupply,
        updater: StatusUpdater,
        recovery: Recovery,
    ) -> None:
        self.settings = settings
        self.base_url = ""
        """The scheduler's own URL, also the config server URL; set once the socket is bound."""
        self._state = state
        self._auth = auth
        self._supply = supply
        self._updater = updater
        self._recovery = recovery

    # -- wiring -------------------------------------------------------------------------------

    def forget_logins(self) -> None:
        """Every JWT dies, as when iexec-core restarts: workers must log in again."""
        self._auth.forget()

    def install(self, app: web.Application) -> None:
        app.middlewares.append(_errors_as_500)
        app.add_routes([
            web.get("/version", self.version),
            web.get("/workers/config", self.config),
            web.get("/workers/challenge", self.challenge),
            web.post("/workers/login", self.login),
            web.post("/workers/ping", self.ping),
            web.post("/workers/register", self.register),
            web.get("/workers/computing", self.computing),
            web.get("/replicates/available", self.available),
            web.get("/replicates/interrupted", self.interrupted),
            web.post("/replicates/{chainTaskId}/updateStatus", self.update_status),
            web.get("/config/chain", self.chain_config),
            web.get("/tasks/{chainTaskId}", self.task),
        ])  # fmt: skip

    def public_configuration(self) -> PublicConfiguration:
        s = self.settings
        return PublicConfiguration(
            worker_pool_address=s.workerpool,
            scheduler_public_address=s.scheduler_address,
            config_server_url=self.base_url,
            result_repository_url=s.result_proxy_url,
            ask_for_replicate_period=s.ask_for_replicate_period_ms,
            required_worker_version=s.required_worker_version,
        )

    def _wallet(self, request: web.Request) -> str:
        wallet = self._auth.bearer_subject(request.headers.get("Authorization"))
        if wallet is None:
            raise web.HTTPUnauthorized(text="")
        return wallet

    def _require_chain(self) -> None:
        last = self._state.last_chain_ok
        if last is None or time.monotonic() - last > self.settings.out_of_service_s:
            raise web.HTTPServiceUnavailable(text="")

    @staticmethod
    def _query(request: web.Request, name: str) -> str:
        value = request.query.get(name)
        if value is None:
            raise web.HTTPBadRequest(text=f"missing query parameter {name!r}")
        return value

    @classmethod
    def _block_number(cls, request: web.Request) -> int:
        raw = cls._query(request, "blockNumber")
        try:
            return int(raw)
        except ValueError:
            raise web.HTTPBadRequest(text=f"blockNumber={raw!r}: expected an integer") from None

    @staticmethod
    async def _body(request: web.Request) -> Any:
        try:
            return json.loads(await request.text())
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"request body is not JSON: {exc}") from None

    # -- handlers -----------------------------------------------------------------------------

    async def version(self, request: web.Request) -> web.Response:
        return web.Response(text=CORE_VERSION)

    async def config(self, request: web.Request) -> web.Response:
        return _json(self.public_configuration().to_wire())

    async def task(self, request: web.Request) -> web.Response:
        """``TaskController#getTask``: public; the fields of iexec-core's TaskModel this scheduler keeps."""
        task = self._state.tasks.get(request.match_info["chainTaskId"].lower())
        if task is None:
            raise web.HTTPNotFound(text="")
        return _json({
            "chainTaskId": task.task_id,
            "currentStatus": task.status.value,
            "trust": task.trust,
            "tag": task.tag,
            "initializationBlockNumber": task.initialization_block,
            "consensus": task.consensus,
            "resultLink": task.result_link,
            "chainCallbackData": task.chain_callback_data,
        })  # fmt: skip

    async def chain_config(self, request: web.Request) -> web.Response:
        s = self.settings
        config = PublicChainConfig(
            chain_id=s.chain_id,
            sidechain=False,
            chain_node_url=s.chain_node_url,
            iexec_hub_contract_address=s.hub,
            block_time=s.block_time_s,
        )
        return _json(config.to_wire())

    async def challenge(self, request: web.Request) -> web.Response:
        wallet = self._query(request, "walletAddress")
        if not self._auth.is_allowed(wallet):
            raise web.HTTPUnauthorized(text="")
        return web.Response(text=self._auth.challenge(wallet))

    async def login(self, request: web.Request) -> web.Response:
        wallet = self._query(request, "walletAddress")
        body = await self._body(request)
        try:
            signature = Signature.model_validate(body)
        except ValidationError as exc:
            raise web.HTTPBadRequest(text=f'login body must be {{"value": "0x…"}}: {exc}') from None
        if not self._auth.is_allowed(wallet):
            raise web.HTTPUnauthorized(text="")
        try:
            token = self._auth.login(wallet, signature.value)
        except ValueError:  # not hex
            token = None
        if token is None:
            log.info("login refused for %s: the signature does not match its challenge", wallet)
            raise web.HTTPUnauthorized(text="")
        return web.Response(text=token)

    async def ping(self, request: web.Request) -> web.Response:
        wallet = self._wallet(request)
        self._state.worker(wallet).mark_alive()
        fingerprint = keccak_hex(to_hex(self.public_configuration().lombok_string().encode()))
        return web.Response(text=fingerprint)

    async def register(self, request: web.Request) -> web.Response:
        wallet = self._wallet(request)
        body = await self._body(request)
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="register body must be a WorkerModel JSON object")
        try:
            # The JWT subject is the identity; the body's walletAddress is ignored.
            model = WorkerModel.model_validate({**body, "walletAddress": wallet})
        except ValidationError as exc:
            raise web.HTTPBadRequest(text=f"register body is not a valid WorkerModel: {exc}") from None
        worker = self._state.worker(wallet)
        worker.name, worker.os, worker.cpu = model.name, model.os, model.cpu
        worker.cpu_nb, worker.memory_size = model.cpu_nb, model.memory_size
        worker.gpu_enabled, worker.tee_enabled, worker.tdx_enabled = (
            model.gpu_enabled,
            model.tee_enabled,
            model.tdx_enabled,
        )
        worker.registered = True
        worker.mark_alive()
        log.info("worker %s registered (%s, %d cpu)", wallet, model.name, model.cpu_nb)
        return _json(worker.to_wire())

    async def computing(self, request: web.Request) -> web.Response:
        wallet = self._wallet(request)
        worker = self._state.workers.get(wallet)
        return _json(list(worker.computing) if worker else [])

    async def available(self, request: web.Request) -> web.Response:
        block_number = self._block_number(request)
        wallet = self._wallet(request)
        self._require_chain()
        summary = await self._supply.available(wallet, block_number)
        if summary is None:
            return web.Response(status=204)
        return _json(summary.to_wire())

    async def interrupted(self, request: web.Request) -> web.Response:
        block_number = self._block_number(request)
        wallet = self._wallet(request)
        self._require_chain()
        notifications = await self._recovery.interrupted(wallet, block_number)
        return _json([n.to_wire() for n in notifications])

    async def update_status(self, request: web.Request) -> web.Response:
        wallet = self._wallet(request)
        self._require_chain()
        body = await self._body(request)
        try:
            update = ReplicateStatusUpdate.model_validate(body)
        except ValidationError as exc:
            raise web.HTTPBadRequest(text=f"body is not a ReplicateStatusUpdate: {exc}") from None
        outcome = await self._updater.update(request.match_info["chainTaskId"], wallet, update)
        if outcome.error is UpdateError.ALREADY_REPORTED:
            return _json("PLEASE_WAIT", status=208)
        if outcome.error is not None:
            return _json("PLEASE_ABORT", status=202)
        if outcome.action is None:
            return web.Response(status=200)
        return _json(outcome.action.value)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors_as_500(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return web.Response(status=500)
