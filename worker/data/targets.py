"""The HTTP side of ``worker.protocol.targets``: name resolution for the checks, and a session whose
connections can only go to addresses the policy allows.

:func:`check_target` resolves a URL's host and refuses it with a message naming the address and the
setting; it runs before the request and on every redirect hop. The session of :func:`guarded_session`
resolves through :class:`GuardedResolver`, which drops refused addresses at connect time: a name that
answered a public address to the check and a private one to the connection (DNS rebinding) still cannot
reach the private one.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from worker.protocol.targets import TargetPolicy, TargetRefused


async def resolve_host(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


async def check_target(url: URL, policy: TargetPolicy) -> None:
    """Raise ``TargetRefused`` unless ``url`` leads only to addresses ``policy`` allows."""
    await policy.check(url, resolve_host)


class GuardedResolver(AbstractResolver):
    """Resolves as aiohttp does, then keeps only the addresses the policy allows for that host."""

    def __init__(self, policy: TargetPolicy) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._policy.is_trusted(host, port):
            return results
        kept = [result for result in results if self._policy.refusal(result["host"]) is None]
        if not kept:
            reasons = {self._policy.refusal(result["host"]) for result in results}
            raise OSError(f"{host}: {'; '.join(sorted(r for r in reasons if r)) or 'no address'}")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def guarded_session(policy: TargetPolicy, **options: Any) -> aiohttp.ClientSession:
    """A session for requests whose URLs strangers chose (data, input files, the deal's result proxy)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=GuardedResolver(policy)), **options)


__all__ = ["GuardedResolver", "TargetRefused", "check_target", "guarded_session", "resolve_host"]
