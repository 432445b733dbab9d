"""The app network: what an app container can reach. The public internet, and nothing of the worker's.

Apps are strangers' code. On the Docker bridge they would reach the LAN, cloud metadata (169.254.169.254),
services on the host (the worker's own HTTP port on the bridge gateway, a node, dockerd's published ports)
and the other tasks' containers. The worker isolates them with the engine's own means:

- one bridge network per worker (``IEXEC_WORKER_DOCKER_NETWORK_NAME``) created with inter-container
  traffic off (``com.docker.network.bridge.enable_icc=false``) and a bridge interface name derived from the
  network name (:func:`bridge_name`), so rules can name it;
- iptables rules on that interface, in chains of their own: in ``DOCKER-USER`` (forwarded traffic, which
  dockerd sends there before its own rules) every destination in a non-public range is rejected except the
  operator's allowlist (``IEXEC_WORKER_NETWORK_ALLOWLIST``) and except addresses always refused (the
  chain node when it sits on a private network); in ``INPUT`` (traffic to the host itself: bridge gateway,
  any host address) everything is rejected, the worker's HTTP port first, then what is not allowlisted.
  IPv6 from the bridge is dropped (the network has no IPv6: only link-local could be tried).
  Public destinations continue to Docker's own rules (NAT to the internet).

Rules are installed at start and checked before every app run; they are idempotent (a chain is flushed and
refilled). They are applied directly with ``iptables`` when the worker runs as root in the host's network
namespace, and otherwise by a short-lived helper container (``IEXEC_WORKER_FIREWALL_IMAGE``, an image
holding ``sh`` and ``iptables``) with NET_ADMIN on the host network, started through the Docker engine.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import os
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from worker.compute.errors import ComputeError
from worker.compute.model import ContainerResult, ContainerSpec
from worker.protocol.errors import ConfigurationError

log = logging.getLogger(__name__)

ICC_OPTION = "com.docker.network.bridge.enable_icc"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
# Destinations an app never reaches unless allowlisted: "this" network, private ranges, shared address
# space (carrier NAT), loopback, link-local (cloud metadata), multicast and reserved.
DENIED_V4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
)


class FirewallError(ComputeError):
    """The app network's rules cannot be installed or checked; the message names the way out."""


class FirewallUnavailable(FirewallError, ConfigurationError):
    """No way to install the rules on this host: the operator must choose one (exit 2 at start)."""


def bridge_name(network: str) -> str:
    """The Linux bridge of the worker's app network: ``ixw`` + 11 hex digits, within the 15-character limit."""
    return "ixw" + hashlib.sha256(network.encode()).hexdigest()[:11]


