"""Joining the pool, in the reference's order: scheduler configuration, chain configuration, node
check, gas check, then login and register next to the version (iexec-worker ``Application``,
``WorkerService``).

The scheduler may be down when the worker starts, or restart while it joins: every call to it is
asked again with backoff (1, 2, 4 … 30 s), each attempt logged with its cause and what the operator
can check, rather than crash-looping. The version is public and independent of the login, so it is
read while the worker logs in and registers. A stop asked during the wait ends the start with
``StopRequested``: nothing was taken yet, so the caller exits 0. Settings that contradict the
scheduler or the node stop the start with a ``ConfigurationError`` naming the setting to fix.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from worker.membership.funds import FundsWatch
from worker.membership.health import Health, StartStage
from worker.membership.waiting import sleep_or_stop
from worker.metrics import Metrics
from worker.protocol.errors import ConfigurationError, SchedulerError
from worker.protocol.models import PublicChainConfig, PublicConfiguration, WorkerModel

log = logging.getLogger("iexec.worker")
T = TypeVar("T")
C = TypeVar("C", bound="JoiningChain")

FIRST_RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 30.0


class StopRequested(Exception):
    """A stop was asked while the worker waited for the scheduler at start-up: exit 0, nothing to drain."""


class JoiningScheduler(Protocol):
    async def get_public_configuration(self) -> PublicConfiguration: ...

    async def get_chain_config(self, config_server_url: str) -> PublicChainConfig: ...

    async def login(self) -> None: ...

    async def get_version(self) -> str: ...

    async def register(self, model: WorkerModel) -> None: ...


class JoiningChain(Protocol):
    @property
    def rpc_url(self) -> str: ...

    async def chain_id(self) -> int: ...

    async def balance(self, address: str) -> int: ...


@dataclass(frozen=True)
class Joined(Generic[C]):
    public: PublicConfiguration
    chain_config: PublicChainConfig
    chain: C
    core_version: str


async def retry_until_stopped(
    what: str,
    call: Callable[[], Awaitable[T]],
    stop: asyncio.Event,
    *,
    health: Health | None = None,
    where: str = "",
) -> T:
    """Call until it answers, waiting 1, 2, 4 … 30 s after each scheduler error.

    While it waits, ``health`` says for what, at which attempt and when the next one is. A stop asked
    before or during the wait raises ``StopRequested``.
    """
    delay = FIRST_RETRY_DELAY
    attempt = 1
    while True:
        if stop.is_set():
            raise StopRequested(f"stopped while waiting to {what}")
        try:
            return await call()
        except SchedulerError as exc:
            if stop.is_set():
                raise StopRequested(f"stopped while waiting to {what}") from exc
            log.warning(
                "cannot %s yet, attempt %d (%s); retrying in %.0f s. The worker keeps trying: check that "
                "%s is up and that IEXEC_CORE_URL points to it",
                what, attempt, exc, delay, where or "the scheduler",
            )  # fmt: skip
            if health is not None:
                health.waiting(
                    f"waiting for {where or 'the scheduler'} (attempt {attempt}, next in {delay:.0f} s): "
                    f"cannot {what}: {exc}"
                )
            await sleep_or_stop(stop, delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)
            attempt += 1


async def join_pool(
    scheduler: JoiningScheduler,
    connect_chain: Callable[[PublicChainConfig], Awaitable[C]],
    model: WorkerModel,
    funds: Callable[[C, PublicChainConfig], FundsWatch],
    health: Health,
    metrics: Metrics,
    stop: asyncio.Event,
    *,
    worker_version: str,
    scheduler_url: str = "",
) -> Joined[C]:
    where = f"the scheduler at {scheduler_url}" if scheduler_url else "the scheduler"
    health.joined = False
    health.enter(StartStage.SCHEDULER, f"asking {where} for its configuration")
    public = await retry_until_stopped(
        "read the scheduler configuration",
        scheduler.get_public_configuration,
        stop,
        health=health,
        where=where,
    )
    if public.required_worker_version and public.required_worker_version != worker_version:
        raise ConfigurationError(
            f"the scheduler requires worker version {public.required_worker_version}; this worker behaves as "
            f"iexec-worker {worker_version} (IEXEC_WORKER_PROTOCOL_VERSION): run a worker of the required "
            "version, or set IEXEC_WORKER_PROTOCOL_VERSION if this one implements it (docs/compatibility.md)"
        )
    chain_config = await retry_until_stopped(
        "read the chain configuration",
        lambda: scheduler.get_chain_config(public.config_server_url),
        stop,
        health=health,
        where=where,
    )
    health.enter(StartStage.CHAIN, f"connecting to the chain {chain_config.chain_id} node")
    chain = await connect_chain(chain_config)
    node_chain_id = await chain.chain_id()
    if node_chain_id != chain_config.chain_id:
        raise ConfigurationError(
            f"the node at {chain.rpc_url} is on chain {node_chain_id}, the scheduler on chain "
            f"{chain_config.chain_id}: fix IEXEC_WORKER_OVERRIDE_BLOCKCHAIN_NODE_ADDRESS"
        )
    funds(chain, chain_config).record_balance(await chain.balance(model.wallet_address))
    health.enter(StartStage.REGISTERING, f"logging in and registering at {where}")

    def retried(what: str, call: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        return retry_until_stopped(what, call, stop, health=health, where=where)

    async def sign_in() -> None:
        # A login refused (wallet not whitelisted yet) is asked again too: the pool manager may add it.
        await retried("log in", scheduler.login)
        await retried("register", lambda: scheduler.register(model))

    core_version, _ = await asyncio.gather(
        retried("read the scheduler version", scheduler.get_version), sign_in()
    )
    health.joined = True
    metrics.slots_total.set(model.cpu_nb)
    return Joined(public=public, chain_config=chain_config, chain=chain, core_version=core_version)


def memory_gb() -> int:
    """Total memory in whole GiB, at least 1 (the reference's ``memorySize``)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return max(int(line.split()[1]) // (1024 * 1024), 1)
    except OSError:
        pass
    return 1
