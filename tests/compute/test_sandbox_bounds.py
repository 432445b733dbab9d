"""The sandbox profiles' bounds and the app network's rules, as data: unit tests (a fake engine where one is needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from worker.compute.firewall import (
    DENIED_V4,
    FirewallPlan,
    FirewallUnavailable,
    bridge_name,
    isolate_app_network,
    refused_addresses,
)
from worker.compute.sandbox import GIB, Sandbox, SandboxProfile, sandbox_for
from worker.protocol.errors import ConfigurationError

MACHINE = {"cpus": 8, "memory": 32 * GIB, "network": "iexec-worker-net"}


def test_compatible_bounds_are_twice_the_share_of_a_slot_capped_at_the_machine() -> None:
    sandbox = sandbox_for(SandboxProfile.COMPATIBLE, slots=7, **MACHINE)  # type: ignore[arg-type]
    usable = 31 * GIB  # 1 GiB kept for the worker, dockerd and the system
    assert sandbox.memory_bytes == 2 * (usable // 7)
    assert sandbox.nano_cpus == int(2 * 8 / 7 * 1e9)
    assert not sandbox.read_only_rootfs
    assert sandbox.user is None
    assert sandbox.output_max_bytes == 10 * GIB
    alone = sandbox_for(SandboxProfile.COMPATIBLE, slots=1, **MACHINE)  # type: ignore[arg-type]
    assert alone.memory_bytes == usable
    assert alone.nano_cpus == 8 * 10**9


def test_strict_is_the_share_read_only_non_root_with_a_bounded_tmp() -> None:
    sandbox = sandbox_for(SandboxProfile.STRICT, slots=4, **MACHINE)  # type: ignore[arg-type]
    assert sandbox.memory_bytes == 31 * GIB // 4
    assert sandbox.nano_cpus == 2 * 10**9
    assert sandbox.pids_limit == 256
    assert sandbox.read_only_rootfs
    options = sandbox.container_options()
    assert options["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=268435456"}
    assert sandbox.user is not None
    assert not sandbox.user.startswith("0:")
    assert sandbox.output_max_bytes == GIB


def test_explicit_settings_win_over_the_profile() -> None:
    sandbox = sandbox_for(
        SandboxProfile.STRICT,
        slots=4,
        memory_limit=3 * GIB,
        cpu_limit=0.5,
        output_limit=5,
        **MACHINE,  # type: ignore[arg-type]
    )
    assert (sandbox.memory_bytes, sandbox.nano_cpus, sandbox.output_max_bytes) == (3 * GIB, 5 * 10**8, 5)


def test_the_output_folder_belongs_to_the_strict_user_alone(tmp_path: Path) -> None:
    folder = tmp_path / "iexec_out"
    folder.mkdir()
    Sandbox(user=f"{os.geteuid()}:{os.getegid()}").prepare_output(folder)
    assert folder.stat().st_mode & 0o777 == 0o700
    Sandbox().prepare_output(folder)
    assert folder.stat().st_mode & 0o777 == 0o777  # the image's user is unknown: any user may write


def test_the_rules_refuse_every_non_public_range_after_the_allowlist_and_the_node_first() -> None:
    plan = FirewallPlan(bridge_name("iexec-worker-net"), allowed=("10.1.0.0/16",), refused=("10.1.2.3/32",),
                        worker_port=13100)  # fmt: skip
    script = plan.script()
    forward = [line for line in script.splitlines() if f"-A {plan.forward_chain} " in line]
    assert forward[0].endswith("-d 10.1.2.3/32 -j REJECT")  # the node, whatever the allowlist
    assert forward[1].endswith("-d 10.1.0.0/16 -j RETURN")
    assert [line.split()[-3] for line in forward[2:-1]] == list(DENIED_V4)
    assert forward[-1].endswith("-j RETURN")  # public destinations go on to Docker's own rules
    incoming = [line for line in script.splitlines() if f"-A {plan.input_chain} " in line]
    assert incoming[1].endswith("-p tcp --dport 13100 -j REJECT")
    assert incoming[-1].endswith("-j REJECT")  # nothing else of the host
    assert f"-I DOCKER-USER 1 -i {plan.bridge} -j {plan.forward_chain}" in script
    assert f"-D DOCKER-USER -i {plan.bridge} -j {plan.forward_chain}" in plan.removal_script()


def test_bridge_names_fit_the_kernel_limit_and_node_addresses_only_when_private() -> None:
    assert len(bridge_name("a-very-long-network-name-" * 4)) <= 15
    assert refused_addresses(["10.0.0.5", "8.8.4.4", "127.0.0.1", "::1", "bad"]) == (
        "10.0.0.5/32",
        "127.0.0.1/32",
    )


class _EngineWithoutBridge:
    """A fake engine whose app network has a bridge this process cannot see (a worker in a container)."""

    async def ensure_app_network(self, name: str) -> str:
        return "ixw-not-here"


async def test_a_worker_that_cannot_install_the_rules_refuses_to_start_and_says_how() -> None:
    engine: Any = _EngineWithoutBridge()
    with pytest.raises(FirewallUnavailable, match="IEXEC_WORKER_FIREWALL_IMAGE") as refused:
        await isolate_app_network(engine, "iexec-worker-net", worker_name="w", worker_port=13100)
    assert isinstance(refused.value, ConfigurationError)  # exit code 2 at start
    with pytest.raises(FirewallUnavailable, match="network of the worker's own"):
        await isolate_app_network(engine, "host", worker_name="w", worker_port=13100)
    assert await isolate_app_network(engine, "none", worker_name="w", worker_port=13100) is None
