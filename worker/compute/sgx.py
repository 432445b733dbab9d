"""SGX detection: which device nodes the enclaves get, checked on the host and through Docker.

As the reference (iexec-worker ``SgxService``, iexec-commons-containers ``SgxUtils``): with a driver mode other
than NONE, a short container is started with the mode's devices and must find them, or the worker does not
start. Before that the host itself is asked, so the message names the missing device rather than a
container's exit code. ``devices`` replaces the mode's paths (stand-in devices in tests, or a host that
names them differently); the in-kernel names ``/dev/sgx_enclave`` and ``/dev/sgx_provision`` are taken
when NATIVE's ``/dev/sgx/*`` links are absent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from worker.compute.docker import DockerEngine
from worker.compute.errors import ComputeError
from worker.compute.model import ContainerSpec, RegistryAuth
from worker.protocol.tee import LEGACY_SGX_DRIVER_VERSION, SGX_KERNEL_DEVICES, SgxDriverMode

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 60.0
CHECK_PULL_TIMEOUT = 120.0


class SgxUnavailable(ComputeError):
    """The worker is configured for SGX and this host cannot give it to containers."""


@dataclass(frozen=True)
class SgxDevices:
    mode: SgxDriverMode
    devices: tuple[str, ...]

    @property
    def enabled(self) -> bool:
        return bool(self.devices)


def _is_char_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def host_devices(mode: SgxDriverMode, override: Sequence[str] = ()) -> tuple[str, ...]:
    """The device paths for ``mode`` as this host has them; raises SgxUnavailable naming what is missing."""
    if mode is SgxDriverMode.NONE:
        return ()
    devices = tuple(override) or mode.devices
    if (
        not override
        and mode is SgxDriverMode.NATIVE
        and not all(map(_is_char_device, devices))
        and all(map(_is_char_device, SGX_KERNEL_DEVICES))
    ):
        devices = SGX_KERNEL_DEVICES
    missing = [device for device in devices if not _is_char_device(device)]
    if missing:
        raise SgxUnavailable(
            f"IEXEC_WORKER_SGX_DRIVER_MODE={mode.value} but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not a character device on this host: install and load the "
            "SGX driver (and enable SGX in the BIOS), or set IEXEC_WORKER_SGX_DRIVER_MODE=NONE"
        )
    if mode is SgxDriverMode.LEGACY and not override and not Path(LEGACY_SGX_DRIVER_VERSION).exists():
        raise SgxUnavailable(
            f"IEXEC_WORKER_SGX_DRIVER_MODE=LEGACY but {LEGACY_SGX_DRIVER_VERSION} is missing: the isgx driver "
            "is not loaded (modprobe isgx), or use NATIVE with the in-kernel driver"
        )
    return devices


async def detect_sgx(
    engine: DockerEngine,
    mode: SgxDriverMode,
    *,
    override: Sequence[str] = (),
    check_image: str,
    container_name: str,
    labels: dict[str, str] | None = None,
    auth: RegistryAuth | None = None,
) -> SgxDevices:
    """The SGX devices containers get, after the reference's check; raises SgxUnavailable otherwise."""
    devices = await asyncio.to_thread(host_devices, mode, override)
    if not devices:
        return SgxDevices(mode, ())
    try:
        await engine.pull(check_image, auth=auth, pull_timeout=CHECK_PULL_TIMEOUT)
    except ComputeError as exc:
        raise SgxUnavailable(
            f"the SGX check image {check_image} cannot be pulled ({exc}); make it available or set "
            "IEXEC_WORKER_SGX_CHECK_IMAGE to an image with /bin/sh that this host has"
        ) from exc
    script = " && ".join(f"test -e {shlex.quote(device)}" for device in devices)
    spec = ContainerSpec(
        name=container_name,
        image=check_image,
        timeout=CHECK_TIMEOUT,
        entrypoint=("/bin/sh", "-c"),
        cmd=(script,),
        devices=devices,
        labels=labels or {},
        network="none",
    )
    try:
        result = await engine.run(spec)
    except ComputeError as exc:
        raise SgxUnavailable(f"SGX check container could not run with {', '.join(devices)}: {exc}") from exc
    if result.timed_out or result.exit_code != 0:
        raise SgxUnavailable(
            f"SGX check container did not see {', '.join(devices)} (exit code {result.exit_code}): Docker cannot "
            "pass these devices to containers; check the SGX driver and the engine's device permissions"
        )
    log.info("SGX: %s mode, devices %s passed to containers", mode.value, ", ".join(devices))
    return SgxDevices(mode, devices)
