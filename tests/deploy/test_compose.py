"""deploy/compose.yml brought up as the README says, against a real platform: a task goes to COMPLETED.

Everything is real: the worker image from `make image`, Prometheus and Alertmanager images made from
Debian packages (no image can be pulled here), the host's Docker engine through its socket, anvil with
PoCo, the development scheduler and the result proxy, all on 127.0.0.1 (the services use the host's
network). The test sets only what an operator may set by environment (project name, ports, folders,
images) so that it shares the machine with other runs; the compose file itself is the shipped one.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from devnet.core.state import TaskStatus
from devnet.images import HELLO
from devnet.platform import Platform, buy, worker_env, write_env_file
from tests.deploy.conftest import IMAGE_BUILD_TIMEOUT, WorkerImage
from tests.support import free_port, until
from tests.support.deploy import DEPLOY, WORKER_UID, AppNetwork, compose_command, readme_command, run

# The first test to ask for an image builds it: minutes on a machine where no base is cached yet.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(IMAGE_BUILD_TIMEOUT)]

MAX_SECONDS_TO_JOINED = 60
UP = "docker compose -f deploy/compose.yml up -d"
PS = "docker compose -f deploy/compose.yml ps"
LOGS = "docker compose -f deploy/compose.yml logs worker"
DOWN = "docker compose -f deploy/compose.yml down"
WALLET_STEPS = (
    "install -d -m 700 deploy/wallet",
    "cp /secure/worker.json deploy/wallet/wallet.json && cp /secure/password deploy/wallet/password",
    "chown -R 10001 deploy/wallet && chmod 600 deploy/wallet/*",
)


class Stack:
    """One compose project: `docker compose` as this machine spells it, and this run's environment."""

    def __init__(
        self, compose: list[str], env: dict[str, str], name: str, base_dir: Path, apps: AppNetwork
    ) -> None:
        self.compose, self.env, self.name, self.base_dir = compose, env, name, base_dir
        self.apps = apps  # the worker's isolated app network (the compose file's firewall image)

    async def readme(self, line: str) -> str:
        """A README line run as typed (`docker compose` replaced by this machine's command)."""
        return await self.run(*readme_command(line).split()[2:])

    async def run(self, *args: str, check: bool = True) -> str:
        return (await run(*self.compose, *args, env=self.env, check=check, within=300)).output

    def port(self, name: str) -> int:
        return int(self.env[name])


def _prometheus_config(folder: Path, worker_port: int, alertmanager_port: int) -> Path:
    """The shipped Prometheus folder with this run's ports, and a scrape every 2 s instead of 15 s."""
    shutil.copytree(DEPLOY / "prometheus", folder)
    config = folder / "prometheus.yml"
    text = config.read_text()
    for shipped, here in (
        ("127.0.0.1:13100", f"127.0.0.1:{worker_port}"),
        ("127.0.0.1:9093", f"127.0.0.1:{alertmanager_port}"),
        ("scrape_interval: 15s", "scrape_interval: 2s"),
        ("evaluation_interval: 15s", "evaluation_interval: 2s"),
    ):
        assert shipped in text, f"deploy/prometheus/prometheus.yml no longer has {shipped}"
        text = text.replace(shipped, here)
    config.write_text(text)
    return folder


async def _wallet(platform: Platform, folder: Path) -> Path:
    """The README's wallet steps, run by the shell with this run's folder and a devnet keystore."""
    wallet = platform.workers[0]
    for step in WALLET_STEPS:
        line = readme_command(step).replace("deploy/wallet", str(folder))
        line = line.replace("/secure/worker.json", wallet.keystore).replace(
            "/secure/password", wallet.password_file
        )
        await run("sh", "-c", line)
    return folder


