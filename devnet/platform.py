"""The whole local platform on loopback: chain, workerpool, result proxy and development scheduler.

``Platform.up`` is what ``iexec-devnet up`` and the end-to-end tests start; ``Platform.buy``
is the requester's side of ``iexec-devnet buy``. A running platform writes a description of
itself (URLs, addresses, wallets) to ``<base>/platform.json`` so other commands can reach it.
With ``tee=True`` it adds the EMULATED TEE side (``devnet.tee.side``): then the result proxy and the
SMS listen on the gateway of a Docker network of the devnet instead of loopback, so that enclave
containers reach them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import aiohttp
from pydantic import SecretStr

from devnet.accounts import Role, account
from devnet.contracts import DEVNET_CATEGORY, Deployment, Devnet, new_web3
from devnet.core import DevScheduler
from devnet.resultproxy import ResultProxy, ToolkitResultProxyChain
from devnet.tee.side import VERSIONS, TeeInfo, TeeSide
from devnet.toolkit import Deal, Toolkit
from worker.protocol.crypto import ZERO_ADDRESS, ZERO_BYTES32, keccak_hex, sign_eip191
from worker.protocol.tee import FRAMEWORK_TAGS, SMS_DOMAIN, TeeFramework
from worker.wallet import import_wallet

log = logging.getLogger("iexec.devnet")

RLC = 10**9  # nRLC per RLC
DEVNET_PASSWORD = "devnet-only-password"  # the devnet's throwaway keystores; never a real wallet
WORKER_ROLES = (Role.WORKER, Role.WORKER2, 12, 13, 14)


@dataclass(frozen=True)
class WorkerWallet:
    address: str
    keystore: str
    password_file: str


@dataclass(frozen=True)
class PlatformInfo:
    rpc_url: str
    chain_id: int
    hub: str
    workerpool: str
    scheduler_url: str
    result_proxy_url: str
    category: int
    workers: list[WorkerWallet] = field(default_factory=list)
    deployment: dict[str, Any] = field(default_factory=dict)
    tee: TeeInfo | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> PlatformInfo:
        data = json.loads(text)
        data["workers"] = [WorkerWallet(**w) for w in data.get("workers", [])]
        if data.get("tee"):
            data["tee"] = TeeInfo(**data["tee"])
        return cls(**data)

    @classmethod
    def read(cls, base_dir: Path) -> PlatformInfo:
        path = base_dir / "platform.json"
        try:
            return cls.from_json(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{path}: no running devnet here; start one with `iexec-devnet up`"
            ) from None


class Platform:
    def __init__(
        self,
        base_dir: Path,
        devnet: Devnet,
        toolkit: Toolkit,
        workerpool: str,
        proxy: ResultProxy,
        scheduler: DevScheduler,
        workers: list[WorkerWallet],
        tee: TeeSide | None = None,
    ) -> None:
        self.base_dir = base_dir
        self.devnet = devnet
        self.toolkit = toolkit
        self.workerpool = workerpool
        self.proxy = proxy
        self.scheduler = scheduler
        self.workers = workers
        self.tee = tee
        self.category = devnet.deployment.categories[DEVNET_CATEGORY]

    @classmethod
    async def up(
        cls,
        base_dir: Path,
        *,
        cache_dir: Path | None = None,
        workers: int = 2,
        worker_stake_rlc: int = 100,
        block_time: float | None = None,
        ask_for_replicate_period_ms: int = 1000,
        worker_lost_after_s: float = 60.0,
        required_worker_version: str = "",
        tee: bool = False,
    ) -> Platform:
        """``required_worker_version``: iexec-core's ``IEXEC_CORE_REQUIRED_WORKER_VERSION`` ("" accepts any)."""
        await asyncio.to_thread(base_dir.mkdir, parents=True, exist_ok=True)
        devnet = await Devnet.up(cache_dir=cache_dir or base_dir / "cache", block_time=block_time)
        tee_side: TeeSide | None = None
        try:
            if tee:
                tee_side = await TeeSide.up(base_dir, rpc_url=devnet.rpc_url, hub=devnet.deployment.hub)
            toolkit = Toolkit(devnet.w3, devnet.deployment)
            scheduler_account = account(Role.SCHEDULER)
            workerpool = await toolkit.create_workerpool(scheduler_account, "devnet-workerpool")
            await toolkit.fund(scheduler_account, 1000 * RLC)
            wallets = await _worker_wallets(toolkit, base_dir / "wallets", workers, worker_stake_rlc * RLC)
            proxy = ResultProxy(ToolkitResultProxyChain(toolkit), base_dir / "results")
            await proxy.start(tee_side.gateway if tee_side else "127.0.0.1")
            scheduler = await DevScheduler.start(
                toolkit=toolkit,
                deployment=devnet.deployment,
                rpc_url=devnet.rpc_url,
                workerpool=workerpool,
                scheduler_account=scheduler_account,
                result_proxy_url=proxy.url,
                ask_for_replicate_period_ms=ask_for_replicate_period_ms,
                worker_lost_after_s=worker_lost_after_s,
                block_time_s=max(int(block_time or 1), 1),
                required_worker_version=required_worker_version,
                sms_urls={framework: f"http://{sms.address}" for framework, sms in tee_side.sms.items()}
                if tee_side
                else None,
            )
        except BaseException:
            if tee_side is not None:
                await tee_side.stop()
            await devnet.stop()
            raise
        platform = cls(base_dir, devnet, toolkit, workerpool, proxy, scheduler, wallets, tee_side)
        await asyncio.to_thread((base_dir / "platform.json").write_text, platform.info().to_json())
        return platform

    def info(self) -> PlatformInfo:
        return PlatformInfo(
            rpc_url=self.devnet.rpc_url,
            chain_id=self.devnet.deployment.chain_id,
            hub=self.devnet.deployment.hub,
            workerpool=self.workerpool,
            scheduler_url=self.scheduler.url,
            result_proxy_url=self.proxy.url,
            category=self.category,
            workers=self.workers,
            deployment=json.loads(self.devnet.deployment.to_json()),
            tee=self.tee.info() if self.tee else None,
        )

    async def stop(self) -> None:
        await asyncio.to_thread((self.base_dir / "platform.json").unlink, missing_ok=True)
        try:
            await self.scheduler.stop()
            await self.proxy.stop()
            if self.tee is not None:
                await self.tee.stop()
        finally:
            await self.devnet.stop()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _worker_wallets(toolkit: Toolkit, folder: Path, count: int, stake: int) -> list[WorkerWallet]:
    if not 1 <= count <= len(WORKER_ROLES):
        raise ValueError(f"between 1 and {len(WORKER_ROLES)} devnet workers, not {count}")
    password_file = folder / "password.txt"

    def prepare() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        password_file.write_text(DEVNET_PASSWORD)
        password_file.chmod(0o600)

    await asyncio.to_thread(prepare)
    wallets = []
    for index in WORKER_ROLES[:count]:
        worker = account(index)
        keystore = folder / f"worker-{index}.json"
        if not keystore.exists():
            await asyncio.to_thread(import_wallet, keystore, SecretStr(DEVNET_PASSWORD), worker.key.hex())
        staked, _ = await toolkit.view_account(worker.address.lower())
        if staked < stake:
            await toolkit.fund(worker, stake - staked)
        wallets.append(WorkerWallet(worker.address.lower(), str(keystore), str(password_file)))
    return wallets


