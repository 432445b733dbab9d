"""The real ports of the operator's commands: this machine, Docker, the wallet, the scheduler, the chain.

Every resource is opened inside the caller's ``AsyncExitStack`` and closed with it.
"""

from __future__ import annotations

import os
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import SecretStr

from worker.chain import (
    ChainAccount,
    ChainBlock,
    ChainClient,
    DealStake,
    Escrow,
    GasPolicy,
    current_fees,
    max_price,
)
from worker.compute import DockerEngine
from worker.config import Settings, host_cpu_count
from worker.doctor import LoadedWallet, Ports
from worker.protocol.errors import ConfigurationError
from worker.protocol.models import PublicChainConfig
from worker.proxy import proxy_middleware
from worker.replicate.work import free_bytes
from worker.scheduler import SchedulerClient
from worker.wallet import load_wallet


def existing_parent(path: Path) -> Path:
    """``path`` or its nearest parent that exists (what a folder to be created will live on)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


class LocalHost:
    def cpu_count(self) -> int:
        return host_cpu_count()

    def disk_free(self, path: Path) -> int:
        free = free_bytes(path)  # the measure the worker's own free-space minimum uses
        if free is None:
            raise OSError(f"cannot read the free space of the file system holding {path}")
        return free

    def unwritable(self, path: Path) -> str | None:
        folder = existing_parent(path)
        if not folder.is_dir():
            return f"{folder} is not a folder"
        if os.access(folder, os.W_OK | os.X_OK):
            return None
        stat = folder.stat()
        return f"{folder} belongs to uid {stat.st_uid} and is not writable by uid {os.getuid()}"

    def mode(self, path: Path) -> int | None:
        try:
            return path.stat().st_mode & 0o777
        except OSError:
            return None

    def exists(self, path: Path) -> bool:
        return path.exists()

    def now(self) -> float:
        return time.time()


@dataclass
class ChainProbe:
    """The chain as the doctor and join read it: the node, the hub account and the pool's deals."""

    client: ChainClient
    escrow: Escrow
    gas_policy: GasPolicy

    @property
    def rpc_url(self) -> str:
        return self.client.rpc_url

    async def chain_id(self) -> int:
        return await self.client.chain_id()

    async def latest_block(self) -> ChainBlock:
        return await self.client.latest_block()

    async def balance(self, address: str) -> int:
        return await self.client.balance(address)

    async def account(self, address: str) -> ChainAccount:
        return await self.client.account(address)

    async def rlc_balance(self, address: str) -> int:
        return await self.escrow.rlc_balance(address)

    async def gas_price_now(self) -> int:
        return max_price(await current_fees(self.client, self.gas_policy))

    async def recent_deal_stakes(self, pool: str, *, blocks: int) -> list[DealStake]:
        return await self.escrow.recent_deal_stakes(pool, blocks=blocks)

    async def worker_stake_ratio(self, pool: str) -> int:
        return await self.escrow.worker_stake_ratio(pool)


def gas_policy(settings: Settings) -> GasPolicy:
    return GasPolicy(multiplier=settings.chain.gas_price_multiplier, cap=settings.chain.gas_price_cap)


async def open_chain(stack: AsyncExitStack, settings: Settings, urls: list[str], hub: str) -> ChainProbe:
    client = await ChainClient.connect(
        urls, hub, max_block_lag=settings.chain.max_block_lag, proxy_for=settings.proxy.routes().for_url
    )
    stack.push_async_callback(client.close)
    policy = gas_policy(settings)
    return ChainProbe(client, Escrow(client, policy), policy)


async def http_session(stack: AsyncExitStack, settings: Settings) -> aiohttp.ClientSession:
    """A session whose calls take the configured proxies, as the worker's own."""
    timeout = aiohttp.ClientTimeout(total=60, sock_connect=10)
    proxies = (proxy_middleware(settings.proxy.routes()),)
    return await stack.enter_async_context(aiohttp.ClientSession(timeout=timeout, middlewares=proxies))


async def chain_config(session: aiohttp.ClientSession, settings: Settings) -> PublicChainConfig:
    """The scheduler's chain configuration: where the hub is and which node it advises."""
    scheduler = SchedulerClient(session, settings.scheduler.core_url, Account.create())
    public = await scheduler.get_public_configuration()
    return await scheduler.get_chain_config(public.config_server_url)


async def open_pool_chain(stack: AsyncExitStack, settings: Settings) -> tuple[ChainProbe, PublicChainConfig]:
    """The chain of the pool's scheduler, through the nodes of the settings (or the scheduler's)."""
    session = await http_session(stack, settings)
    config = await chain_config(session, settings)
    probe = await open_chain(
        stack, settings, settings.chain.node_urls(config.chain_node_url), config.iexec_hub_contract_address
    )
    return probe, config


class KeystoreWallet:
    def __init__(self, path: Path, password: SecretStr) -> None:
        self._path = path
        self._password = password
        self.account: LocalAccount | None = None

    async def load(self) -> LoadedWallet:
        self.account = await load_wallet(self._path, self._password)
        return LoadedWallet(self.account.address.lower(), self.account)


async def doctor_ports(stack: AsyncExitStack, settings: Settings) -> Ports:
    session = await http_session(stack, settings)

    async def docker() -> DockerEngine:
        engine = await DockerEngine.open()
        stack.push_async_callback(engine.close)
        return engine

    def scheduler(wallet: LoadedWallet | None) -> SchedulerClient:
        signer = wallet.signer if wallet is not None else Account.create()
        if not isinstance(signer, LocalAccount):
            raise ConfigurationError("the wallet gave no signing key")
        return SchedulerClient(session, settings.scheduler.core_url, signer)

    async def chain(urls: list[str], hub: str) -> ChainProbe:
        return await open_chain(stack, settings, urls, hub)

    return Ports(
        host=LocalHost(),
        docker=docker,
        wallet=KeystoreWallet(settings.wallet_path, settings.wallet_password),
        scheduler=scheduler,
        chain=chain,
    )


class _Unset:
    """The ports of a machine whose settings do not load: only the host and Docker answer."""

    async def load(self) -> LoadedWallet:
        raise ConfigurationError("no settings")


async def machine_ports(stack: AsyncExitStack) -> Ports:
    async def docker() -> DockerEngine:
        engine = await DockerEngine.open()
        stack.push_async_callback(engine.close)
        return engine

    def scheduler(wallet: LoadedWallet | None) -> SchedulerClient:
        raise ConfigurationError("no settings")

    async def chain(urls: list[str], hub: str) -> ChainProbe:
        raise ConfigurationError("no settings")

    return Ports(host=LocalHost(), docker=docker, wallet=_Unset(), scheduler=scheduler, chain=chain)
