"""The operator's commands beside ``run``: doctor, join, account and status, wired over the adapters."""
