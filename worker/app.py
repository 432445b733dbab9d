"""Composition root: the only place that wires settings, adapters and loops together.

Start-up follows the reference order (scheduler configuration, chain configuration, gas check,
login, register, recovery), then the long-lived loops run in one TaskGroup until a signal:
push channel, heartbeat, replicate demand, wallet watch, HTTP. SIGTERM/SIGINT ask for a stop; the
supervisor drains in-flight replicates for a grace period; a second signal forces the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp
from eth_account.signers.local import LocalAccount

from worker import __version__
from worker.chain import (
    ChainClient,
    ChainWatcher,
    GasPolicy,
    SentTx,
    TaskDescription,
    TaskNotFound,
    TransactionSender,
    TxKind,
    has_enough_gas,
    verify_authorization,
)
from worker.compute import DockerEngine, RegistryAuth
from worker.config import Settings
from worker.data.dataset import DatasetRef
from worker.data.downloads import DownloadLimits
from worker.data.task import download_task_data
from worker.http import Health, HttpServer, create_http_app
from worker.metrics import Metrics
from worker.protocol.errors import ConfigurationError, SchedulerError, WorkerError
from worker.protocol.models import (
    PublicConfiguration,
    ReplicateStatusDetails,
    ReplicateStatusUpdate,
    TaskNotification,
    WorkerModel,
    WorkerpoolAuthorization,
)
from worker.protocol.status import (
    ChainTaskStatus,
    ReplicateStatus,
    TaskAbortCause,
    TaskNotificationType,
    next_action,
)
from worker.replicate.pipeline import PipelineDeps, local_notification
from worker.replicate.ports import UploadOutcome
from worker.replicate.store import ReplicateStore
from worker.replicate.supervisor import Supervisor
from worker.replicate.work import ContainerLimits, TaskWork, WorkSettings
from worker.result import ZIP_NAME
from worker.result.upload import upload_result
from worker.scheduler import SchedulerClient, UpdateKind
from worker.scheduler.stomp import PushChannel
from worker.wallet import WalletLock, load_wallet

log = logging.getLogger("iexec.worker")
T = TypeVar("T")

PING_PERIOD = 10.0
STOP_GRACE = 30.0
PUSH_READY_WAIT = 10.0


class _StoreJournal:
    """The replicate store seen as the transaction sender's journal."""

    def __init__(self, store: ReplicateStore) -> None:
        self._store = store

    async def record_sent(self, task_id: str, kind: TxKind, tx_hash: str, nonce: int, raw_tx: str) -> None:
        await self._store.record_sent(task_id, kind.value, tx_hash, nonce, raw_tx)

    async def replace_sent(self, task_id: str, kind: TxKind, tx_hash: str, nonce: int, raw_tx: str) -> None:
        await self._store.replace_sent(task_id, kind.value, tx_hash, nonce, raw_tx)

    async def sent(self, task_id: str, kind: TxKind) -> SentTx | None:
        row = await self._store.sent(task_id, kind.value)
        return SentTx(row.task_id, kind, row.tx_hash, row.nonce, row.raw_tx) if row else None


class SchedulerReporter:
    """Sends statuses and turns the scheduler's answer into the next action."""

    def __init__(
        self,
        client: SchedulerClient,
        push: PushChannel,
        deadline_of: Callable[[str], float | None],
        metrics: Metrics,
    ) -> None:
        self._client = client
        self._push = push
        self._deadline_of = deadline_of
        self._metrics = metrics
        self._outage_waited = False

    async def report(
        self, task_id: str, status: ReplicateStatus, details: ReplicateStatusDetails | None = None
    ) -> TaskNotificationType | None:
        # The scheduler answers some statuses only through the push channel: do not report while it is
        # down, but never wait forever (the chain watcher and recovery cover a lost notification).
        # One wait per outage: once the channel failed to come back, later reports of every replicate go
        # straight out until it is up again, so a long outage does not slow each status by the wait.
        if self._push.is_connected:
            self._outage_waited = False
        elif not self._outage_waited and not await self._push.wait_connected(PUSH_READY_WAIT):
            self._outage_waited = True
            log.warning("push channel down: reporting without it (the chain watcher covers reveals)")
        update = ReplicateStatusUpdate(status=status, details=details)
        deadline = self._deadline_of(task_id) or time.time() + 3600
        try:
            outcome = await self._client.update_status(task_id, update, deadline=deadline)
        except SchedulerError:
            self._metrics.scheduler_errors.labels("updateStatus").inc()
            raise
        if outcome.kind is UpdateKind.ABORT:
            return TaskNotificationType.PLEASE_ABORT
        if outcome.kind is UpdateKind.ALREADY_REPORTED:
            return next_action(status, details.cause if details else None)
        return outcome.action


