"""Faults of the Docker engine: dockerd stopped (or killed) and restarted while the app computes or while
its image pulls (from a local registry behind a throttling relay, so the pull lasts long enough to be cut).

The worker runs as its own process against a private dockerd (``tests/support/dockerd.py``: the system
engine is shared and is never stopped), the chain is anvil with the real PoCo contracts, the scheduler
the development one. Outcome in every case: the stage waits for the engine, starts over, and the task
completes with exactly one contribution and one reveal from this worker; the worker never exits; no
container, task folder or engine leftover remains.

The worker finds its engine as the Docker client does, by ``DOCKER_HOST`` (no setting of its own), so the
test sets it for the worker process only. The devnet worker runs its apps on no network
(``IEXEC_WORKER_DOCKER_NETWORK_NAME=none``): no app network and no firewall rule are made, which suits a
private engine started with ``--iptables=false`` (isolation rules for its bridge would have nothing to guard).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devnet.core.state import TaskStatus
from devnet.images import SLEEP
from devnet.platform import Platform, buy, worker_env, write_env_file
from tests.support import free_port
from tests.support.docker import docker_cli
from tests.support.dockerd import Dockerd, private_dockerd
from tests.support.e2e import (
    WorkerProcess,
    contribute_count,
    local_registry,
    local_status,
    unique_worker_name,
)
from worker.compute import container_name
from worker.protocol.status import ChainTaskStatus, ReplicateStatus

pytestmark = pytest.mark.e2e

MIB = 1 << 20
LAYER = 8 * MIB
RATE = 1 * MIB
"""Bytes per second the throttled registry serves: a pull of ``LAYER`` takes seconds, time to stop dockerd."""

RS = ReplicateStatus
WAITED = "Docker engine unavailable"
RESUMED = "answers again"


@contextlib.asynccontextmanager
async def worker_on(engine: Dockerd, env_file: Path, log: Path) -> AsyncIterator[WorkerProcess]:
    """``python -m worker.cli run`` as an operator starts it, with DOCKER_HOST naming the private engine."""
    log_file = await asyncio.to_thread(log.open, "wb")
    with log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker.cli", "run", "--env-file", str(env_file),
            stdout=log_file, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "DOCKER_HOST": engine.host},
        )  # fmt: skip
    try:
        yield WorkerProcess(process, log)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def _health(port: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/health") as response:
        body: dict[str, Any] = await response.json()
        return body


async def _nonce(platform: Platform, wallet: str) -> int:
    w3 = platform.devnet.w3
    return await w3.eth.get_transaction_count(w3.to_checksum_address(wallet))


async def _engine_restarted_while_computing(platform: Platform, tmp_path: Path, *, kill: bool) -> None:
    info = platform.info()
    wallet = info.workers[0].address
    name = unique_worker_name(0)
    base = tmp_path / "worker"
    port = free_port()
    env_file = write_env_file(
        tmp_path / "worker.env", {**worker_env(info, 0, base, port=port), "IEXEC_WORKER_NAME": name}
    )
    db = base / f"{name}.sqlite3"
    nonce_before = await _nonce(platform, wallet)

    async with (
        private_dockerd(tmp_path / "dockerd", SLEEP.tag) as engine,
        worker_on(engine, env_file, tmp_path / "worker.log") as worker,
    ):
        # Longer than dockerd's stop grace (10 s): a stopping engine kills it rather than letting it end.
        purchase = await buy(info, image=SLEEP.tag, args="15")
        task_id = purchase.task_ids[0]
        container = container_name(name, task_id)

        async def running() -> bool:
            return container in await engine.containers()

        await worker.until(running, within=120, every=0.1, what=f"{container} running on the private engine")
        await engine.stop(kill=kill)
        await worker.until(
            lambda: WAITED in worker.output(), within=60, what="the stage waiting for the engine"
        )
        problems = (await _health(port))["problems"]
        assert f"run of {SLEEP.tag}" in problems["engine"]
        assert "dockerd" in problems["engine"]
        await engine.start()
        await worker.until(
            lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
            within=180,
            what=f"task {task_id} COMPLETED",
        )
        await worker.until(
            lambda: local_status(db, task_id) is RS.COMPLETED, within=30, what="COMPLETED locally"
        )
        assert worker.process.returncode is None, "the worker exited on an engine fault"
        log = worker.log.read_text(errors="replace")
        assert RESUMED in log
        assert "pipeline crashed" not in log
        assert await engine.containers() == []
        await worker.stop()

    assert (await platform.toolkit.view_task(task_id)).status is ChainTaskStatus.COMPLETED
    assert await contribute_count(platform, task_id, wallet) == 1
    assert await _nonce(platform, wallet) - nonce_before == 2, "one contribute and one reveal, nothing more"
    history = platform.scheduler.replicate_history(task_id, wallet)
    assert history.count(RS.CONTRIBUTED) == 1
    assert history[-1] is RS.COMPLETED
    assert not (base / name / task_id).exists()


async def test_dockerd_restarted_while_the_app_computes(platform: Platform, tmp_path: Path) -> None:
    await _engine_restarted_while_computing(platform, tmp_path, kill=False)


@pytest.mark.slow_fault
async def test_dockerd_killed_and_restarted_while_the_app_computes(
    platform: Platform, tmp_path: Path
) -> None:
    await _engine_restarted_while_computing(platform, tmp_path, kill=True)


class Throttle:
    """A TCP relay on 127.0.0.1 in front of a registry: what the registry sends back goes at ``RATE``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.served = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Throttle:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 10)

    async def _relay(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        try:
            upstream_in, upstream_out = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_out.close()
            return

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, slow: bool) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while chunk := await source.read(64 * 1024):
                    sink.write(chunk)
                    await sink.drain()
                    if slow:
                        self.served += len(chunk)
                        await asyncio.sleep(len(chunk) / RATE)
            with contextlib.suppress(OSError):
                sink.close()

        await asyncio.gather(
            pump(client_in, upstream_out, slow=False), pump(upstream_in, client_out, slow=True)
        )