# -- the requester's side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Purchase:
    deal_id: str
    task_ids: list[str]
    app: str
    dataset: str | None


async def image_checksum(image: str) -> str:
    """The local image id as the app checksum (the devnet cannot reach a registry)."""
    proc = await asyncio.create_subprocess_exec(
        "docker", "image", "inspect", "--format", "{{.Id}}", image,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await proc.communicate()
    image_id = out.decode().strip()
    if proc.returncode != 0 or not image_id.startswith("sha256:"):
        return "0x" + "00" * 32
    return "0x" + image_id.removeprefix("sha256:")


async def dataset_checksum(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        response.raise_for_status()
        digest = hashlib.sha256()
        async for chunk in response.content.iter_chunked(1 << 16):
            digest.update(chunk)
    return "0x" + digest.hexdigest()


async def buy(
    info: PlatformInfo,
    *,
    image: str,
    args: str = "",
    input_files: list[str] | None = None,
    dataset_url: str | None = None,
    dataset_sha256: str | None = None,
    trust: int = 1,
    callback: str = ZERO_ADDRESS,
    volume: int = 1,
    app_price: int = 1 * RLC,
    dataset_price: int = 0,
    workerpool_price: int = 2 * RLC,
    category: int | None = None,
    extra_params: dict[str, Any] | None = None,
    tee: TeeFramework | None = None,
    dataset_key: str | None = None,
) -> Purchase:
    """Create (or reuse) the app and dataset, sign the four orders and match them; returns the deal.

    ``dataset_sha256`` is the dataset's checksum when its URI cannot be fetched from here (an IPFS
    multiaddr); otherwise it is computed from the URL. ``extra_params`` adds or replaces keys of the deal's params JSON (e.g. ``iexec_result_encryption``).
    ``tee`` tags every order with the framework (the app gets an enclave configuration for SGX), and
    ``dataset_key`` (the dataset's Base64 AES key) is pushed to that framework's SMS by the dataset owner.
    """
    w3 = new_web3(info.rpc_url)
    try:
        toolkit = Toolkit(w3, Deployment.from_json(json.dumps(info.deployment)))
        app_owner = account(Role.APP_PROVIDER)
        mrenclave = b""
        if tee is not None and tee.needs_sgx:
            mrenclave = json.dumps({
                "framework": tee.value, "version": VERSIONS[tee], "entrypoint": "/bin/sh /entrypoint.sh",
                "heapSize": 1024**3, "fingerprint": keccak_hex(image.encode().hex())[2:],
            }).encode()  # fmt: skip
        app = await toolkit.create_app(
            app_owner, _asset_name(image), image, await image_checksum(image), mrenclave=mrenclave
        )
        dataset = None
        dataset_owner = None
        if dataset_url:
            dataset_owner = account(Role.DATASET_PROVIDER)
            checksum = dataset_sha256 or await dataset_checksum(dataset_url)
            dataset = await toolkit.create_dataset(
                dataset_owner, _asset_name(dataset_url), dataset_url, checksum
            )
            if tee is not None and dataset_key is not None:
                await push_dataset_key(info, tee, dataset, dataset_key)
        requester = account(Role.REQUESTER)
        cost = (app_price + (dataset_price if dataset else 0) + workerpool_price) * volume
        balance, _ = await toolkit.view_account(requester.address.lower())
        if balance < cost:
            await toolkit.fund(requester, cost - balance)
        params: dict[str, Any] = {"iexec_args": args}
        if input_files:
            params["iexec_input_files"] = input_files
        params["iexec_result_storage_provider"] = "ipfs"
        params["iexec_result_storage_proxy"] = info.result_proxy_url
        params.update(extra_params or {})
        deal: Deal = await toolkit.buy(
            requester=requester,
            app=app,
            app_owner=app_owner,
            workerpool=info.workerpool,
            workerpool_owner=account(Role.SCHEDULER),
            dataset=dataset,
            dataset_owner=dataset_owner,
            category=info.category if category is None else category,
            trust=trust,
            params=params,
            callback=callback,
            volume=volume,
            app_price=app_price,
            dataset_price=dataset_price if dataset else 0,
            workerpool_price=workerpool_price,
            tag=FRAMEWORK_TAGS[tee] if tee is not None else ZERO_BYTES32,
        )
        return Purchase(deal.deal_id, list(deal.task_ids), app, dataset)
    finally:
        await w3.provider.disconnect()


async def push_dataset_key(info: PlatformInfo, framework: TeeFramework, dataset: str, key: str) -> None:
    """The dataset owner gives the dataset's key to the framework's SMS (web3 secret), as ``iexec dataset
    push-secret`` does: H(keccak(domain) ‖ dataset ‖ keccak(key)) signed by the dataset's owner."""
    if info.tee is None:
        raise ValueError("this devnet has no TEE side: start it with `iexec-devnet up --tee`")
    challenge = keccak_hex(keccak_hex(SMS_DOMAIN.encode().hex()), dataset, keccak_hex(key.encode().hex()))
    signature = sign_eip191(challenge, account(Role.DATASET_PROVIDER).key)
    url = f"{info.tee.sms_url(framework)}/secrets/web3"
    async with aiohttp.ClientSession() as session:
        async with session.head(url, params={"secretAddress": dataset}) as answer:
            if answer.status == 204:
                return
        async with session.post(
            url, params={"secretAddress": dataset}, data=key.encode(), headers={"Authorization": signature}
        ) as answer:
            if answer.status != 204:
                raise RuntimeError(f"SMS refused the key of dataset {dataset}: HTTP {answer.status}")


def _asset_name(text: str) -> str:
    # Registry entries are CREATE2 proxies salted by their arguments: the same image gives the same app.
    return text.rsplit("/", 1)[-1][:64] or "devnet-asset"


def worker_env(
    info: PlatformInfo, index: int, base_dir: Path, *, slots: int = 1, port: int = 0, tee: str | None = None
) -> dict[str, str]:
    """Settings of devnet worker ``index`` as environment variables (what its .env would hold).

    ``tee`` "sgx" or "tdx" makes it a TEE worker of the EMULATED TEE side: stand-in SGX devices, or the
    emulated secret provider agent, and an enclave network of its own.
    """
    wallet = info.workers[index]
    env = {
        "IEXEC_CORE_URL": info.scheduler_url,
        "POOL_ADDRESS": info.workerpool,
        "IEXEC_WORKER_NAME": f"devnet-worker-{index}",
        "IEXEC_WORKER_BASE_DIR": str(base_dir),
        "IEXEC_WORKER_WALLET_PATH": wallet.keystore,
        "IEXEC_WORKER_WALLET_PASSWORD_FILE": wallet.password_file,
        "IEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT": str(slots),
        "IEXEC_WORKER_HTTP_HOST": "127.0.0.1",
        "IEXEC_WORKER_PORT": str(port),
        # Devnet apps need no internet: keep them off every network.
        "IEXEC_WORKER_DOCKER_NETWORK_NAME": "none",
        # Datasets, input files and the result proxy of the devnet are served on loopback: allowed here only.
        "IEXEC_WORKER_NETWORK_ALLOWLIST": "127.0.0.1/32",
        # anvil mines a block only for a transaction: the receipt's own block is the only confirmation
        # that ever comes while the worker waits.
        "IEXEC_WORKER_TX_CONFIRMATIONS": "1",
    }
    if tee is not None:
        if info.tee is None:
            raise ValueError("this devnet has no TEE side: start it with tee=True (iexec-devnet up --tee)")
        env["IEXEC_WORKER_ENCLAVE_NETWORK_NAME"] = info.tee.enclave_network(index)
        if tee == "sgx":
            if not info.tee.sgx_devices:
                raise ValueError("this devnet has no stand-in SGX devices (creating them needs root)")
            env.update({
                "IEXEC_WORKER_SGX_DRIVER_MODE": "NATIVE", "IEXEC_WORKER_SGX_DEVICES": ",".join(info.tee.sgx_devices),
                "IEXEC_WORKER_SGX_CHECK_IMAGE": info.tee.sgx_check_image,
                "IEXEC_WORKER_SCONTAIN_REGISTRY_NAME": info.tee.las_registry, "IEXEC_WORKER_TDX_ENABLED": "false",
            })  # fmt: skip
        elif tee == "tdx":
            env.update({"IEXEC_WORKER_TDX_ENABLED": "true", "TEE_TDX_SECRET_PROVIDER_AGENT": info.tee.agent})
        else:
            raise ValueError(f"tee={tee!r}: sgx or tdx")
    return env


def write_env_file(path: Path, env: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    return path


async def start_worker_process(env_file: Path, log: Path) -> asyncio.subprocess.Process:
    """``python -m worker.cli run --env-file env_file``, as an operator starts a worker, its output to ``log``."""
    log_file = await asyncio.to_thread(log.open, "wb")
    with log_file:  # the child keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker.cli", "run", "--env-file", str(env_file),
            stdout=log_file, stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
