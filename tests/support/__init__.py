"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web


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


@asynccontextmanager
async def serving_app(
    app: web.Application, *, port: int = 0, host: str = "127.0.0.1", **runner_options: Any
) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 for the block (``port`` 0: any free one); yields its base URL.

    ``host`` is another address of this host: the gateway of a Docker network the test's platform made,
    for containers to reach it."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        host, bound = runner.addresses[0][:2]
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()
