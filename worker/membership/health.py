"""What ``/health`` reports: the policies update it as they go, the HTTP endpoint reads it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Health:
    started_at: float = field(default_factory=time.time)
    last_ping_ok: float | None = None
    joined: bool = False
    out_of_gas: bool = False
    push_connected: bool = False
    stale_after: float = 60.0
    problems: dict[str, str] = field(default_factory=dict)

    def report(self) -> tuple[bool, dict[str, Any]]:
        now = time.time()
        ping_age = None if self.last_ping_ok is None else round(now - self.last_ping_ok, 1)
        alive = self.joined and ping_age is not None and ping_age < self.stale_after
        body: dict[str, Any] = {
            "status": "UP" if alive else "DOWN",
            "joined": self.joined,
            "lastPingSecondsAgo": ping_age,
            "outOfGas": self.out_of_gas,
            "pushChannelConnected": self.push_connected,
            "uptimeSeconds": round(now - self.started_at, 1),
            "problems": dict(self.problems),
        }
        return alive, body