@dataclass
class Runtime:
    settings: Settings
    metrics: Metrics
    health: Health
    stop: asyncio.Event


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    count = 0

    def on_signal(signum: int) -> None:
        nonlocal count
        count += 1
        if count == 1:
            log.info(
                "%s received: stopping after in-flight work (send again to force)",
                signal.Signals(signum).name,
            )
            stop.set()
        else:
            log.warning("second signal: stopping now")
            for task in asyncio.all_tasks(loop):
                task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signum)


async def run_worker(
    settings: Settings, *, stop: asyncio.Event | None = None, install_signals: bool = True
) -> int:
    """Run the worker until ``stop`` is set; returns the process exit code."""
    stop = stop or asyncio.Event()
    if install_signals:
        _install_signals(stop)
    account = await load_wallet(settings.wallet_path, settings.wallet_password)
    address = account.address.lower()
    node = settings.node
    with WalletLock(node.base_dir, address):
        log.info("worker %s (wallet %s) starting, version %s", node.name, address, __version__)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                restart = asyncio.Event()
                code = await _serve(settings, session, account, address, stop, restart)
                if stop.is_set() or not restart.is_set():
                    return code
                log.info("joining the scheduler again with its new configuration")


async def _serve(
    settings: Settings,
    session: aiohttp.ClientSession,
    account: LocalAccount,
    address: str,
    outer_stop: asyncio.Event,
    restart: asyncio.Event,
) -> int:
    """One membership of the pool: join, work until stopped or until a restart is requested."""
    stop = asyncio.Event()  # set by an outer stop or a restart: every loop below ends on it

    async def link() -> None:
        waiters = {asyncio.ensure_future(outer_stop.wait()), asyncio.ensure_future(restart.wait())}
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        stop.set()

    linker = asyncio.create_task(link(), name="stop-link")
    try:
        return await _member(settings, session, account, address, stop, restart)
    finally:
        linker.cancel()


