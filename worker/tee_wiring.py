"""Wiring of the TEE side, for the composition root: detection, the enclave endpoint, ``TeeWork``.

Kept beside ``worker.app`` so that it stays wiring only: every decision lives in
``worker.membership.tee`` (what was detected), ``worker.replicate.tee_work`` (the TEE replicate) and
``worker.enclave_api`` (the endpoint the enclaves call).
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
from aiohttp import web
from eth_account.signers.local import LocalAccount

from worker.chain import ChainClient
from worker.compute import DockerEngine, LasService, LasSettings, RegistryAuth, SgxDevices, detect_sgx
from worker.compute.environment import WORKER_LABEL
from worker.config import Settings
from worker.enclave_api import (
    ENCLAVE_PORT,
    EnclaveEndpoint,
    EnclaveRoutes,
    add_enclave_routes,
    shares_health_server,
)
from worker.membership import Joined
from worker.membership.tee import TeeCapabilities, detect_tee
from worker.metrics import Metrics
from worker.protocol.tee import ComputeStage
from worker.replicate.enclave_callbacks import EnclaveCallbacks
from worker.replicate.store import ReplicateStore
from worker.replicate.tee_work import TeeWork, TeeWorkSettings

log = logging.getLogger("iexec.worker")


def enclave_routes(settings: Settings, http_app: web.Application) -> EnclaveRoutes:
    """The enclave routes, put on the /health server before it starts when it holds the enclaves' port
    on every address (no second listener could take it); otherwise ``open_tee`` gives them their own."""
    routes = EnclaveRoutes()
    if shares_health_server(settings.node.http_host, settings.node.port):
        add_enclave_routes(http_app, routes)
    return routes


async def open_engine(
    stack: AsyncExitStack, settings: Settings, wallet: str
) -> tuple[DockerEngine, TeeCapabilities]:
    """The Docker engine, cleared of this worker's leftover containers, and the TEE found on this host."""
    engine = await DockerEngine.open()
    stack.push_async_callback(engine.close)
    if removed := await engine.remove_labelled(settings.node.name):
        log.info("removed %d container(s) left by a previous run", len(removed))
    return engine, await tee_capabilities(settings, engine, wallet)


async def tee_capabilities(settings: Settings, engine: DockerEngine, wallet: str) -> TeeCapabilities:
    """Detect SGX and TDX and log what was found; ConfigurationError when a configured TEE is absent."""
    tee, name = settings.tee, settings.node.name

    async def probe() -> SgxDevices:
        return await detect_sgx(
            engine, tee.sgx_driver_mode, override=tee.sgx_devices, check_image=tee.sgx_check_image,
            container_name=f"{name}-{wallet}-sgx-check", labels={WORKER_LABEL: name},
        )  # fmt: skip

    found = await detect_tee(
        probe, sgx_mode=tee.sgx_driver_mode, tdx_mode=tee.tdx_enabled.value, tdx_agent=Path(tee.agent_path)
    )
    for line in found.lines():
        log.info("TEE: %s", line)
    return found


async def open_tee(
    stack: AsyncExitStack,
    settings: Settings,
    found: TeeCapabilities,
    routes: EnclaveRoutes,
    joined: Joined[ChainClient],
    *,
    engine: DockerEngine,
    session: aiohttp.ClientSession,
    account: LocalAccount,
    store: ReplicateStore,
    registries: tuple[RegistryAuth, ...],
    metrics: Metrics,
) -> TeeWork | None:
    """``TeeWork`` and its enclave endpoint when this worker runs any TEE task; None otherwise."""
    if not found.any:
        return None
    tee, node, docker = settings.tee, settings.node, settings.docker
    wallet = account.address.lower()
    callbacks = EnclaveCallbacks(store, joined.chain, wallet, node.task_root)
    result_repository_url = joined.public.result_repository_url
    worker_host: str | None = None
    if shares_health_server(node.http_host, node.port):
        routes.callbacks = callbacks
        stack.callback(setattr, routes, "callbacks", None)
        worker_host = await engine.network_gateway(tee.enclave_network_name)
        log.warning(
            "TEE: enclave routes served by the /health server on every address (IEXEC_WORKER_HTTP_HOST=%s, "
            "IEXEC_WORKER_PORT=%d); bind /health to 127.0.0.1 to give them their own listener",
            node.http_host, node.port,
        )  # fmt: skip
    else:
        host = tee.enclave_endpoint_host
        if host is None:
            host = worker_host = await engine.network_gateway(tee.enclave_network_name)
        endpoint = EnclaveEndpoint(callbacks, host, ENCLAVE_PORT)
        await endpoint.start()
        stack.push_async_callback(endpoint.stop)
    scontain = None
    if tee.scontain_registry_username and tee.scontain_registry_password is not None:
        scontain = RegistryAuth(
            tee.scontain_registry_name,
            tee.scontain_registry_username,
            tee.scontain_registry_password.get_secret_value(),
        )
    app_network = docker.network_name or None
    las = None
    if found.sgx.enabled:
        las = LasService(
            engine,
            LasSettings(
                wallet=wallet, worker_name=node.name, registry_name=tee.scontain_registry_name,
                network=tee.enclave_network_name, app_network=app_network, devices=found.sgx.devices, auth=scontain,
            ),
        )  # fmt: skip
        stack.push_async_callback(las.stop)
    log.info(
        "TEE: enclaves on network %s reach this worker as worker:%d%s",
        tee.enclave_network_name, ENCLAVE_PORT, f" ({worker_host})" if worker_host else "",
    )  # fmt: skip
    work_settings = TeeWorkSettings(
        worker_name=node.name,
        task_root=node.task_root,
        result_repository_url=result_repository_url,
        sgx_devices=found.sgx.devices,
        tdx_enabled=found.tdx,
        tdx_agent=found.tdx_agent,
        max_heap_bytes=tee.compute_max_heap_size_gb * 1024**3,
        scone_log_level=tee.scone_log_level,
        scone_show_version=tee.scone_show_version,
        las_port=tee.las_port,
        enclave_network=tee.enclave_network_name,
        worker_host=worker_host,
        tdx_extra_hosts=tuple(docker.extra_hosts),
        registries=(*registries, *([scontain] if scontain else [])),
    )

    def timed(stage: ComputeStage, task_id: str, seconds: float) -> None:  # the reference's WorkerMetrics
        window = metrics.pre_compute if stage is ComputeStage.PRE else metrics.post_compute
        window.add(task_id, int(seconds * 1000))

    return TeeWork(
        work_settings, engine=engine, session=session, account=account, store=store, callbacks=callbacks, las=las,
        on_enclave=timed,
    )  # fmt: skip


__all__ = ["EnclaveRoutes", "enclave_routes", "open_engine", "open_tee", "tee_capabilities"]