@pytest_asyncio.fixture(loop_scope="session")
async def stack(
    platform: Platform, worker_image: WorkerImage, monitoring_images: dict[str, str], tmp_path: Path
) -> AsyncIterator[Stack]:
    name = f"e2e-{uuid.uuid4().hex[:8]}-compose"
    base_dir = tmp_path / "base"  # absent: Docker creates it, as root, for the bind mount
    ports = {key: str(free_port()) for key in ("IEXEC_WORKER_PORT", "PROMETHEUS_PORT", "ALERTMANAGER_PORT")}
    apps = AppNetwork(f"{name}-apps")
    settings = {
        **worker_env(platform.info(), 0, base_dir),
        "IEXEC_WORKER_NAME": name,
        "IEXEC_WORKER_DOCKER_NETWORK_NAME": apps.name,  # the default: apps on a network of their own
    }
    env = {
        **ports,
        **monitoring_images,
        "COMPOSE_PROJECT_NAME": name.replace("-compose", ""),
        "WORKER_IMAGE": worker_image.tag,
        "WORKER_ENV_FILE": str(await asyncio.to_thread(write_env_file, tmp_path / ".env", settings)),
        "IEXEC_WORKER_BASE_DIR": str(base_dir),
        "WORKER_WALLET_DIR": str(await _wallet(platform, tmp_path / "wallet")),
    }
    prometheus = await asyncio.to_thread(
        _prometheus_config,
        tmp_path / "prometheus",
        int(ports["IEXEC_WORKER_PORT"]),
        int(ports["ALERTMANAGER_PORT"]),
    )
    env["PROMETHEUS_CONFIG_DIR"] = str(prometheus)
    stack = Stack(await compose_command(), env, name, base_dir, apps)
    try:
        yield stack
    finally:
        await stack.run("-f", "deploy/compose.yml", "down", "--volumes", "--timeout", "30", check=False)
        await apps.remove()


async def _prometheus(session: aiohttp.ClientSession, port: int, path: str) -> dict[str, object]:
    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
        assert response.status == 200, await response.text()
        body: dict[str, object] = await response.json()
        return body


async def test_compose_up_joins_and_completes_a_task_through_the_docker_socket(
    stack: Stack, platform: Platform
) -> None:
    started = time.monotonic()
    await stack.readme(UP)

    def joined() -> bool:
        record = next((w for w in platform.scheduler.state.workers.values() if w.name == stack.name), None)
        return record is not None and record.registered

    await until(
        joined, within=MAX_SECONDS_TO_JOINED, every=0.2, what="the compose worker joined the scheduler"
    )
    seconds_to_joined = time.monotonic() - started
    print(f"\n`docker compose up` to joined: {seconds_to_joined:.1f} s")

    purchase = await buy(platform.info(), image=HELLO.tag, args="compose")
    task_id = purchase.task_ids[0]
    await until(
        lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
        within=120,
        every=0.2,
        what=f"{task_id} COMPLETED by the compose worker",
    )
    logs = await stack.readme(LOGS)
    await asyncio.to_thread((stack.base_dir.parent / "worker.log").write_text, logs)
    assert "joined scheduler" in logs
    # uid 10001 cannot run iptables: the compose file's firewall image installed the app network's rules.
    assert "isolated (helper container of iexec-worker-firewall:0.1.0)" in logs
    assert "-d 169.254.0.0/16 -j REJECT" in await stack.apps.rules(), "no app network rules on the host"
    assert "Up" in await stack.readme(PS)

    # The worker runs as uid 10001 with the socket's group, in the base dir Docker created as root.
    (container,) = (await stack.run("-f", "deploy/compose.yml", "ps", "-q", "worker")).split()
    status = (await run("docker", "exec", container, "cat", "/proc/1/status")).output
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    groups_line = next(line for line in status.splitlines() if line.startswith("Groups:"))
    assert uid_line.split()[1:] == [str(WORKER_UID)] * 4
    socket_gid = (await asyncio.to_thread(os.stat, "/var/run/docker.sock")).st_gid
    assert str(socket_gid) in groups_line.split()[1:]
    assert (await asyncio.to_thread(stack.base_dir.stat)).st_uid == WORKER_UID

    # Prometheus scrapes the worker and knows its Alertmanager; both keep their data in volumes.
    async with aiohttp.ClientSession() as session:

        async def worker_up() -> bool:
            body = await _prometheus(
                session, stack.port("PROMETHEUS_PORT"), '/api/v1/query?query=up{job="iexec-worker"}'
            )
            result = body["data"]["result"]  # type: ignore[index]
            return bool(result) and result[0]["value"][1] == "1"

        await until(worker_up, within=60, every=0.5, what="Prometheus in compose scrapes the worker")
        managers = await _prometheus(session, stack.port("PROMETHEUS_PORT"), "/api/v1/alertmanagers")
        active = [m["url"] for m in managers["data"]["activeAlertmanagers"]]  # type: ignore[index]
        assert active == [f"http://127.0.0.1:{stack.port('ALERTMANAGER_PORT')}/api/v2/alerts"]
    project = stack.env["COMPOSE_PROJECT_NAME"]
    for volume in ("prometheus-data", "alertmanager-data"):
        inspected = json.loads((await run("docker", "volume", "inspect", f"{project}_{volume}")).output)
        assert inspected[0]["Name"] == f"{project}_{volume}"

    await stack.readme(DOWN)
    assert (await stack.run("-f", "deploy/compose.yml", "ps", "-q")).split() == []
    assert seconds_to_joined < MAX_SECONDS_TO_JOINED
