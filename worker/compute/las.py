"""The SCONE Local Attestation Service (LAS): one long-running container per LAS image, shared by tasks.

As the reference (iexec-worker ``LasService``, ``LasServicesManager``): started when a SCONE task first
needs it, on the enclaves' network with the SGX devices, named ``iexec-las-<wallet>-<10 hex>``, reused
by every later task of the same LAS image, and stopped with the worker. Enclaves reach it at
``<name>:<IEXEC_LAS_PORT>``; when the apps run on another bridge, the LAS joins that one too.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass

from worker.compute.docker import DockerEngine
from worker.compute.environment import WORKER_LABEL
from worker.compute.errors import ComputeError
from worker.compute.model import ContainerSpec, RegistryAuth

log = logging.getLogger(__name__)

LAS_PULL_TIMEOUT = 600.0
_BUILTIN = frozenset({"none", "host", "bridge", "default"})


class LasUnavailable(ComputeError):
    """The LAS container could not be started."""


@dataclass(frozen=True)
class LasSettings:
    wallet: str
    worker_name: str
    registry_name: str
    network: str
    app_network: str | None
    devices: tuple[str, ...]
    auth: RegistryAuth | None = None


class LasService:
    def __init__(self, engine: DockerEngine, settings: LasSettings) -> None:
        self._engine = engine
        self._settings = settings
        self._started: dict[str, str] = {}  # LAS image -> container name
        self._lock = asyncio.Lock()

    async def ensure(self, image: str) -> str:
        """The name of a running LAS container of ``image``, started if needed; raises LasUnavailable."""
        settings = self._settings
        if settings.registry_name not in image:
            raise LasUnavailable(
                f"LAS image {image} is not from the SCONE registry {settings.registry_name} "
                "(IEXEC_WORKER_SCONTAIN_REGISTRY_NAME): the SMS's configuration and this worker's disagree"
            )
        async with self._lock:
            name = self._started.get(image)
            if name is not None and await self._engine.is_running(name):
                return name
            name = f"iexec-las-{settings.wallet.lower()}-{secrets.token_hex(5)}"
            try:
                await self._engine.pull(image, auth=settings.auth, pull_timeout=LAS_PULL_TIMEOUT)
                await self._engine.start_detached(
                    ContainerSpec(
                        name=name,
                        image=image,
                        timeout=LAS_PULL_TIMEOUT,
                        devices=settings.devices,
                        network=settings.network,
                        labels={WORKER_LABEL: settings.worker_name},
                    )
                )
                app_network = settings.app_network
                if app_network and app_network not in _BUILTIN and app_network != settings.network:
                    await self._engine.connect(name, app_network)
            except ComputeError as exc:
                raise LasUnavailable(f"SCONE LAS {image} cannot run: {exc}") from exc
            self._started[image] = name
            log.info("SCONE LAS %s running as %s", image, name)
            return name

    async def stop(self) -> None:
        """Remove every LAS container this worker started (at shutdown)."""
        for name in self._started.values():
            try:
                await self._engine.stop_and_remove(name)
            except ComputeError as exc:
                log.warning("LAS container %s not removed: %s", name, exc)
        self._started.clear()
