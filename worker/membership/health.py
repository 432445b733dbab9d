"""What the worker says about itself to orchestrators: ``/livez``, ``/readyz`` and ``/health``.

The HTTP server starts before anything else, so an orchestrator sees the worker alive while it
decrypts its wallet or patiently retries a scheduler that is down, instead of killing it for not
answering. Liveness is "the process serves requests"; readiness is "joined, and the scheduler
answered a ping recently". ``stage`` and ``detail`` say which start-up step the worker is in and,
while it waits, what for (``waiting for the scheduler at … (attempt 3, next in 8 s)``). The
policies update this object as they go; the HTTP endpoints only read it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from worker.protocol.redact import redact


class StartStage(StrEnum):
    STARTING = "starting"
    WALLET = "wallet"
    SCHEDULER = "scheduler"
    CHAIN = "chain"
    REGISTERING = "registering"
    RESUMING = "resuming"
    WORKING = "working"
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class FundsSeen:
    """The wallet as last read by the funds watch: wei of ETH, nRLC of stake, the gas price in use."""

    eth_wei: int
    stake_nrlc: int | None
    locked_nrlc: int | None
    gas_price_wei: int | None
    at: float


@dataclass
class Health:
    started_at: float = field(default_factory=time.time)
    last_ping_ok: float | None = None
    joined: bool = False
    out_of_gas: bool = False
    push_connected: bool = False
    stale_after: float = 60.0
    problems: dict[str, str] = field(default_factory=dict)
    stage: StartStage = StartStage.STARTING
    detail: str = "starting"
    stage_since: float = field(default_factory=time.time)
    funds: FundsSeen | None = None
    disk_low: bool = False

    def enter(self, stage: StartStage, detail: str) -> None:
        """Start-up (or stop) moved to ``stage``; ``detail`` says what it does there."""
        if stage is not self.stage:
            self.stage_since = time.time()
        self.stage = stage
        self.detail = detail

    def waiting(self, detail: str) -> None:
        """Same stage, a new reason to wait (an attempt failed, the next one is scheduled)."""
        self.detail = detail

    @property
    def ready(self) -> bool:
        ping_age = None if self.last_ping_ok is None else time.time() - self.last_ping_ok
        return self.joined and ping_age is not None and ping_age < self.stale_after

    def liveness(self) -> dict[str, Any]:
        return {"status": "alive", "stage": self.stage.value, "detail": self.detail}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        ready = self.ready
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "stage": self.stage.value}
        if not ready:
            body["waitingFor"] = self.detail if not self.joined else "a successful ping of the scheduler"
        return ready, body

    def report(self) -> tuple[bool, dict[str, Any]]:
        now = time.time()
        ping_age = None if self.last_ping_ok is None else round(now - self.last_ping_ok, 1)
        alive = self.ready
        body: dict[str, Any] = {
            "status": "UP" if alive else "DOWN",
            "stage": self.stage.value,
            "detail": self.detail,
            "stageSeconds": round(now - self.stage_since, 1),
            "joined": self.joined,
            "lastPingSecondsAgo": ping_age,
            "outOfGas": self.out_of_gas,
            "diskLow": self.disk_low,
            "pushChannelConnected": self.push_connected,
            "uptimeSeconds": round(now - self.started_at, 1),
            # Problems quote errors, which quote URLs: /health is unauthenticated.
            "problems": {key: redact(text) for key, text in self.problems.items()},
        }
        return alive, body
