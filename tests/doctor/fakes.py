"""Fakes of the doctor's ports: a machine, a Docker engine, a wallet, a scheduler and a chain, all in
memory and each able to fail. Unit tests only: nothing here starts a service."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from worker.chain import ChainAccount, ChainBlock, DealStake
from worker.compute import ContainerResult, ContainerSpec
from worker.doctor import LoadedWallet, Ports
from worker.protocol.errors import ChainError, ConfigurationError, SchedulerError
from worker.protocol.models import PublicChainConfig, PublicConfiguration

POOL = "0x" + "70" * 20
WALLET = "0x" + "ab" * 20
NOW = 1_800_000_000.0
GWEI = 10**9
RLC = 10**9


@dataclass
class FakeHost:
    cpus: int = 4
    free: int = 500 * 1024**3
    blocked: str | None = None
    modes: dict[Path, int] = field(default_factory=dict)
    devices: set[Path] = field(default_factory=set)
    clock: float = NOW

    def cpu_count(self) -> int:
        return self.cpus

    def disk_free(self, path: Path) -> int:
        return self.free

    def unwritable(self, path: Path) -> str | None:
        return self.blocked

    def mode(self, path: Path) -> int | None:
        return self.modes.get(path, 0o600)

    def exists(self, path: Path) -> bool:
        return path in self.devices

    def now(self) -> float:
        return self.clock


@dataclass
class FakeDocker:
    images: set[str] = field(default_factory=lambda: {"busybox:stable"})
    exit_code: int = 0
    runs: list[ContainerSpec] = field(default_factory=list)

    async def ping(self) -> str:
        return "26.1"

    async def image_exists(self, image: str) -> bool:
        return image in self.images

    async def run(self, spec: ContainerSpec) -> ContainerResult:
        self.runs.append(spec)
        out = "iexec-doctor-ok\n" if self.exit_code == 0 else ""
        return ContainerResult(spec.name, self.exit_code, False, out, "oops" if self.exit_code else "", 0.2)


@dataclass
class FakeWallet:
    error: str | None = None

    async def load(self) -> LoadedWallet:
        if self.error:
            raise ConfigurationError(self.error)
        return LoadedWallet(WALLET, object())


@dataclass
class FakeScheduler:
    pool: str = POOL
    down: bool = False
    refuse_login: bool = False
    required_version: str = ""
    sidechain: bool = False

    async def get_public_configuration(self) -> PublicConfiguration:
        if self.down:
            raise SchedulerError("connection refused")
        return PublicConfiguration(
            worker_pool_address=self.pool, scheduler_public_address="0x" + "cd" * 20,
            config_server_url="http://127.0.0.1:1", result_repository_url="http://127.0.0.1:2",
            ask_for_replicate_period=5000, required_worker_version=self.required_version,
        )  # fmt: skip

    async def get_chain_config(self, config_server_url: str) -> PublicChainConfig:
        return PublicChainConfig(
            chain_id=65535, chain_node_url="http://127.0.0.1:8545", iexec_hub_contract_address="0x" + "12" * 20,
            sidechain=self.sidechain, block_time=timedelta(seconds=5),
        )  # fmt: skip

    async def login(self) -> None:
        if self.refuse_login:
            raise SchedulerError("POST /workers/login: 401 wallet not allowed")


@dataclass
class FakeChain:
    chain: int = 65535
    eth_wei: int = 10**18
    stake: int = 10 * RLC
    locked: int = 0
    price: int = 2 * GWEI
    deals: list[DealStake] = field(
        default_factory=lambda: [DealStake("0x" + "d1" * 32, 90, 2 * RLC, 600_000_000)]
    )
    ratio: int = 30
    block_at: float = NOW - 4
    unreachable: bool = False

    @property
    def rpc_url(self) -> str:
        return "http://127.0.0.1:8545"

    async def chain_id(self) -> int:
        if self.unreachable:
            raise ChainError("eth_chainId: connection refused")
        return self.chain

    async def latest_block(self) -> ChainBlock:
        return ChainBlock(number=100, timestamp=int(self.block_at), base_fee_per_gas=GWEI)

    async def balance(self, address: str) -> int:
        return self.eth_wei

    async def account(self, address: str) -> ChainAccount:
        return ChainAccount(self.stake, self.locked)

    async def rlc_balance(self, address: str) -> int:
        return 0

    async def gas_price_now(self) -> int:
        return self.price

    async def recent_deal_stakes(self, pool: str, *, blocks: int) -> list[DealStake]:
        return self.deals

    async def worker_stake_ratio(self, pool: str) -> int:
        return self.ratio


@dataclass
class Machine:
    """Every fake, healthy by default; ``ports()`` wires them as the doctor sees them."""

    host: FakeHost = field(default_factory=FakeHost)
    docker: FakeDocker = field(default_factory=FakeDocker)
    wallet: FakeWallet = field(default_factory=FakeWallet)
    scheduler: FakeScheduler = field(default_factory=FakeScheduler)
    chain: FakeChain = field(default_factory=FakeChain)
    docker_down: bool = False
    nodes_asked: list[list[str]] = field(default_factory=list)

    def ports(self) -> Ports:
        async def docker() -> FakeDocker:
            if self.docker_down:
                raise ConfigurationError("Docker engine unreachable (version): connection refused")
            return self.docker

        async def chain(urls: list[str], hub: str) -> FakeChain:
            self.nodes_asked.append(urls)
            return self.chain

        return Ports(
            host=self.host,
            docker=docker,
            wallet=self.wallet,
            scheduler=lambda wallet: self.scheduler,
            chain=chain,
        )
