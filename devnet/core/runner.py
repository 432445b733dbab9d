"""``DevScheduler``: the development scheduler wired together and served on 127.0.0.1.

It is the composition root of this package: HTTP API, SockJS/STOMP push channel, in-memory
state and the on-chain duty loop, started and stopped together.

iexec-core keeps its state in MongoDB, so a restart loses its connections, its push sessions and the
JWTs it signed (their key is drawn at start), never its tasks and replicates. ``go_down`` /
``come_back`` do the same to this one, whose state is in memory: the HTTP service and the duty loop
stop, the state stays, and the service comes back on the same port. ``faults`` switches on answers
the scheduler gives instead of its own (``devnet/core/faults.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Collection, Mapping
from typing import Self

import aiohttp
from aiohttp import web
from eth_account.signers.local import LocalAccount

from devnet.contracts import Deployment
from devnet.toolkit import Toolkit
from worker.protocol.models import ComputeLogs, TaskNotification
from worker.protocol.status import ReplicateStatus
from worker.protocol.tee import TeeFramework

from .api import ApiSettings, SchedulerApi
from .auth import Authenticator
from .chain import SchedulerChain
from .duties import Duties, DutySettings
from .faults import Faults
from .recovery import Recovery
from .results import ProxyResultChecker, ResultChecker
from .sms import SchedulerSms
from .sockjs import StompBroker, add_sockjs_routes
from .state import SchedulerState, Task, TaskStatus
from .supply import DEFAULT_GAS_PRICE_CAP_WEI, ReplicateSupply
from .toolkit_chain import ToolkitChain
from .updates import DEFAULT_CHECK_POLICY, ChainCheckPolicy, StatusUpdater

log = logging.getLogger(__name__)

APP_VERSION_FOR_AUDIENCE = "9.3.0"


class DevScheduler:
    def __init__(
        self,
        *,
        api: SchedulerApi,
        state: SchedulerState,
        duties: Duties,
        broker: StompBroker,
        runner: web.AppRunner | None,
        session: aiohttp.ClientSession,
        url: str,
        faults: Faults,
        host: str,
        port: int,
    ) -> None:
        self.api = api
        self.state = state
        self.duties = duties
        self.broker = broker
        self.url = url
        self.faults = faults
        self._host = host
        self._port = port
        self._runner = runner
        self._session = session
        self._stop = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        *,
        toolkit: Toolkit | None,
        deployment: Deployment,
        rpc_url: str,
        workerpool: str,
        scheduler_account: LocalAccount,
        result_proxy_url: str,
        host: str = "127.0.0.1",
        port: int = 0,
        ask_for_replicate_period_ms: int = 5000,
        worker_lost_after_s: float = 60.0,
        poll_interval_s: float = 0.5,
        result_upload_timeout_s: float = 120.0,
        whitelist: Collection[str] = (),
        from_block: int | None = None,
        required_worker_version: str = "",
        block_time_s: int = 5,
        out_of_service_s: float = 15.0,
        gas_price_cap_wei: int = DEFAULT_GAS_PRICE_CAP_WEI,
        check_policy: ChainCheckPolicy = DEFAULT_CHECK_POLICY,
        chain: SchedulerChain | None = None,
        results: ResultChecker | None = None,
        sms_urls: Mapping[TeeFramework, str] | None = None,
    ) -> Self:
        """Serve on ``host:port`` (0 = any free port) and start the duty loop.

        ``chain``/``results`` replace the toolkit-backed chain and the result-proxy check (tests).
        ``from_block`` is the first block scanned for deals; by default only deals made after start.
        ``sms_urls`` names the SMS of each TEE framework (iexec-core ``sms.scone|gramine|tdx``); without one,
        the deals of that framework fail to initialize.
        """
        if chain is None:
            if toolkit is None:
                raise ValueError("DevScheduler.start: pass a toolkit (or a chain implementation)")
            chain = ToolkitChain(toolkit, scheduler_account)
        workerpool = workerpool.lower()
        scheduler_address = scheduler_account.address.lower()
        session = aiohttp.ClientSession()
        state = SchedulerState()
        broker = StompBroker()
        results = results or ProxyResultChecker(result_proxy_url, session)
        duty_settings = DutySettings(
            workerpool=workerpool,
            poll_interval_s=poll_interval_s,
            worker_lost_after_s=worker_lost_after_s,
            result_upload_timeout_s=result_upload_timeout_s,
            from_block=from_block,
        )
        sms = SchedulerSms(sms_urls or {}, session, scheduler_account, result_proxy_url)
        duties = Duties(state, chain, broker, duty_settings, sms)
        api = SchedulerApi(
            ApiSettings(
                workerpool=workerpool,
                scheduler_address=scheduler_address,
                result_proxy_url=result_proxy_url,
                chain_id=deployment.chain_id,
                chain_node_url=rpc_url,
                hub=deployment.hub.lower(),
                ask_for_replicate_period_ms=ask_for_replicate_period_ms,
                required_worker_version=required_worker_version,
                block_time_s=block_time_s,
                out_of_service_s=out_of_service_s,
            ),
            state,
            Authenticator(APP_VERSION_FOR_AUDIENCE, whitelist),
            ReplicateSupply(
                state,
                chain,
                scheduler_account,
                ask_for_replicate_period_ms=ask_for_replicate_period_ms,
                gas_price_cap_wei=gas_price_cap_wei,
            ),
            StatusUpdater(state, chain, results, policy=check_policy, on_change=duties.wake),
            Recovery(state, chain, results, scheduler_account),
        )
        faults = Faults()
        scheduler = cls(
            api=api, state=state, duties=duties, broker=broker, runner=None, session=session, url="",
            faults=faults, host=host, port=port,
        )  # fmt: skip
        try:
            await scheduler._serve()
            # A first chain read before serving, so /replicates/* are not 503 at start.
            await duties.observe_chain()
        except BaseException:
            await scheduler._unserve()
            await broker.close()
            await session.close()
            raise
        scheduler._start_duties()
        log.info("development scheduler serving %s for workerpool %s", scheduler.url, workerpool)
        return scheduler

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self.faults.middleware])
        self.api.install(app)
        add_sockjs_routes(app, self.broker)
        runner = web.AppRunner(app, access_log=None)
        self._runner = runner
        await runner.setup()
        await web.TCPSite(runner, self._host, self._port).start()
        self._port = int(runner.addresses[0][1])
        self.url = f"http://{self._host}:{self._port}"
        self.api.base_url = self.url

    async def _unserve(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _start_duties(self) -> None:
        self._stop = asyncio.Event()
        self._loop_task = asyncio.create_task(self.duties.run(self._stop), name="dev-scheduler-duties")

    async def _stop_duties(self) -> None:
        self._stop.set()
        if self._loop_task is not None:
            task, self._loop_task = self._loop_task, None
            await task

    @property
    def serving(self) -> bool:
        return self._runner is not None

    async def go_down(self) -> None:
        """Stop as iexec-core does when its process stops: connections refused, push sessions and JWTs
        gone, duties stopped; tasks and replicates kept (iexec-core's are in MongoDB)."""
        await self._stop_duties()
        await self._unserve()
        self.api.forget_logins()
        log.info("development scheduler down (state kept); it comes back on %s", self.url)

    async def come_back(self) -> None:
        """Serve again on the same port with the state kept, as iexec-core restarted on its database."""
        if self._runner is None:
            await self._serve()
            await self.duties.observe_chain()
            self._start_duties()
            log.info("development scheduler back on %s", self.url)

    async def restart(self, down_for: float = 0.0) -> None:
        await self.go_down()
        await asyncio.sleep(down_for)
        await self.come_back()

    async def stop(self) -> None:
        await self._stop_duties()
        await self.broker.close()
        await self._unserve()
        await self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- read access (tests, diagnostics) -----------------------------------------------------

    def task(self, task_id: str) -> Task | None:
        return self.state.tasks.get(task_id)

    def task_status(self, task_id: str) -> TaskStatus | None:
        task = self.state.tasks.get(task_id)
        return task.status if task else None

    def task_history(self, task_id: str) -> list[TaskStatus]:
        task = self.state.tasks.get(task_id)
        return task.statuses if task else []

    def replicate_history(self, task_id: str, wallet: str) -> list[ReplicateStatus]:
        replicate = self.state.replicate(task_id, wallet.lower())
        return replicate.statuses if replicate else []

    def task_logs(self, task_id: str) -> dict[str, ComputeLogs]:
        """The app logs the workers sent for this task, by wallet (iexec-core ``GET /tasks/{id}/logs``)."""
        task = self.state.tasks.get(task_id)
        return dict(task.compute_logs) if task else {}

    def require_worker_version(self, version: str) -> None:
        """Set iexec-core's ``requiredWorkerVersion`` ("" accepts any): workers read it when they join."""
        self.api.settings = dataclasses.replace(self.api.settings, required_worker_version=version)

    @property
    def notifications(self) -> list[TaskNotification]:
        """Every notification published, in order."""
        return list(self.state.notifications)
