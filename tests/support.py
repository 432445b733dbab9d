"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable


async def until(
    predicate: Callable[[], bool | Awaitable[bool]],
    *,
    within: float = 10.0,
    every: float = 0.02,
    what: str = "",
) -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {within} s: {what or predicate}")
        await asyncio.sleep(every)


def free_port() -> int:
    """A loopback port nothing listens on now: a server of the test may take it, a client finds it closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