async def _big_image(tmp_path: Path, tag: str) -> None:
    """``SLEEP`` plus a layer of ``LAYER`` random bytes, built on the system engine."""
    context = tmp_path / "big-image"
    context.mkdir()
    (context / "blob").write_bytes(os.urandom(LAYER))
    (context / "Dockerfile").write_text(f"FROM {SLEEP.tag}\nCOPY blob /blob\n")
    await docker_cli("build", "-q", "-t", tag, str(context))


async def _engine_restarted_while_pulling(platform: Platform, tmp_path: Path, *, kill: bool) -> None:
    info = platform.info()
    wallet = info.workers[0].address
    name = unique_worker_name(0)
    base = tmp_path / "worker"
    env_file = write_env_file(
        tmp_path / "worker.env", {**worker_env(info, 0, base), "IEXEC_WORKER_NAME": name}
    )
    db = base / f"{name}.sqlite3"
    nonce_before = await _nonce(platform, wallet)

    async with (
        local_registry(tmp_path / "registry") as registry,
        Throttle(int(registry.rsplit(":", 1)[1])) as slow,
    ):
        image = f"127.0.0.1:{slow.port}/iexec-devnet/sleep-big:{name}"
        await _big_image(tmp_path, image)
        try:
            await docker_cli("push", image)
            purchase = await buy(info, image=image, args="1")  # checksum: the image id, kept by the registry
        finally:
            await docker_cli("image", "rm", image, check=False)
        task_id = purchase.task_ids[0]
        async with (
            private_dockerd(tmp_path / "dockerd") as engine,
            worker_on(engine, env_file, tmp_path / "worker.log") as worker,
        ):
            pushed = slow.served
            await worker.until(
                lambda: slow.served - pushed > LAYER // 4, within=180, every=0.05, what="the pull under way"
            )
            await engine.stop(kill=kill)
            await worker.until(
                lambda: WAITED in worker.output(), within=60, what="the pull waiting for the engine"
            )
            await engine.start()
            await worker.until(
                lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
                within=300,
                what=f"task {task_id} COMPLETED",
            )
            await worker.until(
                lambda: local_status(db, task_id) is RS.COMPLETED, within=30, what="COMPLETED locally"
            )
            assert worker.process.returncode is None, "the worker exited on an engine fault"
            log = worker.log.read_text(errors="replace")
            assert "pull of " + image in log
            assert RESUMED in log
            assert "pipeline crashed" not in log
            code, _ = await engine.cli("image", "inspect", image, check=False)
            assert code == 0, "the image is on the private engine only because the worker pulled it"
            assert await engine.containers() == []
            await worker.stop()

    history = platform.scheduler.replicate_history(task_id, wallet)
    assert RS.APP_DOWNLOAD_FAILED not in history
    assert history.count(RS.CONTRIBUTED) == 1
    assert history[-1] is RS.COMPLETED
    assert await contribute_count(platform, task_id, wallet) == 1
    assert await _nonce(platform, wallet) - nonce_before == 2, "one contribute and one reveal, nothing more"
    assert not (base / name / task_id).exists()


async def test_dockerd_restarted_while_the_image_pulls(platform: Platform, tmp_path: Path) -> None:
    await _engine_restarted_while_pulling(platform, tmp_path, kill=False)


@pytest.mark.slow_fault
async def test_dockerd_killed_and_restarted_while_the_image_pulls(platform: Platform, tmp_path: Path) -> None:
    await _engine_restarted_while_pulling(platform, tmp_path, kill=True)
