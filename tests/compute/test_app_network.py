"""The app network, end to end: a real app container tries to reach what it must not (real Docker engine,
real iptables rules, targets in a network namespace made and removed by the test, see tests/support/netlab.py).

Reached: an address standing for the public internet. Refused: a private address, a link-local "cloud
metadata" address, the host through the bridge gateway (where the worker's HTTP port listens), another
task's container, and a chain node on a private network even when the operator allowlists that network.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devnet.images import NET
from tests.support.firewall_image import firewall_helper_image
from tests.support.netlab import PORT, Lab, network_lab, sh
from tests.support.work import compute_work, describe_app
from worker.compute import ContainerSpec, DockerEngine
from worker.compute.firewall import AppFirewall, FirewallPlan, HelperRunner, bridge_name, isolate_app_network
from worker.compute.sandbox import Sandbox

pytestmark = pytest.mark.e2e


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with network_lab() as made:
        yield made


@pytest.fixture
async def host_port() -> AsyncIterator[int]:
    """A server on every host address, as a worker's HTTP endpoint bound to 0.0.0.0 would be."""
    server = await asyncio.start_server(lambda _r, w: w.close(), "0.0.0.0", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def probe_script(targets: dict[str, str]) -> str:
    lines = [
        f'if echo | nc -w 3 {address} >/dev/null 2>&1; then echo "{name} open"; else echo "{name} closed"; fi'
        for name, address in targets.items()
    ]
    return "; ".join(lines)


async def probe(
    engine: DockerEngine, tmp_path: Path, unique: str, network: str, targets: dict[str, str]
) -> dict[str, str]:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    work = compute_work(engine, tmp_path / "tasks", unique, Sandbox(network=network))
    script = (
        f"({probe_script(targets)}) | tee /iexec_out/probe.txt"
        ' && echo {\\"deterministic-output-path\\":\\"/iexec_out/probe.txt\\"} > /iexec_out/computed.json'
    )
    task_id = describe_app(work, NET.tag, f"'{script}'")
    outcome = await work.compute(task_id)
    return dict(line.split(" ", 1) for line in outcome.stdout.splitlines())


async def gateway_of(network: str) -> str:
    return (
        await sh("docker", "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", network)
    ).strip()


@pytest.fixture
async def isolated(engine: DockerEngine, unique: str) -> AsyncIterator[list[AppFirewall]]:
    """Firewalls installed by the test; their rules and networks are removed whatever happens."""
    installed: list[AppFirewall] = []
    yield installed
    for firewall in installed:
        await firewall.remove()
        rules = await sh("iptables", "-S")
        assert firewall.plan.bridge not in rules, "a rule of the test survived"


async def test_an_app_reaches_the_internet_and_nothing_of_the_worker(
    engine: DockerEngine, lab: Lab, host_port: int, tmp_path: Path, unique: str, isolated: list[AppFirewall]
) -> None:
    network = f"pytest-net-{uuid.uuid4().hex[:8]}"
    other = f"{unique}-other-task"
    try:
        firewall = await isolate_app_network(engine, network, worker_name=unique, worker_port=host_port)
        assert firewall is not None
        isolated.append(firewall)
        # Another task's container, listening on the same network.
        await sh("docker", "run", "-d", "--name", other, "--network", network, "--entrypoint", "/bin/nc", NET.tag,
                 "-ll", "-p", str(PORT), "-e", "/bin/true")  # fmt: skip
        template = f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}'
        other_ip = (await sh("docker", "inspect", "-f", template, other)).strip()
        gateway = await gateway_of(network)

        seen = await probe(engine, tmp_path, unique, network, {
            "public": f"{lab.public} {PORT}",
            "private": f"{lab.private} {PORT}",
            "metadata": f"{lab.link_local} {PORT}",
            "worker-port": f"{gateway} {host_port}",
            "other-task": f"{other_ip} {PORT}",
        })  # fmt: skip

        assert seen == {
            "public": "open",
            "private": "closed",
            "metadata": "closed",
            "worker-port": "closed",
            "other-task": "closed",
        }
        assert bridge_name(network) in await sh("iptables", "-S", "DOCKER-USER")
    finally:
        await sh("docker", "rm", "-f", other, check=False)
        await engine.remove_network(network)


async def test_the_allowlist_opens_a_network_but_never_the_chain_node(
    engine: DockerEngine, lab: Lab, tmp_path: Path, unique: str, isolated: list[AppFirewall]
) -> None:
    network = f"pytest-net-{uuid.uuid4().hex[:8]}"
    try:
        firewall = await isolate_app_network(
            engine, network, worker_name=unique, worker_port=None, allowed=[lab.private_network],
            refused=[f"{lab.node}/32"],
        )  # fmt: skip
        assert firewall is not None
        isolated.append(firewall)

        seen = await probe(engine, tmp_path, unique, network, {
            "allowlisted": f"{lab.private} {PORT}",
            "node": f"{lab.node} {PORT}",
            "metadata": f"{lab.link_local} {PORT}",
        })  # fmt: skip

        assert seen == {"allowlisted": "open", "node": "closed", "metadata": "closed"}
    finally:
        await engine.remove_network(network)


async def test_without_the_rules_the_same_app_would_reach_them(
    engine: DockerEngine, lab: Lab, unique: str
) -> None:
    """The control: on a plain bridge network the targets above are reachable, so the test can fail."""
    network = f"pytest-net-{uuid.uuid4().hex[:8]}"
    await sh("docker", "network", "create", network)
    try:
        result = await engine.run(ContainerSpec(
            name=unique, image=NET.tag, timeout=30, network=network,
            cmd=(probe_script({"private": f"{lab.private} {PORT}", "metadata": f"{lab.link_local} {PORT}"}),),
        ))  # fmt: skip
        assert result.stdout.split() == ["private", "open", "metadata", "open"]
    finally:
        await engine.remove_network(network)


async def test_a_worker_that_cannot_run_iptables_installs_the_rules_through_a_helper_container(
    engine: DockerEngine, lab: Lab, tmp_path: Path, unique: str, isolated: list[AppFirewall]
) -> None:
    """The deploy/ image case: the worker is not root on the host, an image holding sh and iptables is."""
    image = await firewall_helper_image(engine)
    network = f"pytest-net-{uuid.uuid4().hex[:8]}"
    try:
        plan = FirewallPlan(await engine.ensure_app_network(network), worker_port=None)
        firewall = AppFirewall(plan, HelperRunner(engine, image, unique), check_each_run=False)
        await firewall.install()
        isolated.append(firewall)
        assert plan.forward_chain in await sh("iptables", "-S", "DOCKER-USER")

        seen = await probe(engine, tmp_path, unique, network, {
            "public": f"{lab.public} {PORT}", "metadata": f"{lab.link_local} {PORT}",
        })  # fmt: skip

        assert seen == {"public": "open", "metadata": "closed"}
    finally:
        await engine.remove_network(network)
