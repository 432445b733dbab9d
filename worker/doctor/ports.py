"""What the pre-flight checks read from the machine, Docker, the wallet, the scheduler and the chain.

The real implementations are wired by ``worker.ops.wiring`` over the adapters (``worker.compute``,
``worker.wallet``, ``worker.scheduler``, ``worker.chain``) and the operating system; unit tests
implement these Protocols with fakes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from worker.chain import ChainAccount, ChainBlock, DealStake
from worker.compute import ContainerResult, ContainerSpec
from worker.protocol.models import PublicChainConfig, PublicConfiguration


class Host(Protocol):
    def cpu_count(self) -> int: ...

    def disk_free(self, path: Path) -> int:
        """Bytes free to this user on the file system that holds ``path`` (or its nearest parent)."""
        ...

    def unwritable(self, path: Path) -> str | None:
        """Why this user cannot create files in ``path`` (or its nearest existing parent), or None."""
        ...

    def mode(self, path: Path) -> int | None:
        """Permission bits of a file, None when it does not exist."""
        ...

    def exists(self, path: Path) -> bool: ...

    def now(self) -> float: ...


class Docker(Protocol):
    async def ping(self) -> str: ...

    async def image_exists(self, image: str) -> bool: ...

    async def run(self, spec: ContainerSpec) -> ContainerResult: ...


@dataclass(frozen=True)
class LoadedWallet:
    address: str
    signer: object
    """What the scheduler client signs its login with (opaque here)."""


class Wallet(Protocol):
    async def load(self) -> LoadedWallet:
        """Decrypt the keystore; ConfigurationError naming the fix when it cannot."""
        ...


class Scheduler(Protocol):
    async def get_public_configuration(self) -> PublicConfiguration: ...

    async def get_chain_config(self, config_server_url: str) -> PublicChainConfig: ...

    async def login(self) -> None: ...


class Chain(Protocol):
    @property
    def rpc_url(self) -> str: ...

    async def chain_id(self) -> int: ...

    async def latest_block(self) -> ChainBlock: ...

    async def balance(self, address: str) -> int: ...

    async def account(self, address: str) -> ChainAccount: ...

    async def gas_price_now(self) -> int:
        """Wei per gas a transaction sent now would offer under the worker's gas policy."""
        ...

    async def recent_deal_stakes(self, pool: str, *, blocks: int) -> list[DealStake]: ...

    async def worker_stake_ratio(self, pool: str) -> int: ...


@dataclass(frozen=True)
class Ports:
    host: Host
    docker: Callable[[], Awaitable[Docker]]
    wallet: Wallet
    scheduler: Callable[[LoadedWallet | None], Scheduler]
    chain: Callable[[list[str], str], Awaitable[Chain]]
    """Connect to the nodes (URLs in order of preference) of the hub at the given address."""