@dataclass(frozen=True)
class FirewallPlan:
    """The rules of one app network; pure, so the exact rules are unit-tested."""

    bridge: str
    allowed: tuple[str, ...] = ()
    """Operator allowlist: networks apps may reach though not public (CIDR)."""
    refused: tuple[str, ...] = ()
    """Addresses never reached, allowlist or not (a chain node on a private network)."""
    worker_port: int | None = None

    @property
    def forward_chain(self) -> str:
        return f"IEXEC-{self.bridge}"

    @property
    def input_chain(self) -> str:
        return f"IEXEC-IN-{self.bridge}"

    def jumps(self) -> list[tuple[str, str, list[str]]]:
        """(command, built-in chain, rule) of the jumps into this network's chains, v4 and v6."""
        return [
            ("iptables", "DOCKER-USER", ["-i", self.bridge, "-j", self.forward_chain]),
            ("iptables", "INPUT", ["-i", self.bridge, "-j", self.input_chain]),
            ("ip6tables", "FORWARD", ["-i", self.bridge, "-j", "DROP"]),
            ("ip6tables", "INPUT", ["-i", self.bridge, "-j", "DROP"]),
        ]

    def script(self) -> str:
        """A POSIX shell script that (re)builds the rules, idempotent, failing at the first error."""
        reject = ["-j", "REJECT"]
        forward = [[*(["-d", address]), *reject] for address in self.refused]
        forward += [["-d", network, "-j", "RETURN"] for network in self.allowed]
        forward += [["-d", network, *reject] for network in DENIED_V4]
        forward.append(["-j", "RETURN"])
        incoming = [[*(["-d", address]), *reject] for address in self.refused]
        if self.worker_port:
            incoming.append(["-p", "tcp", "--dport", str(self.worker_port), *reject])
        incoming += [["-d", network, "-j", "RETURN"] for network in self.allowed]
        incoming.append(reject)
        lines = ["set -e"]
        for chain, rules in ((self.forward_chain, forward), (self.input_chain, incoming)):
            lines.append(f"iptables -w 10 -N {chain} 2>/dev/null || true")
            lines.append(f"iptables -w 10 -F {chain}")
            lines += [f"iptables -w 10 -A {chain} {shlex.join(rule)}" for rule in rules]
        for command, chain, rule in self.jumps():
            joined = shlex.join(rule)
            check = (
                f"{command} -w 10 -C {chain} {joined} 2>/dev/null || {command} -w 10 -I {chain} 1 {joined}"
            )
            # IPv6 may be off on the host: its rules are best effort.
            lines.append(check if command == "iptables" else f"{{ {check}; }} 2>/dev/null || true")
        return "\n".join(lines) + "\n"

    def verify_script(self) -> str:
        """Exits 0 when the jumps into this network's chains are in place."""
        checks = [
            f"{command} -w 10 -C {chain} {shlex.join(rule)}"
            for command, chain, rule in self.jumps()
            if command == "iptables"
        ]
        checks += [
            f"iptables -w 10 -S {self.forward_chain} >/dev/null",
            f"iptables -w 10 -S {self.input_chain} >/dev/null",
        ]
        return " && ".join(checks) + "\n"

    def removal_script(self) -> str:
        """Removes every rule and chain of this network (tests, and an operator turning isolation off)."""
        lines = []
        for command, chain, rule in self.jumps():
            joined = shlex.join(rule)
            lines.append(f"while {command} -w 10 -D {chain} {joined} 2>/dev/null; do :; done")
        for chain in (self.forward_chain, self.input_chain):
            lines.append(f"iptables -w 10 -F {chain} 2>/dev/null || true")
            lines.append(f"iptables -w 10 -X {chain} 2>/dev/null || true")
        return "\n".join(lines) + "\n"


class ScriptRunner(Protocol):
    """Runs a shell script of iptables commands with NET_ADMIN in the host's network namespace."""

    description: str

    async def run(self, script: str) -> tuple[int, str]: ...


class NetworkEngine(Protocol):
    """What the app network needs of the Docker engine (``worker.compute.docker.DockerEngine``)."""

    async def ensure_app_network(self, name: str) -> str: ...

    def guard_network(self, network: str, firewall: AppFirewall) -> None: ...

    async def run(self, spec: ContainerSpec) -> ContainerResult: ...


