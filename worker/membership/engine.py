"""Replicates waiting for the Docker engine, as the operator sees them: a gauge and a ``/health`` problem.

A stage whose engine went away (dockerd stopped, restarting or killed) waits for it and starts over
(``worker.replicate.work``); meanwhile ``iexec_worker_engine_waits`` counts those replicates and
``/health`` names the interrupted operation and the fix under ``problems.engine``.
"""

from __future__ import annotations

from worker.membership.health import Health
from worker.metrics import Metrics


class EngineWaits:
    """Called by ``TaskWork`` with the tasks waiting for the engine, and why, whenever that changes."""

    def __init__(self, health: Health, metrics: Metrics) -> None:
        self._health = health
        self._metrics = metrics

    def __call__(self, tasks: set[str], why: str | None) -> None:
        self._metrics.engine_waits.set(len(tasks))
        if not tasks:
            self._health.problems.pop("engine", None)
        elif why is not None:
            self._health.problems["engine"] = (
                f"{len(tasks)} replicate(s) wait for the Docker engine to answer again ({why}): check that dockerd "
                "runs (systemctl status docker, its log) and that DOCKER_HOST names it"
            )
