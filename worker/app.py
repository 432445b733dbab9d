"""Composition root: the only place that wires settings, adapters and policies together.

One membership of the pool is one ``AsyncExitStack``: every resource opened is closed in reverse
order whatever happens. The policies (joining, reporting, heartbeat, demand, funds, completion) live
in ``worker.membership``; the replicates in ``worker.replicate``. SIGTERM/SIGINT ask for a stop; the
supervisor drains in-flight replicates for a grace period; a second signal forces the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import socket
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import aiohttp
from eth_account.signers.local import LocalAccount
from yarl import URL

from worker import __version__
from worker.chain import (
    ChainClient,
    ChainWatcher,
    GasPolicy,
    TransactionSender,
    current_fees,
    max_price,
    paid_fee,
)
from worker.compute import isolate_app_network, refused_addresses
from worker.config import Settings
from worker.data import guarded_session
from worker.http import HttpServer, create_http_app
from worker.looplag import sample_loop_lag
from worker.membership import (
    FundsWatch,
    Health,
    Heartbeat,
    MissedNews,
    ReplicateDemand,
    SchedulerConsensus,
    SchedulerReporter,
    StopRequested,
    adopt_unstored,
    complete_finalized,
    join_pool,
    lifecycle,
    retry_until_stopped,
)
from worker.membership.disk import DiskSpace
from worker.membership.engine import EngineWaits
from worker.membership.health import StartStage
from worker.membership.join import memory_gb
from worker.membership.status import Identity, StatusView
from worker.metrics import Metrics
from worker.protocol.models import PublicChainConfig, TaskNotification, WorkerModel
from worker.protocol.redact import display_url
from worker.protocol.status import TaskAbortCause, TaskNotificationType
from worker.proxy import proxy_middleware
from worker.replicate.journal import StoreJournal
from worker.replicate.pipeline import PipelineDeps, local_notification
from worker.replicate.store import ReplicateStore
from worker.replicate.supervisor import Supervisor
from worker.replicate.work import TaskWork
from worker.scheduler import SchedulerClient
from worker.scheduler.stomp import PushChannel
from worker.tee_wiring import EnclaveRoutes, enclave_routes, open_engine, open_tee
from worker.wallet import WalletLock, load_wallet

log = logging.getLogger("iexec.worker")

STOP_GRACE = 30.0
PUSH_READY_WAIT = 10.0
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)


async def run_worker(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    install_signals: bool = True,
    wallet: Callable[[], Awaitable[LocalAccount]] | None = None,
) -> int:
    """Run the worker until ``stop`` is set; returns the process exit code.

    The HTTP server starts first: probes see the worker alive (and why it is not ready yet) while it
    decrypts its wallet and waits for the scheduler. ``wallet`` gives the account when its decryption
    was started before (the CLI starts it first thing); by default the keystore is decrypted here.
    """
    stop = stop or asyncio.Event()
    if install_signals:
        lifecycle.install_signals(stop)
    node = settings.node
    metrics, health = Metrics(window_size=node.metrics_window_size), Health()
    status = StatusView(
        Identity(
            name=node.name, version=__version__, scheduler_url=display_url(settings.scheduler.core_url),
            pool=settings.scheduler.pool_address, gas_price_multiplier=settings.chain.gas_price_multiplier,
            gas_price_cap=settings.chain.gas_price_cap,
        ),
        health,
    )  # fmt: skip
    http_app = create_http_app(metrics, health, status, protocol_version=node.protocol_version)
    enclave = enclave_routes(settings, http_app)  # on this server only when it holds the enclaves' port
    http = HttpServer(http_app, node.http_host, node.port)
    await http.start()
    lag_sampler = asyncio.create_task(sample_loop_lag(metrics.loop_lag), name="loop-lag")
    log.info("health, metrics and status page on http://%s:%d/status", node.http_host, http.port)
    try:
        health.enter(StartStage.WALLET, f"decrypting the wallet {settings.wallet_path}")
        account = await (wallet() if wallet else load_wallet(settings.wallet_path, settings.wallet_password))
        address = status.identity.wallet = account.address.lower()
        metrics.info.info(
            {"version": __version__, "protocol_version": node.protocol_version, "name": node.name, "wallet": address}
        )  # fmt: skip
        with WalletLock(node.base_dir, address):
            log.info(
                "worker %s (wallet %s) starting, version %s, behaving as iexec-worker %s",
                node.name, address, __version__, node.protocol_version,
            )  # fmt: skip
            log.info("outbound HTTP: %s", settings.proxy.routes().describe())
            proxies = (proxy_middleware(settings.proxy.routes()),)
            async with aiohttp.ClientSession(timeout=_TIMEOUT, middlewares=proxies) as session:
                while True:
                    rejoin = asyncio.Event()
                    code = await _membership(
                        settings, session, account, (metrics, health, status, enclave), stop, rejoin
                    )
                    if stop.is_set() or not rejoin.is_set():
                        return code
                    log.info("joining the scheduler again with its new configuration")
    finally:
        lag_sampler.cancel()
        health.enter(StartStage.STOPPING, "stopped")
        await http.stop()


async def _membership(
    settings: Settings,
    session: aiohttp.ClientSession,
    account: LocalAccount,
    views: tuple[Metrics, Health, StatusView, EnclaveRoutes],
    outer_stop: asyncio.Event,
    rejoin: asyncio.Event,
) -> int:
    """One membership of the pool: join, then work until stopped or until the scheduler asks to rejoin."""
    node, address = settings.node, account.address.lower()
    stop = asyncio.Event()  # set by the outer stop or by a rejoin: every loop below ends on it
    metrics, health, status, enclave = views
    gas_policy = GasPolicy(multiplier=settings.chain.gas_price_multiplier, cap=settings.chain.gas_price_cap)
    scheduler = SchedulerClient(session, settings.scheduler.core_url, account)
    async with AsyncExitStack() as stack:
        linker = asyncio.create_task(lifecycle.first_of(outer_stop, rejoin, then=stop), name="stop-link")
        stack.callback(linker.cancel)

        async def connect_chain(config: PublicChainConfig) -> ChainClient:
            chain = await ChainClient.connect(
                settings.chain.node_urls(config.chain_node_url),
                config.iexec_hub_contract_address,
                max_block_lag=settings.chain.max_block_lag,
                request_timeout=settings.chain.request_timeout.total_seconds(),
                observer=metrics,
                proxy_for=settings.proxy.routes().for_url,
            )
            stack.push_async_callback(chain.close)
            return chain

        def funds_watch(chain: ChainClient, config: PublicChainConfig) -> FundsWatch:
            async def price_now() -> int:
                return max_price(await current_fees(chain, gas_policy))

            return FundsWatch(
                chain, health, metrics, wallet=address, gas_price_cap=settings.chain.gas_price_cap,
                sidechain=config.sidechain, period=settings.chain.chain_poll_period.total_seconds(),
                gas_price=price_now,
            )  # fmt: skip

        engine, found = await open_engine(stack, settings, address)  # TEE flags: what was found on this host
        slots = settings.available_cpu_count
        model = WorkerModel(
            name=node.name, wallet_address=address, os=platform.system(), cpu=platform.machine(),
            cpu_nb=slots, memory_size=memory_gb(), gpu_enabled=node.gpu_enabled, tee_enabled=found.sgx.enabled,
            tdx_enabled=found.tdx,
        )  # fmt: skip
        where = f"the scheduler at {display_url(settings.scheduler.core_url)}"
        try:
            joined = await join_pool(
                scheduler, connect_chain, model, funds_watch, health, metrics, stop,
                worker_version=node.protocol_version, scheduler_url=display_url(settings.scheduler.core_url),
            )  # fmt: skip
        except StopRequested:  # asked to stop while the scheduler was still down: nothing to drain
            log.info("stopped before joining the scheduler")
            return 0
        chain = joined.chain
        core_url = settings.scheduler.core_url
        log.info("joined scheduler %s (core %s) with %d slot(s)", core_url, joined.core_version, slots)

        store = await ReplicateStore.open(node.state_db)
        stack.push_async_callback(store.close)
        push = PushChannel(session, core_url)
        sender = TransactionSender(
            chain, account, StoreJournal(store),
            gas_policy=gas_policy,
            sidechain=joined.chain_config.sidechain, replace_after=settings.chain.tx_replace_after.total_seconds(),
            confirmations=settings.chain.tx_confirmations,
        )  # fmt: skip
        untrusted = guarded_session(  # data, input files, the deal's result proxy: URLs strangers chose
            settings.target_policy(joined.public.result_repository_url), timeout=_TIMEOUT,
            middlewares=(proxy_middleware(settings.proxy.routes()),),
        )  # fmt: skip
        await stack.enter_async_context(untrusted)
        work_settings = settings.work_settings(
            result_repository_url=joined.public.result_repository_url, sidechain=joined.chain_config.sidechain
        )
        work = TaskWork(work_settings, chain, sender, engine, untrusted, account, store)
        work.on_engine_wait = EngineWaits(health, metrics)
        await work.purge_leftovers({r.task_id for r in await store.unfinished()}, keep_path=node.state_db)
        work.tee = await open_tee(
            stack, settings, found, enclave, joined, engine=engine, session=session, account=account, store=store,
            registries=work.registries, metrics=metrics)  # fmt: skip
        supervisor: Supervisor

        async def on_message(body: str) -> None:
            try:
                notification = TaskNotification.model_validate_json(body)
            except ValueError:
                log.warning("unreadable notification from the scheduler ignored")
                return
            supervisor.notify(notification)

        supervisor = Supervisor(
            PipelineDeps(
                store, SchedulerReporter(scheduler, push, work.final_deadline, metrics), work, metrics
            ),
            slots=slots,
            wallet=address,
            subscribe=lambda task_id: push.subscribe(f"/topic/task/{task_id}", on_message),
            unsubscribe=lambda task_id: push.unsubscribe(f"/topic/task/{task_id}"),
            on_change=lambda: metrics.slots_busy.set(supervisor.computing),
        )

        def deliver_local(
            task_id: str, action: TaskNotificationType, block: int, cause: TaskAbortCause | None
        ) -> None:
            supervisor.notify(local_notification(task_id, action, block_number=block, abort_cause=cause))

        watcher = ChainWatcher(
            chain, address, lambda: [(t, supervisor.status_of(t)) for t in supervisor.active], deliver_local,
            poll_interval=settings.chain.chain_poll_period.total_seconds(),
            reorg_depth=settings.chain.tx_confirmations,
            reveal_allowed=SchedulerConsensus(scheduler).reached,
        )  # fmt: skip

        status.attach(store, lambda tx_hash: paid_fee(chain, tx_hash), supervisor)
        stack.callback(status.detach)
        await isolate_app_network(
            engine, settings.docker.network_name, worker_name=node.name, worker_port=node.port or None,
            allowed=settings.sandbox.network_allowlist, helper_image=settings.sandbox.firewall_image,
            refused=refused_addresses(await _node_addresses(settings.chain.node_urls(joined.chain_config.chain_node_url))),
        )  # fmt: skip
        log.info("apps run in the %s sandbox: %s", settings.sandbox.profile.value, work_settings.limits)
        # The push channel outlives the drain: in-flight replicates still need their notifications
        # (PLEASE_REVEAL, PLEASE_COMPLETE), and report statuses only while it is up.
        push_stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(push.run(push_stop), name="push-channel")
            health.enter(StartStage.RESUMING, "connecting the push channel, resuming stored replicates")
            # Listen on the topics of stored replicates before asking for interrupted ones: what the
            # scheduler publishes right after recovery must not fall between the two.
            for record in await store.unfinished():
                await push.subscribe(f"/topic/task/{record.task_id}", on_message)
            await push.wait_connected(PUSH_READY_WAIT)
            try:
                interrupted = await retry_until_stopped(
                    "ask for the interrupted replicates",
                    lambda: _interrupted(scheduler, chain), stop, health=health, where=where,
                )  # fmt: skip
            except StopRequested:
                log.info("stopped before resuming the stored replicates; they resume at the next start")
                push_stop.set()
                return 0
            if resumed := await supervisor.resume(interrupted):
                log.info("resumed %d replicate(s) from the local store", resumed)
            await adopt_unstored(
                chain, supervisor, interrupted, pool_address=settings.scheduler.pool_address, wallet=address
            )
            await complete_finalized(chain, supervisor)
            heartbeat = Heartbeat(scheduler, supervisor, push, health, metrics)
            group.create_task(heartbeat.run(stop, rejoin), name="heartbeat")
            disk = DiskSpace(
                node.base_dir, node.base_dir_min_free_bytes, health, metrics, store_full=lambda: store.full
            )
            group.create_task(disk.run(stop), name="disk-watch")
            demand = ReplicateDemand(
                scheduler, chain, supervisor, health, metrics, pool_address=settings.scheduler.pool_address,
                wallet=address, ask_period=joined.public.ask_for_replicate_period / 1000, disk=disk,
            )  # fmt: skip
            group.create_task(demand.run(stop), name="replicate-demand")
            group.create_task(funds_watch(chain, joined.chain_config).run(stop), name="wallet-watch")
            group.create_task(watcher.run(stop), name="chain-watcher")
            missed = MissedNews(
                scheduler,
                chain,
                supervisor,
                push,
                period=settings.scheduler.missed_news_period.total_seconds(),
            )
            group.create_task(missed.run(stop), name="missed-news")
            health.enter(StartStage.WORKING, f"working with {slots} slot(s)")
            await stop.wait()
            health.enter(StartStage.STOPPING, f"stopping: draining replicates for up to {STOP_GRACE:.0f} s")
            await supervisor.drain(STOP_GRACE)
            push_stop.set()
    log.info("worker stopped")
    return 0


async def _interrupted(scheduler: SchedulerClient, chain: ChainClient) -> list[TaskNotification]:
    return await scheduler.get_interrupted(await chain.latest_block_number())


async def _node_addresses(urls: list[str]) -> list[str]:
    """The addresses the chain nodes resolve to (apps must not reach a node on a private network)."""
    found: list[str] = []
    for url in urls:
        host = URL(url).host or ""
        with contextlib.suppress(OSError):
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
            found += [str(info[4][0]) for info in infos]
    return found