async def _member(
    settings: Settings,
    session: aiohttp.ClientSession,
    account: LocalAccount,
    address: str,
    stop: asyncio.Event,
    restart: asyncio.Event,
) -> int:
    node = settings.node
    metrics = Metrics()
    metrics.info.info({"version": __version__, "name": node.name, "wallet": address})
    health = Health()
    scheduler = SchedulerClient(session, settings.scheduler.core_url, account)
    public = await _retry_start("read the scheduler configuration", scheduler.get_public_configuration, stop)
    if public.required_worker_version and public.required_worker_version != __version__:
        raise ConfigurationError(
            f"the scheduler requires worker version {public.required_worker_version}, this is {__version__}"
        )
    chain_config = await _retry_start(
        "read the chain configuration", lambda: scheduler.get_chain_config(public.config_server_url), stop
    )
    chain = await ChainClient.connect(
        settings.chain.node_urls(chain_config.chain_node_url),
        chain_config.iexec_hub_contract_address,
        max_block_lag=settings.chain.max_block_lag,
        observer=metrics,
    )
    try:
        node_chain_id = await chain.chain_id()
        if node_chain_id != chain_config.chain_id:
            raise ConfigurationError(
                f"the node at {chain.rpc_url} is on chain {node_chain_id}, the scheduler on chain {chain_config.chain_id}: "
                "fix IEXEC_WORKER_OVERRIDE_BLOCKCHAIN_NODE_ADDRESS"
            )
        balance = await chain.balance(address)
        health.out_of_gas = not chain_config.sidechain and not has_enough_gas(
            balance, settings.chain.gas_price_cap
        )
        metrics.out_of_gas.set(1 if health.out_of_gas else 0)
        if health.out_of_gas:
            log.error(
                "wallet %s holds %d wei: too little to pay a transaction at the gas price cap; refill it",
                address,
                balance,
            )
        await scheduler.login()
        core_version = await scheduler.get_version()
        slots = settings.available_cpu_count
        await scheduler.register(
            WorkerModel(
                name=node.name,
                wallet_address=address,
                os=platform.system(),
                cpu=platform.machine(),
                cpu_nb=slots,
                memory_size=_memory_gb(),
                gpu_enabled=node.gpu_enabled,
                tee_enabled=False,
                tdx_enabled=False,
            )
        )
        log.info(
            "joined scheduler %s (core %s) with %d slot(s)", settings.scheduler.core_url, core_version, slots
        )
        health.joined = True
        metrics.slots_total.set(slots)

        store = await ReplicateStore.open(node.state_db)
        engine = await DockerEngine.open()
        try:
            removed = await engine.remove_labelled(node.name)
            if removed:
                log.info("removed %d container(s) left by a previous run", len(removed))
            push = PushChannel(session, settings.scheduler.core_url)
            sender = TransactionSender(
                chain,
                account,
                _StoreJournal(store),
                gas_policy=GasPolicy(
                    multiplier=settings.chain.gas_price_multiplier, cap=settings.chain.gas_price_cap
                ),
                sidechain=chain_config.sidechain,
                replace_after=settings.chain.tx_replace_after.total_seconds(),
            )
            work = _make_work(settings, chain, sender, engine, session, store, account, public)
            reporter = SchedulerReporter(scheduler, push, work.final_deadline, metrics)
            supervisor: Supervisor

            async def on_message(body: str) -> None:
                try:
                    notification = TaskNotification.model_validate_json(body)
                except ValueError:
                    log.warning("unreadable notification from the scheduler ignored")
                    return
                supervisor.notify(notification)

            async def subscribe(task_id: str) -> None:
                await push.subscribe(f"/topic/task/{task_id}", on_message)

            async def unsubscribe(task_id: str) -> None:
                await push.unsubscribe(f"/topic/task/{task_id}")

            supervisor = Supervisor(
                PipelineDeps(store, reporter, work, metrics),
                slots=slots,
                wallet=address,
                subscribe=subscribe,
                unsubscribe=unsubscribe,
                on_change=lambda: metrics.slots_busy.set(supervisor.computing),
            )

            def deliver_local(
                task_id: str, action: TaskNotificationType, block: int, cause: TaskAbortCause | None
            ) -> None:
                supervisor.notify(local_notification(task_id, action, block_number=block, abort_cause=cause))

            watcher = ChainWatcher(
                chain,
                address,
                lambda: [(task_id, supervisor.status_of(task_id)) for task_id in supervisor.active],
                deliver_local,
                poll_interval=settings.chain.chain_poll_period.total_seconds(),
            )

            async def replicates_view() -> list[dict[str, object]]:
                return [
                    {"chainTaskId": task_id, "status": str(supervisor.status_of(task_id))}
                    for task_id in supervisor.active
                ]

            http = HttpServer(create_http_app(metrics, health, replicates_view), node.http_host, node.port)
            await http.start()
            log.info("metrics and health on http://%s:%d", node.http_host, http.port)
            try:
                # The push channel outlives the drain: in-flight replicates still need their notifications
                # (PLEASE_REVEAL, PLEASE_COMPLETE), and report statuses only while it is up.
                push_stop = asyncio.Event()
                async with asyncio.TaskGroup() as group:
                    group.create_task(push.run(push_stop), name="push-channel")
                    # Listen on the topics of stored replicates before asking for interrupted ones: what
                    # the scheduler publishes right after recovery must not fall between the two.
                    for record in await store.unfinished():
                        await subscribe(record.task_id)
                    await push.wait_connected(PUSH_READY_WAIT)
                    interrupted = await scheduler.get_interrupted(await chain.latest_block_number())
                    resumed = await supervisor.resume(interrupted)
                    if resumed:
                        log.info("resumed %d replicate(s) from the local store", resumed)
                    await _complete_finalized(chain, supervisor)
                    group.create_task(
                        _heartbeat(scheduler, supervisor, health, metrics, push, stop, restart),
                        name="heartbeat",
                    )
                    group.create_task(
                        _demand(
                            settings, public, scheduler, chain, supervisor, health, metrics, address, stop
                        ),
                        name="replicate-demand",
                    )
                    group.create_task(
                        _watch_wallet(
                            chain, address, settings, chain_config.sidechain, health, metrics, stop
                        ),
                        name="wallet-watch",
                    )
                    group.create_task(watcher.run(stop), name="chain-watcher")
                    await stop.wait()
                    await supervisor.drain(STOP_GRACE)
                    push_stop.set()
            finally:
                await http.stop()
        finally:
            await engine.close()
            await store.close()
    finally:
        await chain.close()
    log.info("worker stopped")
    return 0


