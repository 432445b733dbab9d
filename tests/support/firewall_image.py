"""A firewall helper image built from the host's own files: busybox ``sh`` and the host's ``iptables``.

What an operator names in IEXEC_WORKER_FIREWALL_IMAGE is any image holding ``sh`` and ``iptables``; the
tests have no registry, so they assemble one ``FROM scratch`` from the host's binaries, the libraries
``ldd`` lists for them, and the iptables extensions.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import tarfile
from pathlib import Path

from worker.compute import DockerEngine

TAG = "iexec-test/firewall-helper:1"
_DOCKERFILE = b"FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/sbin:/bin\n"


def _context() -> bytes:
    iptables = Path(os.path.realpath("/usr/sbin/iptables"))
    libraries = re.findall(r"(/\S+\.so[.\d]*)", subprocess.run(
        ["ldd", str(iptables)], capture_output=True, text=True, check=True
    ).stdout)  # fmt: skip
    extensions = Path("/usr/lib/x86_64-linux-gnu/xtables")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(_info("Dockerfile", len(_DOCKERFILE)), io.BytesIO(_DOCKERFILE))
        for folder in ("rootfs/run", "rootfs/tmp", "rootfs/etc"):
            tar.addfile(_info(folder, kind=tarfile.DIRTYPE))
        files = [Path("/usr/bin/busybox"), iptables, *map(Path, libraries)]
        files += sorted(extensions.glob("*.so")) if extensions.is_dir() else []
        for path in files:
            tar.add(os.path.realpath(path), arcname=f"rootfs{path}")
        tar.addfile(_info("rootfs/bin/sh", kind=tarfile.SYMTYPE, link="/usr/bin/busybox"))
        for name in ("iptables", "ip6tables"):
            tar.addfile(_info(f"rootfs/usr/sbin/{name}", kind=tarfile.SYMTYPE, link=str(iptables)))
    return buffer.getvalue()


def _info(name: str, size: int = 0, *, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = size, kind, link
    info.mode = 0o755
    return info


async def firewall_helper_image(engine: DockerEngine) -> str:
    if await engine.local_image(TAG) is None:
        await engine.build_image(await asyncio.to_thread(_context), tag=TAG)
    return TAG