class DirectRunner:
    """The worker itself: root, in the network namespace where dockerd made the bridge."""

    description = "iptables run by the worker"

    async def run(self, script: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await process.communicate()
        return process.returncode or 0, output.decode(errors="replace")

    @staticmethod
    def usable(bridge: str) -> bool:
        return (
            os.geteuid() == 0
            and shutil.which("iptables") is not None
            and Path(f"/sys/class/net/{bridge}").exists()
        )


class HelperRunner:
    """A short-lived container of ``image`` (holding ``sh`` and ``iptables``), root with NET_ADMIN and NET_RAW
    only, on the host network: for a worker that is not root or not in the host's network namespace."""

    def __init__(self, engine: NetworkEngine, image: str, worker_name: str) -> None:
        self._engine = engine
        self._image = image
        self._name = f"{worker_name}-firewall"
        self.description = f"helper container of {image}"

    async def run(self, script: str) -> tuple[int, str]:
        result = await self._engine.run(
            ContainerSpec(
                name=self._name, image=self._image, timeout=120.0, entrypoint=("/bin/sh", "-c"), cmd=(script,),
                network="host", user="0", cap_add=("NET_ADMIN", "NET_RAW"),
            )
        )  # fmt: skip
        return result.exit_code, result.stdout + result.stderr


class AppFirewall:
    """Installs and checks the rules of one app network through a runner."""

    def __init__(
        self, plan: FirewallPlan, runner: ScriptRunner, *, check_each_run: bool = True, network: str = ""
    ) -> None:
        self.plan = plan
        self.runner = runner
        self.check_each_run = check_each_run
        self.network = network
        """The Docker network these rules isolate."""

    async def install(self) -> None:
        code, output = await self.runner.run(self.plan.script())
        if code != 0:
            raise FirewallError(
                f"cannot install the app network rules on bridge {self.plan.bridge} ({self.runner.description}, "
                f"exit {code}): {output.strip()[-400:]}"
            )
        log.info(
            "app network %s isolated (%s): public internet only%s",
            self.plan.bridge, self.runner.description,
            f", allowlist {', '.join(self.plan.allowed)}" if self.plan.allowed else "",
        )  # fmt: skip

    async def ensure(self) -> None:
        """Reinstall the rules if something (a firewall reload, a dockerd restart) removed them."""
        code, _ = await self.runner.run(self.plan.verify_script())
        if code != 0:
            log.warning(
                "app network rules of bridge %s were missing: installing them again", self.plan.bridge
            )
            await self.install()

    async def remove(self) -> None:
        await self.runner.run(self.plan.removal_script())


async def isolate_app_network(
    engine: NetworkEngine,
    network: str,
    *,
    worker_name: str,
    worker_port: int | None,
    allowed: Sequence[str] = (),
    refused: Sequence[str] = (),
    helper_image: str | None = None,
) -> AppFirewall | None:
    """Create the app network ``network`` and install its rules; None for ``none`` (no network at all).

    Raises ``FirewallUnavailable`` (a configuration error) when the rules cannot be installed by any means.
    """
    if network == "none":
        return None
    if network in ("bridge", "host", "default"):
        raise FirewallUnavailable(
            f"IEXEC_WORKER_DOCKER_NETWORK_NAME={network}: apps must run on a network of the worker's own, which it "
            "isolates; use a new name (default iexec-worker-net), or none for apps without network"
        )
    bridge = await engine.ensure_app_network(network)
    runner: ScriptRunner
    if DirectRunner.usable(bridge):
        runner = DirectRunner()
    elif helper_image:
        runner = HelperRunner(engine, helper_image, worker_name)
    else:
        raise FirewallUnavailable(
            f"the app network {network} needs firewall rules and this worker cannot install them (not root, no "
            "iptables, or not in the host's network namespace): run it as root on the host, set "
            "IEXEC_WORKER_FIREWALL_IMAGE to an image holding sh and iptables, or set "
            "IEXEC_WORKER_DOCKER_NETWORK_NAME=none to run apps without network"
        )
    v4 = tuple(item for item in allowed if ":" not in item)
    plan = FirewallPlan(bridge, allowed=v4, refused=tuple(refused), worker_port=worker_port)
    firewall = AppFirewall(plan, runner, check_each_run=isinstance(runner, DirectRunner), network=network)
    await firewall.install()
    engine.guard_network(network, firewall)
    return firewall


def refused_addresses(addresses: Sequence[str]) -> tuple[str, ...]:
    """The non-public IPv4 addresses among ``addresses`` (the chain nodes'), refused whatever the allowlist says."""
    refused = []
    for address in addresses:
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            continue
        if isinstance(parsed, ipaddress.IPv4Address) and not parsed.is_global:
            refused.append(f"{parsed}/32")
    return tuple(dict.fromkeys(refused))
