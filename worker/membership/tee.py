"""What this machine offers for TEE tasks, found at start: the flags the worker registers with.

The scheduler hands SCONE and Gramine tasks only to workers registered ``teeEnabled`` and TDX tasks only
to ``tdxEnabled`` ones (iexec-core ``Worker.getExcludedTags``). Both flags come from what was found here,
never from a wish: SGX from the driver mode's devices and the start-up container check (a worker
configured for SGX without it refuses to start); TDX when the machine is a TD guest (``/dev/tdx_guest``)
with an executable secret provider agent, or as the operator forces it. The reference registers
``tdxEnabled`` always; this worker does not.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from worker.compute import SgxDevices, SgxUnavailable
from worker.protocol.errors import ConfigurationError
from worker.protocol.tee import SgxDriverMode

log = logging.getLogger("iexec.worker")

TDX_GUEST_DEVICES = (Path("/dev/tdx_guest"), Path("/dev/tdx-guest"))


@dataclass(frozen=True)
class TeeCapabilities:
    sgx: SgxDevices
    tdx: bool
    tdx_agent: Path

    @property
    def any(self) -> bool:
        return self.sgx.enabled or self.tdx

    def lines(self) -> list[str]:
        """What was detected, one line each, as the start-up log (and a doctor) shows it."""
        if self.sgx.enabled:
            sgx = f"SGX {self.sgx.mode.value}: {', '.join(self.sgx.devices)} reach containers -> SCONE and Gramine tasks"
        else:
            sgx = "SGX: off (IEXEC_WORKER_SGX_DRIVER_MODE=NONE) -> no SCONE nor Gramine task"
        if self.tdx:
            tdx = f"TDX: on, secret provider agent {self.tdx_agent} -> TDX tasks"
        else:
            tdx = "TDX: off (not a TDX guest, or IEXEC_WORKER_TDX_ENABLED=false) -> no TDX task"
        return [sgx, tdx]


async def detect_tee(
    probe_sgx: Callable[[], Awaitable[SgxDevices]],
    *,
    sgx_mode: SgxDriverMode,
    tdx_mode: str,
    tdx_agent: Path,
    tdx_guest: bool | None = None,
) -> TeeCapabilities:
    """The TEE flags of this worker; raises ConfigurationError (exit 2) when a configured TEE is absent."""
    try:
        sgx = await probe_sgx()
    except SgxUnavailable as exc:
        raise ConfigurationError(
            f"SGX required but not supported by this host, the worker does not start: {exc}"
        ) from exc
    agent_ok = await asyncio.to_thread(_executable, tdx_agent)
    if tdx_mode == "false":
        tdx = False
    elif tdx_mode == "true":
        if not agent_ok:
            raise ConfigurationError(
                f"IEXEC_WORKER_TDX_ENABLED=true but the secret provider agent {tdx_agent} is not an executable "
                "file: install it or set TEE_TDX_SECRET_PROVIDER_AGENT"
            )
        tdx = True
    else:
        guest = tdx_guest if tdx_guest is not None else await asyncio.to_thread(_tdx_guest)
        tdx = guest and agent_ok
        if guest and not agent_ok:
            log.warning("this machine is a TDX guest but %s is not executable: no TDX task", tdx_agent)
    if sgx_mode is not SgxDriverMode.NONE and tdx:
        log.warning("both SGX and TDX found: the scheduler then excludes no TEE tag for this worker")
    return TeeCapabilities(sgx=sgx, tdx=tdx, tdx_agent=tdx_agent)


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _tdx_guest() -> bool:
    return any(device.exists() for device in TDX_GUEST_DEVICES)
