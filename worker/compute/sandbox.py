"""What an app container may use: the sandbox profiles and the bounds they derive from the machine.

In a mixed pool a worker that fails an app the Java worker computes contributes another result and loses
its stake, so the default profile must never break such an app; stricter bounds are the operator's choice.

``compatible`` (default)
    Every capability dropped, ``no-new-privileges``, at most ``IEXEC_WORKER_CONTAINER_PIDS_LIMIT``
    processes (as before); memory bounded at twice the machine's per-slot share (swap included), CPU at
    twice the per-slot share of the CPUs, each capped at the machine; ``/iexec_out`` bounded in size
    (10 GiB, the container is killed past it); the image's own user and a writable root filesystem.
    The app network (``worker.compute.firewall``) keeps apps off private, link-local and loopback
    addresses, the host and each other.
``strict`` (opt-in)
    The same, with the per-slot share itself for memory and CPU, at most 256 processes, a read-only root
    filesystem with a 256 MiB ``/tmp`` (tmpfs, counted in the memory bound), a non-root user (nobody, or
    the worker's own user when it is not root) owning ``/iexec_out`` alone, and 1 GiB of output.
    Breaks apps that write outside ``/iexec_out`` and ``/tmp``, need root in the container, or more
    than their share of the machine.

The ``IEXEC_WORKER_CONTAINER_*`` settings, when set, win over the profile's value.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 1024**3
MIB = 1024**2
NOBODY = 65534
COMPATIBLE_OUTPUT_BYTES = 10 * GIB
STRICT_OUTPUT_BYTES = 1 * GIB
STRICT_TMP_BYTES = 256 * MIB
STRICT_PIDS = 256


class SandboxProfile(enum.StrEnum):
    COMPATIBLE = "compatible"
    STRICT = "strict"


@dataclass(frozen=True)
class Sandbox:
    """The bounds and isolation of every app container of this worker."""

    memory_bytes: int | None = None
    nano_cpus: int | None = None
    pids_limit: int | None = 1024
    network: str | None = None
    read_only_rootfs: bool = False
    tmp_bytes: int | None = None
    """Size of the tmpfs mounted on /tmp (with a read-only root filesystem); None mounts none."""
    user: str | None = None
    """``uid:gid`` the app runs as; None keeps the image's user."""
    output_max_bytes: int | None = None
    """Bytes the app may write to /iexec_out before it is killed; None leaves it unbounded."""
    profile: SandboxProfile = SandboxProfile.COMPATIBLE

    def container_options(self) -> dict[str, Any]:
        """Keyword arguments of ``ContainerSpec`` for an app container."""
        return {
            "memory_bytes": self.memory_bytes,
            "nano_cpus": self.nano_cpus,
            "pids_limit": self.pids_limit,
            "network": self.network,
            "read_only_rootfs": self.read_only_rootfs,
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={self.tmp_bytes}"} if self.tmp_bytes else {},
            "user": self.user,
            "output_max_bytes": self.output_max_bytes,
        }

    def prepare_output(self, iexec_out: Path) -> None:
        """Give ``iexec_out`` to the app's user: its alone when the sandbox names one, else open to any user.

        Every capability is dropped, so even root in the container cannot bypass modes: with the image's
        own user (unknown in advance) the folder must be writable by all; the task folder above it is the
        worker's alone (0700), so no local user reaches it.
        """
        if self.user is None:
            os.chmod(iexec_out, 0o777)
            return
        uid, _, gid = self.user.partition(":")
        if os.geteuid() == 0:
            os.chown(iexec_out, int(uid), int(gid or uid))
        os.chmod(iexec_out, 0o700)


def machine_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 4 * GIB


def sandbox_for(
    profile: SandboxProfile,
    *,
    slots: int,
    cpus: int,
    memory: int,
    network: str | None,
    memory_limit: int | None = None,
    cpu_limit: float | None = None,
    pids_limit: int = 1024,
    output_limit: int | None = None,
) -> Sandbox:
    """The sandbox of ``profile`` on a machine of ``memory`` bytes and ``cpus`` CPUs computing ``slots`` tasks.

    ``memory_limit``, ``cpu_limit`` and ``output_limit`` are the operator's explicit settings (None: the
    profile decides).
    """
    slots = max(slots, 1)
    # What the worker, dockerd and the system keep for themselves.
    usable = max(memory - min(GIB, memory // 4), 256 * MIB)
    share = usable // slots
    cpu_share = max(cpus / slots, 1.0)
    if profile is SandboxProfile.STRICT:
        bound_memory, bound_cpus = share, cpu_share
        pids = min(pids_limit, STRICT_PIDS)
        output = STRICT_OUTPUT_BYTES
        user = f"{NOBODY}:{NOBODY}" if os.geteuid() == 0 else f"{os.geteuid()}:{os.getegid()}"
    else:
        bound_memory, bound_cpus = min(usable, 2 * share), min(float(cpus), 2 * cpu_share)
        pids, output, user = pids_limit, COMPATIBLE_OUTPUT_BYTES, None
    strict = profile is SandboxProfile.STRICT
    return Sandbox(
        memory_bytes=memory_limit or bound_memory,
        nano_cpus=int((cpu_limit or bound_cpus) * 1e9),
        pids_limit=pids,
        network=network or None,
        read_only_rootfs=strict,
        tmp_bytes=STRICT_TMP_BYTES if strict else None,
        user=user,
        output_max_bytes=output_limit or output,
        profile=profile,
    )
