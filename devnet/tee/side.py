"""The TEE side of the devnet, all EMULATED: one SMS per framework, enclave images, a TDX agent, SGX stand-ins.

Started by ``Platform.up(tee=True)`` (``iexec-devnet up --tee``). Containers must reach the devnet's
services (post-compute uploads to the result proxy, enclaves ask the emulated CAS/SPS, pre-compute
downloads datasets), so the devnet creates a Docker bridge network of its own and serves the result proxy
and the three SMS on that bridge's gateway address, which the host also reaches; it removes the network
when it stops. Each TEE worker gets its own enclave network (``<network>-w<index>``), removed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import stat
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from devnet.images import SHELL, ensure_images
from devnet.tee.images import (
    LAS,
    LAS_REGISTRY,
    POST_COMPUTE_ENTRYPOINT,
    POST_COMPUTE_IMAGE,
    PRE_COMPUTE_ENTRYPOINT,
    PRE_COMPUTE_IMAGE,
    ensure_enclave_images,
)
from devnet.tee.sms import EmulatedSms, Pipeline, StageImage
from worker.chain import ChainClient
from worker.compute import ComputeError, DockerEngine
from worker.protocol.tee import TeeFramework

log = logging.getLogger(__name__)

VERSIONS = {
    TeeFramework.SCONE: "v5-emulated",
    TeeFramework.GRAMINE: "v1-emulated",
    TeeFramework.TDX: "v0-emulated",
}
ENCLAVE_HEAP = 1024**3
MAX_WORKERS = 16


@dataclass(frozen=True)
class TeeInfo:
    network: str
    gateway: str
    sms: dict[str, str]
    agent: str
    sgx_devices: list[str] = field(default_factory=list)
    las_registry: str = LAS_REGISTRY
    sgx_check_image: str = SHELL.tag

    def sms_url(self, framework: TeeFramework) -> str:
        return self.sms[framework.value]

    def enclave_network(self, index: int) -> str:
        return f"{self.network}-w{index}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stand_in_sgx_devices(folder: Path) -> list[str]:
    """Two character devices with /dev/null's numbers, named as the in-kernel SGX driver names its own:
    they pass every check a worker makes (and let Docker map them), and give no enclave at all."""
    folder.mkdir(parents=True, exist_ok=True)
    null = os.stat("/dev/null").st_rdev
    paths = []
    for name in ("sgx_enclave", "sgx_provision"):
        path = folder / name
        if not path.exists():
            os.mknod(path, 0o666 | stat.S_IFCHR, null)
        paths.append(str(path))
    return paths


def write_agent(folder: Path) -> Path:
    """The emulated ``secret_provider_agent`` executable (a launcher of ``devnet/tee/agent.py``)."""
    folder.mkdir(parents=True, exist_ok=True)
    launcher = folder / "secret_provider_agent"
    source = Path(__file__).with_name("agent.py")
    launcher.write_text(f'#!/bin/sh\nexec {sys.executable} -S {source} "$@"\n')
    launcher.chmod(0o755)
    return launcher


class TeeSide:
    def __init__(self, engine: DockerEngine, chain: ChainClient, network: str, gateway: str) -> None:
        self._engine = engine
        self._chain = chain
        self.network = network
        self.gateway = gateway
        self.sms: dict[TeeFramework, EmulatedSms] = {}
        self._runners: list[web.AppRunner] = []
        self.agent = Path()
        self.sgx_devices: list[str] = []

    @classmethod
    async def up(cls, base_dir: Path, *, rpc_url: str, hub: str) -> TeeSide:
        engine = await DockerEngine.open()
        network = f"iexec-devnet-{secrets.token_hex(4)}"
        try:
            await ensure_images(engine, [SHELL])
            await ensure_enclave_images(engine)
            gateway = await engine.network_gateway(network)
            chain = await ChainClient.connect(rpc_url, hub)
        except BaseException:
            with contextlib.suppress(ComputeError):
                await engine.remove_network(network)
            await engine.close()
            raise
        side = cls(engine, chain, network, gateway)
        try:
            for framework in TeeFramework:
                await side._serve(framework)
            folder = base_dir / "tee"
            side.agent = await asyncio.to_thread(write_agent, folder)
            try:
                side.sgx_devices = await asyncio.to_thread(stand_in_sgx_devices, folder / "dev")
            except PermissionError:
                log.warning(
                    "cannot create stand-in SGX devices (mknod needs root): no SGX worker on this devnet"
                )
        except BaseException:
            await side.stop()
            raise
        log.info("EMULATED TEE services on %s (network %s): %s", gateway, network, side.info().sms)
        return side

    async def _serve(self, framework: TeeFramework) -> None:
        sgx = framework.needs_sgx
        pipeline = Pipeline(
            VERSIONS[framework],
            StageImage(
                PRE_COMPUTE_IMAGE, PRE_COMPUTE_ENTRYPOINT if sgx else None, ENCLAVE_HEAP if sgx else 0
            ),
            StageImage(
                POST_COMPUTE_IMAGE, POST_COMPUTE_ENTRYPOINT if sgx else None, ENCLAVE_HEAP if sgx else 0
            ),
        )
        sms = EmulatedSms(
            framework, self._chain, [pipeline], las_image=LAS.tag if framework is TeeFramework.SCONE else None
        )
        runner = web.AppRunner(sms.app(), access_log=None)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, self.gateway, 0).start()
        sms.address = f"{self.gateway}:{runner.addresses[0][1]}"
        self.sms[framework] = sms

    def info(self) -> TeeInfo:
        return TeeInfo(
            network=self.network,
            gateway=self.gateway,
            sms={framework.value: f"http://{sms.address}" for framework, sms in self.sms.items()},
            agent=str(self.agent),
            sgx_devices=self.sgx_devices,
        )

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        await self._chain.close()
        for name in [*(f"{self.network}-w{i}" for i in range(MAX_WORKERS)), self.network]:
            try:
                # Left by a worker that did not stop cleanly (a SCONE LAS, say): they hold the network.
                for container in await self._engine.network_containers(name):
                    await self._engine.stop_and_remove(container)
                await self._engine.remove_network(name)
            except ComputeError as exc:
                log.warning("network %s not removed: %s", name, exc)
        await self._engine.close()
