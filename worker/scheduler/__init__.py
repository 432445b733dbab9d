"""Scheduler: the client of iexec-core's worker-facing REST API and its push channel."""
