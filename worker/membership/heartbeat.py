"""Pings the scheduler every 10 s, as the reference does, and watches its configuration fingerprint.

The ping's answer is a hash of the scheduler's public configuration (iexec-core
``PublicConfigurationService``): when it changes while no replicate holds a computing slot, the
worker joins again with the new configuration; while replicates compute, it waits for a later ping.
"""

from __future__ import annotations

import asyncio
import logging
import time

from worker.membership.health import Health
from worker.membership.ports import Push, Replicates, Scheduler
from worker.membership.waiting import sleep_or_stop
from worker.metrics import Metrics
from worker.protocol.errors import SchedulerError

log = logging.getLogger("iexec.worker")

PING_PERIOD = 10.0


class Heartbeat:
    def __init__(
        self,
        scheduler: Scheduler,
        replicates: Replicates,
        push: Push,
        health: Health,
        metrics: Metrics,
        *,
        period: float = PING_PERIOD,
    ) -> None:
        self._scheduler = scheduler
        self._replicates = replicates
        self._push = push
        self._health = health
        self._metrics = metrics
        self._period = period
        self._first_hash: str | None = None

    async def beat(self) -> bool:
        """One ping; True when the scheduler's configuration changed and the worker should join again."""
        try:
            config_hash = await self._scheduler.ping()
        except SchedulerError as exc:
            self._metrics.scheduler_errors.labels("ping").inc()
            self._health.problems["scheduler"] = f"ping failed: {exc}"
            log.warning("ping failed: %s", exc)
            config_hash = None
        else:
            self._health.problems.pop("scheduler", None)
            self._health.last_ping_ok = time.time()
            self._metrics.last_ping.set(self._health.last_ping_ok)
        connected = self._push.is_connected
        self._health.push_connected = connected
        self._metrics.push_connected.set(1 if connected else 0)
        if not config_hash:
            return False
        if self._first_hash is None:
            self._first_hash = config_hash
            return False
        return config_hash.lower() != self._first_hash.lower() and self._replicates.computing == 0

    async def run(self, stop: asyncio.Event, rejoin: asyncio.Event) -> None:
        """Ping until ``stop``; sets ``rejoin`` and returns when the configuration changed."""
        while not stop.is_set():
            if await self.beat():
                log.warning("the scheduler's configuration changed: joining again")
                rejoin.set()
                return
            if await sleep_or_stop(stop, self._period):
                return
