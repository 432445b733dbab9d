"""iExec worker: joins a workerpool, computes replicates in Docker and proves results on chain."""

__version__ = "0.1.0"

PROTOCOL_VERSION = "9.2.0"
"""The iexec-worker release this worker is interchangeable with (docs/compatibility.md): what it reports
where the Java worker reports its own version (GET /version, iexec-core's requiredWorkerVersion)."""
