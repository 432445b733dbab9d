"""iExec worker: joins a workerpool, computes replicates in Docker and proves results on chain."""

__version__ = "0.1.0"
