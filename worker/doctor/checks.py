"""``iexec-worker doctor``: every pre-flight check a worker relies on, each PASS, WARN or FAIL with
the fix in one line.

The checks follow the operator guide and what the worker itself refuses or trips on: at least 2
CPUs, a Docker engine able to run a bounded container, free disk at the base dir, a wallet that is
readable, private and opens with its password, a scheduler that serves ``POOL_ADDRESS`` and accepts
this wallet and version, a node on the scheduler's chain, ETH for N contributions at the gas policy
in force, RLC stake for the pool's recent tasks (``workerStake`` of its latest deals, one per slot),
SGX devices when TEE is on, and a clock that agrees with the chain (deadlines are compared with the
local clock). A check that needs an earlier one that failed is SKIP, naming which.

The exit code is the worst result: 0 all PASS (or SKIP), 1 a WARN, 2 a FAIL.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from worker import PROTOCOL_VERSION, __version__
from worker.chain import GAS_LIMIT_CAP, rlc
from worker.chain.transactions import CONTRIBUTE_GAS_FLOOR, REVEAL_GAS_FLOOR
from worker.compute import ContainerSpec
from worker.doctor.ports import Chain, Docker, LoadedWallet, Ports
from worker.protocol.errors import WorkerError
from worker.protocol.models import PublicChainConfig, PublicConfiguration

GIB = 1024**3
MIN_CPUS = 2
MIN_DISK_BYTES = GIB
CLOCK_BEHIND_WARN = 30.0  # seconds the chain may be ahead of the local clock before it matters
CLOCK_BEHIND_FAIL = 120.0
CHECK_IMAGES = ("busybox:stable", "busybox:latest", "busybox", "alpine:latest", "alpine")
CHECK_TOKEN = "iexec-doctor-ok"


class Result(StrEnum):
    PASS = "PASS"
    SKIP = "SKIP"
    WARN = "WARN"
    FAIL = "FAIL"

    @property
    def exit_code(self) -> int:
        return {Result.PASS: 0, Result.SKIP: 0, Result.WARN: 1, Result.FAIL: 2}[self]


@dataclass(frozen=True)
class Check:
    name: str
    result: Result
    summary: str
    fix: str = ""


@dataclass(frozen=True)
class DoctorSettings:
    """What the checks compare against, taken from the worker's settings by the caller."""

    pool: str
    core_url: str
    base_dir: Path
    wallet_path: Path
    password_file: Path | None
    slots: int
    slots_overridden: bool
    gas_price_cap: int
    node_urls: list[str] = field(default_factory=list)
    """Nodes set by the operator; empty: the scheduler's chainNodeUrl."""
    data_max_bytes: int = 10 * GIB
    result_max_bytes: int = 256 * 1024**2
    sgx_driver_mode: str | None = None
    """None: this worker has no TEE setting; "NONE": TEE off."""
    sgx_devices: tuple[str, ...] = ()
    """IEXEC_WORKER_SGX_DEVICES: the device paths replacing the driver mode's."""
    contributions: int = 10
    lookback_blocks: int = 50_000
    check_image: str | None = None
    worker_name: str = "worker"
    protocol_version: str = PROTOCOL_VERSION
    """What iexec-core's requiredWorkerVersion is compared with (IEXEC_WORKER_PROTOCOL_VERSION)."""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def worst(self) -> Result:
        order = [Result.SKIP, Result.PASS, Result.WARN, Result.FAIL]
        return max((c.result for c in self.checks), key=order.index, default=Result.PASS)

    @property
    def exit_code(self) -> int:
        return self.worst.exit_code

    def to_json(self) -> dict[str, Any]:
        return {
            "checks": [asdict(c) | {"result": c.result.value} for c in self.checks],
            "worst": self.worst.value,
            "exitCode": self.exit_code,
        }

    def lines(self) -> list[str]:
        width = max((len(c.name) for c in self.checks), default=0)
        out = []
        for c in self.checks:
            out.append(f"{c.result.value:<4}  {c.name:<{width}}  {c.summary}")
            if c.fix:
                out.append(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
        return out


def eth(wei: int) -> str:
    """Wei as ETH with up to 6 decimals."""
    text = f"{wei / 10**18:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def gwei(wei: int) -> str:
    return f"{wei / 10**9:.2f}".rstrip("0").rstrip(".")


def eth_floor(gas_price_cap: int) -> int:
    """Below this the worker is OUT_OF_GAS: it cannot pay one transaction at the gas limit and price cap."""
    return GAS_LIMIT_CAP * gas_price_cap


def eth_needed(contributions: int, price: int, gas_price_cap: int) -> int:
    """ETH (wei) for ``contributions`` contribute + reveal pairs at ``price``, never below the floor."""
    return max(contributions * (CONTRIBUTE_GAS_FLOOR + REVEAL_GAS_FLOOR) * price, eth_floor(gas_price_cap))


class Doctor:
    def __init__(self, settings: DoctorSettings, ports: Ports) -> None:
        self.s = settings
        self.ports = ports
        self.report = Report()
        self.wallet: LoadedWallet | None = None
        self.public: PublicConfiguration | None = None
        self.chain_config: PublicChainConfig | None = None
        self.chain: Chain | None = None

    def add(self, name: str, result: Result, summary: str, fix: str = "") -> Check:
        check = Check(name, result, summary, fix)
        self.report.checks.append(check)
        return check

    async def run(self) -> Report:
        self.cpus()
        await self.docker()
        self.disk()
        await self.wallet_file()
        await self.scheduler()
        await self.node()
        await self.eth()
        await self.stake()
        self.sgx()
        await self.clock()
        return self.report

    # -- the machine --------------------------------------------------------------------------

    def cpus(self) -> None:
        cpus, slots = self.ports.host.cpu_count(), self.s.slots
        if cpus < MIN_CPUS and not self.s.slots_overridden:
            self.add(
                "cpu", Result.FAIL, f"{cpus} CPU for the worker; a worker needs at least {MIN_CPUS}",
                "run it on a machine with 2 CPUs or more, or set IEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT to accept it",
            )  # fmt: skip
        elif cpus < MIN_CPUS:
            self.add(
                "cpu", Result.WARN, f"{cpus} CPU, {slots} slot(s) forced by IEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT",
                "use a machine with 2 CPUs or more: the worker itself needs one",
            )  # fmt: skip
        elif slots > cpus:
            self.add(
                "cpu", Result.WARN, f"{slots} slots on {cpus} CPUs: tasks will compete for the CPUs",
                f"set IEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT to {max(cpus - 1, 1)} or less",
            )  # fmt: skip
        else:
            self.add("cpu", Result.PASS, f"{cpus} CPUs, {slots} slot(s)")

    async def docker(self) -> None:
        try:
            docker = await self.ports.docker()
            version = await docker.ping()
        except WorkerError as exc:
            self.add(
                "docker", Result.FAIL, f"no Docker engine: {exc}",
                "start dockerd, or give this user access to its socket (group docker), or set DOCKER_HOST",
            )  # fmt: skip
            return
        image = await self._check_image(docker)
        if image is None:
            wanted = self.s.check_image or CHECK_IMAGES[0]
            self.add(
                "docker", Result.WARN, f"Docker {version} answers, but {wanted} is not on this machine to test a run",
                f"`docker pull {wanted}` then run doctor again, or pass --image with an image this machine has",
            )  # fmt: skip
            return
        spec = ContainerSpec(
            name=f"{self.s.worker_name}-doctor-{uuid.uuid4().hex[:8]}", image=image, timeout=60,
            entrypoint=("sh", "-c", f"echo {CHECK_TOKEN}"), memory_bytes=64 * 1024**2,
            nano_cpus=500_000_000, pids_limit=32, network="none", read_only_rootfs=True,
        )  # fmt: skip
        started = time.monotonic()
        try:
            outcome = await docker.run(spec)
        except WorkerError as exc:
            self.add(
                "docker", Result.FAIL, f"Docker {version} cannot run a bounded container of {image}: {exc}",
                "check that dockerd allows memory, CPU and pids limits (cgroups) and `docker run --rm "
                f"--memory 64m --pids-limit 32 {image} true` works",
            )  # fmt: skip
            return
        seconds = time.monotonic() - started
        if outcome.exit_code != 0 or CHECK_TOKEN not in outcome.stdout:
            self.add(
                "docker", Result.FAIL,
                f"a bounded container of {image} exited {outcome.exit_code}: {outcome.stderr.strip()[-200:]}",
                f"check `docker run --rm --memory 64m --pids-limit 32 --network none {image} true` by hand",
            )  # fmt: skip
            return
        self.add(
            "docker", Result.PASS,
            f"Docker {version} ran a bounded container of {image} (64 MiB, 0.5 CPU, 32 processes, "
            f"no network) in {seconds:.1f} s",
        )  # fmt: skip

    async def _check_image(self, docker: Docker) -> str | None:
        for image in [self.s.check_image] if self.s.check_image else CHECK_IMAGES:
            with contextlib.suppress(WorkerError):
                if await docker.image_exists(image):
                    return image
        return None

    def disk(self) -> None:
        base, host = self.s.base_dir, self.ports.host
        why = host.unwritable(base)
        if why is not None:
            self.add(
                "disk", Result.FAIL, f"IEXEC_WORKER_BASE_DIR={base}: {why}",
                f"create it writable by this user (`mkdir -p {base} && chown $(id -u) {base}`) or choose another folder",
            )  # fmt: skip
            return
        free = host.disk_free(base)
        wanted = self.s.slots * (self.s.data_max_bytes + self.s.result_max_bytes) + MIN_DISK_BYTES
        where = f"{free / GIB:.1f} GiB free at {base}"
        if free < MIN_DISK_BYTES:
            self.add("disk", Result.FAIL, where, f"free at least {MIN_DISK_BYTES // GIB} GiB there")
        elif free < wanted:
            self.add(
                "disk", Result.WARN, f"{where}; {wanted / GIB:.1f} GiB wanted for {self.s.slots} slot(s) at the download limits",
                "free disk space, or lower IEXEC_WORKER_DATA_MAX_BYTES or the slots",
            )  # fmt: skip
        else:
            self.add(
                "disk", Result.PASS, f"{where} ({wanted / GIB:.1f} GiB wanted for {self.s.slots} slot(s))"
            )

    async def wallet_file(self) -> None:
        host, path = self.ports.host, self.s.wallet_path
        try:
            self.wallet = await self.ports.wallet.load()
        except WorkerError as exc:
            self.add("wallet", Result.FAIL, str(exc).split("; ")[0], _fix_of(str(exc)))
            return
        loose = [
            str(p) for p in (path, self.s.password_file) if p is not None and (host.mode(p) or 0) & 0o077
        ]
        if loose:
            # The worker refuses such files at start (docs/security.md): a failure, not a warning.
            self.add(
                "wallet", Result.FAIL, f"wallet {self.wallet.address} opens, but {', '.join(loose)} can be read by others",
                f"chmod 600 {' '.join(loose)}",
            )  # fmt: skip
            return
        self.add(
            "wallet", Result.PASS, f"wallet {self.wallet.address} opens with its password; {path} is private"
        )

    # -- the pool -----------------------------------------------------------------------------

    async def scheduler(self) -> None:
        url = self.s.core_url
        scheduler = self.ports.scheduler(self.wallet)
        try:
            public = await scheduler.get_public_configuration()
        except WorkerError as exc:
            self.add(
                "scheduler", Result.FAIL, f"no answer from the scheduler at {url}: {exc}",
                "check IEXEC_CORE_URL and that the pool's scheduler is up",
            )  # fmt: skip
            self.add("version", Result.SKIP, "needs the scheduler's configuration (see scheduler)")
            return
        self.public = public
        if public.worker_pool_address.lower() != self.s.pool.lower():
            self.add(
                "scheduler", Result.FAIL,
                f"the scheduler at {url} serves workerpool {public.worker_pool_address.lower()}, not {self.s.pool}",
                "set POOL_ADDRESS to the pool this scheduler serves, or IEXEC_CORE_URL to the scheduler of your pool",
            )  # fmt: skip
        else:
            try:
                self.chain_config = await scheduler.get_chain_config(public.config_server_url)
                if self.wallet is not None:
                    await scheduler.login()
            except WorkerError as exc:
                self.add(
                    "scheduler", Result.FAIL, f"the scheduler at {url} answers but: {exc}",
                    "ask the pool operator whether this wallet is accepted and the config server is up",
                )  # fmt: skip
            else:
                login = (
                    "accepts wallet " + self.wallet.address if self.wallet else "login not tried (no wallet)"
                )
                self.add(
                    "scheduler", Result.PASS if self.wallet else Result.WARN,
                    f"{url} serves pool {self.s.pool} on chain {self.chain_config.chain_id} and {login}",
                    "" if self.wallet else "fix the wallet (see wallet), then run doctor again",
                )  # fmt: skip
        required, behaves_as = public.required_worker_version, self.s.protocol_version
        if required and required != behaves_as:
            self.add(
                "version", Result.FAIL,
                f"the scheduler requires worker version {required}, this worker behaves as iexec-worker {behaves_as}",
                f"run a worker of version {required}, or set IEXEC_WORKER_PROTOCOL_VERSION if this one implements it",
            )  # fmt: skip
        else:
            self.add(
                "version", Result.PASS,
                f"worker {__version__} (as iexec-worker {behaves_as}) accepted" + ("" if required else " (any version)"),
            )  # fmt: skip

    async def node(self) -> None:
        config = self.chain_config
        if config is None:
            self.add("node", Result.SKIP, "needs the scheduler's chain configuration (see scheduler)")
            return
        urls = self.s.node_urls or [config.chain_node_url]
        try:
            self.chain = await self.ports.chain(urls, config.iexec_hub_contract_address)
            chain_id = await self.chain.chain_id()
            block = await self.chain.latest_block()
        except WorkerError as exc:
            self.chain = None
            self.add(
                "node", Result.FAIL, f"no usable chain node: {exc}",
                "set IEXEC_WORKER_OVERRIDE_BLOCKCHAIN_NODE_ADDRESS to a node of chain "
                f"{config.chain_id} that this machine reaches",
            )  # fmt: skip
            return
        if chain_id != config.chain_id:
            self.add(
                "node", Result.FAIL, f"the node {self.chain.rpc_url} is on chain {chain_id}, the scheduler on chain {config.chain_id}",
                f"set IEXEC_WORKER_OVERRIDE_BLOCKCHAIN_NODE_ADDRESS to a node of chain {config.chain_id}",
            )  # fmt: skip
            self.chain = None
            return
        self.add("node", Result.PASS, f"{self.chain.rpc_url} on chain {chain_id}, block {block.number}")

    async def _chain_check(self, name: str, check: Callable[[Chain, str], Awaitable[None]]) -> None:
        if self.chain is None or self.wallet is None:
            self.add(
                name, Result.SKIP, f"needs {'the chain node' if self.wallet else 'the wallet'} (see above)"
            )
            return
        try:
            await check(self.chain, self.wallet.address)
        except WorkerError as exc:
            self.add(
                name,
                Result.FAIL,
                f"the node did not answer: {exc}",
                "check the node (see node) and try again",
            )

    async def eth(self) -> None:
        async def check(chain: Chain, address: str) -> None:
            if self.chain_config is not None and self.chain_config.sidechain:
                self.add("eth", Result.PASS, "gas is free on this chain (sidechain)")
                return
            balance, price = await chain.balance(address), await chain.gas_price_now()
            cap, n = self.s.gas_price_cap, self.s.contributions
            floor, wanted = eth_floor(cap), eth_needed(n, price, cap)
            pairs = balance // ((CONTRIBUTE_GAS_FLOOR + REVEAL_GAS_FLOOR) * max(price, 1))
            if balance < floor:
                self.add(
                    "eth", Result.FAIL, f"{eth(balance)} ETH in {address}: below one transaction at the "
                    f"{gwei(cap)} gwei cap ({eth(floor)} ETH), the worker would take no work (OUT_OF_GAS)",
                    f"send at least {eth(wanted - balance)} ETH to {address}",
                )  # fmt: skip
            elif balance < wanted:
                self.add(
                    "eth", Result.WARN, f"{eth(balance)} ETH in {address}: {pairs} contribution(s) at {gwei(price)} gwei",
                    f"send {eth(wanted - balance)} ETH more to {address} for {n} contributions",
                )  # fmt: skip
            else:
                self.add(
                    "eth", Result.PASS, f"{eth(balance)} ETH: {pairs} contribution(s) with reveal at {gwei(price)} "
                    f"gwei (x{n} wanted, cap {gwei(cap)} gwei)",
                )  # fmt: skip

        await self._chain_check("eth", check)

    async def stake(self) -> None:
        async def check(chain: Chain, address: str) -> None:
            account = await chain.account(address)
            free, slots = account.stake, self.s.slots
            deals = await chain.recent_deal_stakes(self.s.pool, blocks=self.s.lookback_blocks)
            deposit = f"iexec-worker account deposit AMOUNT (RLC in {address} first)"
            if not deals:
                ratio = await chain.worker_stake_ratio(self.s.pool)
                if free == 0:
                    self.add(
                        "stake", Result.FAIL, f"no RLC deposited; each task of this pool locks {ratio} % of its price",
                        f"deposit RLC: {deposit}",
                    )  # fmt: skip
                else:
                    self.add(
                        "stake", Result.WARN, f"{rlc(free)} RLC free; no deal of the pool in the last "
                        f"{self.s.lookback_blocks} blocks to compare with (stake {ratio} % of the task price)",
                        f"keep at least {slots} x {ratio} % of the pool's task price deposited",
                    )  # fmt: skip
                return
            per_task = max(d.worker_stake for d in deals)
            wanted = slots * per_task
            seen = f"the pool's last {len(deals)} deal(s) lock up to {rlc(per_task)} RLC per task"
            if free < per_task:
                self.add(
                    "stake", Result.FAIL, f"{rlc(free)} RLC free ({rlc(account.locked)} locked); {seen}",
                    f"deposit {rlc(wanted - free)} RLC: {deposit.replace('AMOUNT', rlc(wanted - free))}",
                )  # fmt: skip
            elif free < wanted:
                self.add(
                    "stake", Result.WARN, f"{rlc(free)} RLC free: {free // per_task} of {slots} slots' tasks at once; {seen}",
                    f"deposit {rlc(wanted - free)} RLC more: {deposit.replace('AMOUNT', rlc(wanted - free))}",
                )  # fmt: skip
            else:
                self.add(
                    "stake", Result.PASS, f"{rlc(free)} RLC free ({rlc(account.locked)} locked) for {slots} slot(s); {seen}"
                )  # fmt: skip

        await self._chain_check("stake", check)

    def sgx(self) -> None:
        mode = self.s.sgx_driver_mode
        if mode is None:
            self.add("sgx", Result.SKIP, "this worker has no TEE setting: SGX is not checked")
            return
        if mode.upper() == "NONE":
            self.add(
                "sgx", Result.SKIP, "TEE is off (IEXEC_WORKER_SGX_DRIVER_MODE=NONE): no SGX device needed"
            )
            return
        host = self.ports.host
        if self.s.sgx_devices:
            wanted = [[Path(device)] for device in self.s.sgx_devices]
        elif mode.upper() == "LEGACY":
            wanted = [[Path("/dev/isgx")], [Path("/sys/module/isgx/version")]]
        else:  # NATIVE: in-kernel driver (5.11+), /dev/sgx_* or the udev links /dev/sgx/*
            wanted = [
                [Path("/dev/sgx_enclave"), Path("/dev/sgx/enclave")],
                [Path("/dev/sgx_provision"), Path("/dev/sgx/provision")],
            ]
        missing = [" or ".join(map(str, options)) for options in wanted if not any(map(host.exists, options))]
        if missing:
            self.add(
                "sgx", Result.FAIL, f"IEXEC_WORKER_SGX_DRIVER_MODE={mode}: missing {', '.join(missing)}",
                "enable SGX in the BIOS and install the SGX driver, or set IEXEC_WORKER_SGX_DRIVER_MODE=NONE",
            )  # fmt: skip
        else:
            self.add("sgx", Result.PASS, f"SGX devices of the {mode} driver are present")

    async def clock(self) -> None:
        if self.chain is None:
            self.add("clock", Result.SKIP, "needs the chain node (see node)")
            return
        try:
            block = await self.chain.latest_block()
        except WorkerError as exc:
            self.add("clock", Result.FAIL, f"the node did not answer: {exc}", "check the node (see node)")
            return
        drift = self.ports.host.now() - block.timestamp
        block_time = self.chain_config.block_time.total_seconds() if self.chain_config else 5.0
        stale = max(60.0, 12 * block_time)
        ntp = "turn NTP on (`timedatectl set-ntp true`) or fix the clock"
        if drift < -CLOCK_BEHIND_FAIL:
            self.add("clock", Result.FAIL, f"this clock is {-drift:.0f} s behind block {block.number}", ntp)
        elif drift < -CLOCK_BEHIND_WARN:
            self.add("clock", Result.WARN, f"this clock is {-drift:.0f} s behind block {block.number}", ntp)
        elif drift > stale:
            self.add(
                "clock", Result.WARN, f"the latest block ({block.number}) is {drift:.0f} s older than this clock: "
                "the clock runs ahead or the node is stalled",
                f"check the node's sync, then {ntp}",
            )  # fmt: skip
        else:
            self.add(
                "clock", Result.PASS, f"{abs(drift):.0f} s from the latest block's time ({block.number})"
            )


def _fix_of(message: str) -> str:
    """The fix part of a ConfigurationError ("<what>; <fix>"), or the whole message."""
    _, sep, fix = message.partition("; ")
    return fix if sep else message
