"""The process's lifecycle: signals that ask for a stop, and one event that follows several others.

SIGTERM/SIGINT ask for a stop: in-flight replicates are drained for a grace period. A second
signal forces the stop by cancelling every task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

log = logging.getLogger("iexec.worker")


def install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    count = 0

    def on_signal(signum: int) -> None:
        nonlocal count
        count += 1
        if count == 1:
            log.info(
                "%s received: stopping after in-flight work (send again to force)",
                signal.Signals(signum).name,
            )
            stop.set()
        else:
            log.warning("second signal: stopping now")
            for task in asyncio.all_tasks(loop):
                task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signum)


async def first_of(*events: asyncio.Event, then: asyncio.Event) -> None:
    """Set ``then`` as soon as any of ``events`` is set."""
    waiters = {asyncio.ensure_future(event.wait()) for event in events}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    then.set()
