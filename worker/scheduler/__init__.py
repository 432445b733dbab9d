"""Scheduler: the client of iexec-core's worker-facing REST API and its push channel."""

from worker.scheduler.client import SchedulerClient, UpdateKind, UpdateOutcome

__all__ = ["SchedulerClient", "UpdateKind", "UpdateOutcome"]