def _make_work(
    settings: Settings,
    chain: ChainClient,
    sender: TransactionSender,
    engine: DockerEngine,
    session: aiohttp.ClientSession,
    store: ReplicateStore,
    account: LocalAccount,
    public: PublicConfiguration,
) -> TaskWork:
    address = account.address.lower()
    docker = settings.docker
    limits = ContainerLimits(
        memory_bytes=docker.container_memory_limit,
        nano_cpus=int(docker.container_cpu_limit * 1e9) if docker.container_cpu_limit else None,
        pids_limit=docker.container_pids_limit,
        network=docker.network_name or None,
    )
    registries = tuple(
        RegistryAuth(server=r.address, username=r.username, password=r.password.get_secret_value())
        for r in docker.registries
        if r.username and r.password is not None
    )
    data = settings.data
    download_limits = DownloadLimits(
        max_bytes=data.max_bytes,
        total_timeout=data.download_timeout.total_seconds(),
        stall_timeout=data.stall_timeout.total_seconds(),
        max_redirects=data.max_redirects,
    )
    gateways = tuple(data.ipfs_gateways)

    async def download(description: TaskDescription, folder: Path) -> None:
        dataset = None
        if description.contains_dataset():
            dataset = DatasetRef(
                address=description.dataset_address,
                uri=description.dataset_uri,
                checksum=description.dataset_checksum,
            )
        await download_task_data(
            session,
            folder,
            dataset=dataset,
            input_files=list(description.deal_params.iexec_input_files),
            limits=download_limits,
            gateways=gateways,
        )

    async def upload(
        description: TaskDescription, authorization: WorkerpoolAuthorization, output: Path, digest: str
    ) -> UploadOutcome:
        params = description.deal_params
        link = await upload_result(
            session,
            task_id=description.task_id,
            authorization=authorization,
            account=account,
            zip_path=output / ZIP_NAME,
            result_digest=digest,
            callback=description.callback if description.contains_callback() else None,
            storage_proxy=params.iexec_result_storage_proxy,
            result_repository_url=public.result_repository_url,
            storage_provider=params.iexec_result_storage_provider,
            attempts=settings.result.upload_attempts,
            max_seconds=settings.result.upload_timeout.total_seconds(),
        )
        record = await store.get(description.task_id)
        callback_data = record.callback_data if record and description.contains_callback() else None
        return UploadOutcome(result_link=link, callback_data=callback_data)

    async def digest_of(task_id: str) -> str | None:
        record = await store.get(task_id)
        return record.result_digest if record else None

    return TaskWork(
        WorkSettings(
            worker_name=settings.node.name,
            task_root=settings.node.task_root,
            gas_price_cap=settings.chain.gas_price_cap,
            limits=limits,
            registries=registries,
            min_pull_timeout=docker.min_pull_timeout.total_seconds(),
            max_pull_timeout=docker.max_pull_timeout.total_seconds(),
            max_result_bytes=settings.result.max_bytes,
        ),
        chain,
        sender,
        engine,
        worker_address=address,
        download_data=download,
        upload=upload,
        digest_of=digest_of,
    )


