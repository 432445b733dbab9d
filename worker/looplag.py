"""Event-loop lag: how late the loop runs a callback that was due, sampled every ``period`` seconds.

Everything the worker does shares one thread; a call that blocks it (hashing, zipping, a synchronous
library call) delays every replicate, the heartbeat and the HTTP probes alike. The sampler sleeps for
``period`` and measures how much later than that it woke up: that delay is what any other callback due
at the same time waited. Each delay goes to ``observe`` (a histogram in ``worker.metrics``).

It sleeps rather than waiting on a stop event: a 10 ms sleep ends soon enough on its own, and a plain
sleep is the cheapest wake-up the loop has (the sampler must not cost what it measures). It runs until
cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

DEFAULT_PERIOD = 0.01


async def sample_loop_lag(observe: Callable[[float], None], *, period: float = DEFAULT_PERIOD) -> None:
    """Report the lag of each wake-up, in seconds, to ``observe`` until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + period
        await asyncio.sleep(period)
        observe(max(loop.time() - due, 0.0))
