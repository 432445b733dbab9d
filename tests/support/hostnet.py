"""A guard over the host's Docker networking, for tests that start a Docker engine of their own.

dockerd hard-codes the name ``docker0``: a second engine started carelessly (``--bridge=none``, or a
``--default-address-pool`` at restart) deletes or readdresses the host's docker0, which cuts the system
engine's containers off for everyone on the machine. ``HostNet.record()`` notes what the system engine
relies on — docker0's interface index, its addresses and routes, Docker's iptables chains and the rules
naming docker0 — and ``check()`` fails, naming what changed, when any of it moved.

What is compared ignores what the system engine changes by itself while other tests run (link state,
containers' rules on other bridges): only docker0 itself and the existence of Docker's chains.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

BRIDGE = "docker0"
_TABLES = ("filter", "nat")


@dataclass(frozen=True)
class HostNet:
    ifindex: int | None
    addresses: frozenset[tuple[str, str, int]]
    routes: frozenset[tuple[str, str, str]]
    chains: frozenset[tuple[str, str]]
    bridge_rules: frozenset[tuple[str, str]]

    @classmethod
    def record(cls) -> HostNet:
        return cls.parse(_run("ip", "-j", "addr", "show", "dev", BRIDGE), _run("ip", "-j", "route", "show", "dev", BRIDGE),
                         {table: _run("iptables-save", "-t", table) for table in _TABLES})  # fmt: skip

    @classmethod
    def parse(cls, addr_json: str, route_json: str, iptables: dict[str, str]) -> HostNet:
        """From ``ip -j addr show dev docker0``, ``ip -j route show dev docker0`` and ``iptables-save -t``."""
        links = json.loads(addr_json or "[]")
        link = links[0] if links else {}
        addresses = frozenset(
            (str(a.get("family")), str(a.get("local")), int(a.get("prefixlen", 0)))
            for a in link.get("addr_info", [])
            if a.get("scope") != "link"  # the link-local IPv6 address follows the MAC, which follows ports
        )
        routes = frozenset(
            (str(r.get("dst")), str(r.get("prefsrc", "")), str(r.get("protocol", "")))
            for r in json.loads(route_json or "[]")
        )
        chains: set[tuple[str, str]] = set()
        rules: set[tuple[str, str]] = set()
        for table, text in iptables.items():
            for line in text.splitlines():
                if line.startswith(":DOCKER"):
                    chains.add((table, line.split()[0][1:]))
                elif line.startswith("-A") and f" {BRIDGE} " in f"{line} ":
                    rules.add((table, line))
        index = link.get("ifindex")
        return cls(
            int(index) if index is not None else None, addresses, routes, frozenset(chains), frozenset(rules)
        )

    def differences(self, now: HostNet) -> list[str]:
        found = []
        if now.ifindex != self.ifindex:
            found.append(f"{BRIDGE} ifindex {self.ifindex} -> {now.ifindex} (deleted or recreated)")
        for name in ("addresses", "routes", "chains", "bridge_rules"):
            before, after = getattr(self, name), getattr(now, name)
            if before != after:
                found.append(f"{name}: lost {sorted(before - after)}, gained {sorted(after - before)}")
        return found

    def check(self, when: str) -> None:
        """Fail when the host's Docker networking is not what ``record()`` saw."""
        changed = self.differences(HostNet.record())
        if changed:
            raise AssertionError(f"the host's Docker networking changed {when}: " + "; ".join(changed))


def _run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return result.stdout if result.returncode == 0 else ""
