"""A network namespace made and removed by the test: the only "outside" hosts a network test may reach.

One namespace, joined to the host by a veth pair on a random 10.x.y.0/30, holds servers on addresses that
stand for what an app must not reach (a private address, a link-local "cloud metadata" address, a chain
node on a private network) and one that stands for the public internet: an address of 203.0.113.0/24,
a range reserved for documentation and never routed on the real internet. The host routes those addresses
through the veth. Everything is removed on exit, also on failure: deleting the namespace removes the veth
pair, and the routes go with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tests.support import until

PORT = 8080


async def sh(*args: str, check: bool = True) -> str:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    if check and process.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({process.returncode}): {text}")
    return text


@dataclass(frozen=True)
class Lab:
    namespace: str
    host_side: str
    """The host's address on the veth (10.x.y.1)."""
    private: str
    """A private address in the namespace (10.x.y.2, its veth address)."""
    node: str
    """Another private address (10.x.y+1.1), standing for a chain node on the operator's network."""
    link_local: str
    """169.254.a.b: what cloud metadata looks like."""
    public: str
    """203.0.113.c: stands for the public internet."""

    @property
    def private_network(self) -> str:
        return ".".join(self.private.split(".")[:2]) + ".0.0/16"


@contextlib.asynccontextmanager
async def network_lab() -> AsyncIterator[Lab]:
    tag = uuid.uuid4().hex[:6]
    namespace, host_if, ns_if = f"iexec-t-{tag}", f"vh{tag}", f"vn{tag}"
    a, b = random.randint(200, 250), random.randrange(0, 254, 2)
    lab = Lab(
        namespace=namespace,
        host_side=f"10.{a}.{b}.1",
        private=f"10.{a}.{b}.2",
        node=f"10.{a}.{b + 1}.1",
        link_local=f"169.254.{random.randint(1, 254)}.{random.randint(1, 254)}",
        public=f"203.0.113.{random.randint(1, 254)}",
    )
    servers: list[asyncio.subprocess.Process] = []
    try:
        await sh("ip", "netns", "add", namespace)
        await sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", namespace)
        await sh("ip", "addr", "add", f"{lab.host_side}/30", "dev", host_if)
        await sh("ip", "link", "set", host_if, "up")
        inside = ("ip", "netns", "exec", namespace)
        await sh(*inside, "ip", "addr", "add", f"{lab.private}/30", "dev", ns_if)
        await sh(*inside, "ip", "link", "set", ns_if, "up")
        await sh(*inside, "ip", "link", "set", "lo", "up")
        for address in (lab.node, lab.link_local, lab.public):
            await sh(*inside, "ip", "addr", "add", f"{address}/32", "dev", "lo")
            await sh("ip", "route", "add", f"{address}/32", "via", lab.private, "dev", host_if)
        await sh(*inside, "ip", "route", "add", "default", "via", lab.host_side)
        server = await asyncio.create_subprocess_exec(
            *inside, sys.executable, "-m", "http.server", str(PORT), "--bind", "0.0.0.0",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        servers.append(server)

        async def listening() -> bool:
            return f":{PORT} " in await sh(*inside, "ss", "-ltnH", check=False)

        await until(listening, what=f"the lab's server on port {PORT}")
        yield lab
    finally:
        for server in servers:
            with contextlib.suppress(ProcessLookupError):
                server.kill()
            await server.wait()
        await sh("ip", "netns", "del", namespace, check=False)
        await sh("ip", "link", "del", host_if, check=False)