async def _retry_start(what: str, call: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T:
    """At start, wait for the scheduler with backoff rather than crash-looping."""
    delay = 1.0
    while True:
        try:
            return await call()
        except SchedulerError as exc:
            if stop.is_set():
                raise
            log.warning("cannot %s yet (%s); retrying in %.0f s", what, exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 30.0)


# Statuses in which a replicate only waits for its task to be completed.
_AWAITING_COMPLETION = frozenset({
    ReplicateStatus.REVEALED, ReplicateStatus.RESULT_UPLOADED, ReplicateStatus.RESULT_UPLOAD_FAILED,
})  # fmt: skip


async def _complete_finalized(chain: ChainClient, supervisor: Supervisor) -> None:
    """Complete the resumed replicates whose task was finalized while this worker was down.

    The scheduler's PLEASE_COMPLETE then reached nobody, and its recovery no longer lists a completed
    task (a worker's participation ends with the task): the replicate would wait forever.
    """
    for task_id in supervisor.active:
        if supervisor.status_of(task_id) not in _AWAITING_COMPLETION:
            continue
        try:
            task = await chain.task(task_id)
        except WorkerError as exc:
            log.warning("%s: cannot read the task on chain (%s); waiting for the scheduler", task_id, exc)
            continue
        if task.status is ChainTaskStatus.COMPLETED:
            log.info("%s: completed on chain while this worker was down: completing the replicate", task_id)
            supervisor.notify(local_notification(task_id, TaskNotificationType.PLEASE_COMPLETE))


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, or return True early when stop is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def _heartbeat(
    scheduler: SchedulerClient,
    supervisor: Supervisor,
    health: Health,
    metrics: Metrics,
    push: PushChannel,
    stop: asyncio.Event,
    restart: asyncio.Event,
) -> None:
    first_hash: str | None = None
    while not stop.is_set():
        try:
            config_hash = await scheduler.ping()
        except SchedulerError as exc:
            metrics.scheduler_errors.labels("ping").inc()
            health.problems["scheduler"] = f"ping failed: {exc}"
            log.warning("ping failed: %s", exc)
        else:
            health.problems.pop("scheduler", None)
            health.last_ping_ok = time.time()
            metrics.last_ping.set(health.last_ping_ok)
            if config_hash:
                if first_hash is None:
                    first_hash = config_hash
                elif config_hash.lower() != first_hash.lower() and supervisor.computing == 0:
                    log.warning("the scheduler's configuration changed: joining again")
                    restart.set()
                    return
        health.push_connected = push.is_connected
        metrics.push_connected.set(1 if push.is_connected else 0)
        if await _sleep_or_stop(stop, PING_PERIOD):
            return


async def _demand(
    settings: Settings,
    public: PublicConfiguration,
    scheduler: SchedulerClient,
    chain: ChainClient,
    supervisor: Supervisor,
    health: Health,
    metrics: Metrics,
    address: str,
    stop: asyncio.Event,
) -> None:
    period = max(public.ask_for_replicate_period / 1000, 0.5)
    pool = settings.scheduler.pool_address.lower()
    while not await _sleep_or_stop(stop, period):
        if supervisor.free_slots <= 0 or health.out_of_gas:
            continue
        try:
            block = await chain.latest_block_number()
            summary = await scheduler.ask_for_replicate(block)
        except WorkerError as exc:
            metrics.scheduler_errors.labels("available").inc()
            log.warning("asking for a replicate failed: %s", exc)
            continue
        if summary is None:
            continue
        authorization = summary.workerpool_authorization
        task_id = authorization.chain_task_id
        try:
            valid = await verify_authorization(chain, authorization, pool, address)
            if valid:
                await chain.task_description(task_id)
        except TaskNotFound:
            log.warning("%s: offered by the scheduler but not found on chain; skipped", task_id)
            continue
        except WorkerError as exc:
            log.warning("%s: cannot check the offered replicate: %s", task_id, exc)
            continue
        if not valid:
            log.error(
                "%s: authorization not signed by the owner of POOL_ADDRESS=%s; replicate refused (check POOL_ADDRESS)",
                task_id,
                pool,
            )
            continue
        await supervisor.admit(authorization)


async def _watch_wallet(
    chain: ChainClient,
    address: str,
    settings: Settings,
    sidechain: bool,
    health: Health,
    metrics: Metrics,
    stop: asyncio.Event,
) -> None:
    while True:
        try:
            balance = await chain.balance(address)
            account = await chain.account(address)
        except WorkerError as exc:
            health.problems["chain"] = f"node unreachable: {exc}"
        else:
            health.problems.pop("chain", None)
            metrics.eth_balance_wei.set(balance)
            metrics.rlc_stake_nrlc.set(account.stake)
            metrics.rlc_locked_nrlc.set(account.locked)
            out_of_gas = not sidechain and not has_enough_gas(balance, settings.chain.gas_price_cap)
            if out_of_gas != health.out_of_gas:
                if out_of_gas:
                    log.error(
                        "OUT_OF_GAS: wallet %s cannot pay a transaction at the cap; no new work until refilled",
                        address,
                    )
                else:
                    log.info("wallet refilled: asking for work again")
            health.out_of_gas = out_of_gas
            metrics.out_of_gas.set(1 if out_of_gas else 0)
        if await _sleep_or_stop(stop, settings.chain.chain_poll_period.total_seconds()):
            return


def _memory_gb() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return max(int(line.split()[1]) // (1024 * 1024), 1)
    except OSError:
        pass
    return 1
