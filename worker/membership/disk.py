"""Free space under the worker's base folder: below a minimum, the worker asks for no more replicates.

Every task downloads, computes and zips under ``IEXEC_WORKER_BASE_DIR``, and the replicate store lives
there too. A replicate taken on a nearly full disk fails half-way (and the worker pays for nothing), so
the demand pauses while the file system holding that folder has less than
``IEXEC_WORKER_BASE_DIR_MIN_FREE_BYTES`` free, and resumes by itself once space is back. ``/health``
names the folder, the free and the needed bytes and the fix under ``problems.disk``; the metrics carry
the free bytes and a low-disk flag. A replicate store write waiting for space (see ``worker.replicate.store``)
is reported the same way, under ``problems.store``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from worker.membership.health import Health
from worker.membership.waiting import sleep_or_stop
from worker.metrics import Metrics
from worker.replicate.work import free_bytes

log = logging.getLogger("iexec.worker")

DISK_PERIOD = 5.0
"""Seconds between two looks at the free space (a ``statvfs``: cheap)."""


class DiskSpace:
    """Watches the free space under ``folder`` against ``min_free`` bytes; ``low`` pauses the demand.

    ``store_full`` returns what a store write waiting for space waits for (None when none does).
    ``measure`` is injectable for the unit tests (a fake file system); it defaults to :func:`free_bytes`.
    """

    def __init__(
        self,
        folder: Path,
        min_free: int,
        health: Health,
        metrics: Metrics,
        *,
        store_full: Callable[[], str | None] = lambda: None,
        measure: Callable[[Path], int | None] = free_bytes,
        period: float = DISK_PERIOD,
    ) -> None:
        self._folder = folder
        self._min_free = min_free
        self._health = health
        self._metrics = metrics
        self._store_full = store_full
        self._measure = measure
        self._period = period
        self.free: int | None = None
        metrics.disk_min_free_bytes.set(min_free)

    @property
    def low(self) -> bool:
        return self._health.disk_low

    async def check(self) -> bool:
        """Measure once, update health and metrics; True while the disk is below its minimum."""
        free = await asyncio.to_thread(self._measure, self._folder)
        self.free = free
        low = free is not None and free < self._min_free
        if free is not None:
            self._metrics.disk_free_bytes.set(free)
        if low != self._health.disk_low:
            if low:
                log.error("%s", self._problem(free))
            else:
                log.warning(
                    "free space under %s back to %s bytes: asking for replicates again", self._folder, free
                )
        self._health.disk_low = low
        self._metrics.disk_low.set(int(low))
        if low:
            self._health.problems["disk"] = self._problem(free)
        else:
            self._health.problems.pop("disk", None)
        waiting = self._store_full()
        self._metrics.store_full.set(int(waiting is not None))
        if waiting is not None:
            self._health.problems["store"] = waiting
        else:
            self._health.problems.pop("store", None)
        return low

    def _problem(self, free: int | None) -> str:
        return (
            f"disk low: {free} bytes free under {self._folder}, {self._min_free} needed "
            "(IEXEC_WORKER_BASE_DIR_MIN_FREE_BYTES): no replicate is asked for until space is freed; delete "
            "unused files or images on that file system, or move IEXEC_WORKER_BASE_DIR to a larger one"
        )

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            await self.check()
            if await sleep_or_stop(stop, self._period):
                return
