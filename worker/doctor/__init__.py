"""Pre-flight checks of a worker machine (``iexec-worker doctor``), over ports, unit-tested with fakes."""

from worker.doctor.checks import (
    Check,
    Doctor,
    DoctorSettings,
    Report,
    Result,
    eth,
    eth_floor,
    eth_needed,
    gwei,
)
from worker.doctor.ports import Chain, Docker, Host, LoadedWallet, Ports, Scheduler, Wallet

__all__ = [
    "Chain",
    "Check",
    "Docker",
    "Doctor",
    "DoctorSettings",
    "Host",
    "LoadedWallet",
    "Ports",
    "Report",
    "Result",
    "Scheduler",
    "Wallet",
    "eth",
    "eth_floor",
    "eth_needed",
    "gwei",
]
