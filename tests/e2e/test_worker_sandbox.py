"""End to end: a whole worker (real anvil with PoCo, Docker, the development scheduler) computing in its
sandbox: the strict profile on its own isolated app network, whose rules it installs at start.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from devnet.core.state import TaskStatus
from devnet.images import HELLO
from devnet.platform import Platform, buy
from tests.support import until
from tests.support.e2e import running_worker
from tests.support.netlab import sh
from worker.compute import DockerEngine
from worker.compute.firewall import AppFirewall, DirectRunner, FirewallPlan, bridge_name

pytestmark = pytest.mark.e2e


async def test_a_strict_worker_on_its_isolated_network_completes_the_demo_task(
    platform: Platform, tmp_path: Path
) -> None:
    network = f"pytest-e2e-{uuid.uuid4().hex[:8]}"
    settings = {"IEXEC_WORKER_DOCKER_NETWORK_NAME": network, "IEXEC_WORKER_SANDBOX_PROFILE": "strict"}
    try:
        async with running_worker(platform, 0, tmp_path / "worker", env=settings) as worker:
            purchase = await buy(platform.info(), image=HELLO.tag, args="sandbox")
            task_id = purchase.task_ids[0]
            await until(
                lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
                within=90,
                what=f"task {task_id} COMPLETED",
            )
            assert bridge_name(network) in await sh("iptables", "-S", "DOCKER-USER")
            assert await worker.shutdown() == 0
    finally:
        await AppFirewall(FirewallPlan(bridge_name(network)), DirectRunner()).remove()
        async with await DockerEngine.open() as engine:
            await engine.remove_network(network)
    assert bridge_name(network) not in await sh("iptables", "-S")
