"""Small app images built on the host, without any registry: the devnet demo and the tests run them.

Each image is ``FROM scratch`` with the host's static busybox as ``/bin/busybox``, one symlink per applet the
scripts use, and an ``/entrypoint.sh`` run by ``/bin/sh``; the container's arguments reach the script as
``"$@"``. Images are built through ``DockerEngine.build_image`` (the Docker engine's build API, so no docker CLI
is needed) from a tar context assembled in memory with fixed timestamps and owners. The sha256 of that context
is stored in the image label ``iexec-devnet.content-sha256``: an image whose label matches is not rebuilt.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from worker.compute import DockerEngine
from worker.protocol.errors import WorkerError

BUSYBOX = Path("/usr/bin/busybox")
CONTENT_LABEL = "iexec-devnet.content-sha256"
APPLETS = (
    "[", "awk", "cat", "cp", "cut", "date", "dd", "echo", "env", "false", "grep", "head", "hostname", "id",
    "ln", "ls", "mkdir", "mv", "nproc", "printf", "rm", "sed", "seq", "sh", "sha256sum", "sleep", "sort",
    "tail", "tee", "test", "touch", "tr", "true", "wc", "xargs", "yes",
)  # fmt: skip
_DOCKERFILE = """\
FROM scratch
COPY rootfs/ /
ENV PATH=/bin
ENTRYPOINT ["/bin/sh", "/entrypoint.sh"]
"""


class ImageError(WorkerError):
    """A devnet image could not be built."""


@dataclass(frozen=True, slots=True)
class AppImage:
    """A named test app: ``script`` is its entrypoint, run by busybox ``sh`` with the container arguments."""

    tag: str
    script: str
    description: str
    extra_applets: tuple[str, ...] = ()
    """Applets beyond APPLETS (kept apart so the other images' content, and ids, never change)."""


HELLO = AppImage(
    tag="iexec-devnet/hello:1",
    description="writes 'Hello, <args>!' to /iexec_out/result.txt and a computed.json pointing at it",
    script="""\
set -e
message="$*"
[ -n "$message" ] || message=World
echo "Hello, $message!" > /iexec_out/result.txt
printf '{"deterministic-output-path":"/iexec_out/result.txt"}\\n' > /iexec_out/computed.json
echo "hello: wrote /iexec_out/result.txt for task ${IEXEC_TASK_ID:-unknown}"
""",
)
FAIL = AppImage(
    tag="iexec-devnet/fail:1",
    description="prints to stderr and exits with code $1 (default 3) without writing a result",
    script="""\
echo "fail: exiting with code ${1:-3} on purpose" >&2
exit "${1:-3}"
""",
)
SLEEP = AppImage(
    tag="iexec-devnet/sleep:1",
    description="sleeps $1 seconds (default 3600), then writes a result",
    script="""\
echo "sleep: sleeping ${1:-3600}s"
sleep "${1:-3600}"
echo slept > /iexec_out/result.txt
printf '{"deterministic-output-path":"/iexec_out/result.txt"}\\n' > /iexec_out/computed.json
""",
)
ENV = AppImage(
    tag="iexec-devnet/env:1",
    description="writes its sorted environment to stdout and /iexec_out/env.txt, its arguments to args.txt",
    script="""\
set -e
env | sort | tee /iexec_out/env.txt
for arg in "$@"; do printf '%s\\n' "$arg"; done > /iexec_out/args.txt
printf '{"deterministic-output-path":"/iexec_out/env.txt"}\\n' > /iexec_out/computed.json
""",
)
CHATTY = AppImage(
    tag="iexec-devnet/chatty:1",
    description="prints the numbers 1..$1 to stdout and 1..$2 to stderr (default 30000 each)",
    script="""\
seq 1 "${1:-30000}"
seq 1 "${2:-30000}" >&2
""",
)
PARTIAL = AppImage(
    tag="iexec-devnet/partial:1",
    description="writes /iexec_out/result.txt and a computed.json pointing at it, then exits with code $1 "
    "(default 3)",
    script="""\
echo "partial result" > /iexec_out/result.txt
printf '{"deterministic-output-path":"/iexec_out/result.txt"}\\n' > /iexec_out/computed.json
echo "partial: result written, exiting with code ${1:-3}"
echo "partial: something went wrong after the result" >&2
exit "${1:-3}"
""",
)
LOUD = AppImage(
    tag="iexec-devnet/loud:1",
    description="writes $1 bytes (default 500000) of text to stdout and names the whole /iexec_out as its "
    "result, so stdout.txt is part of the digest",
    script="""\
set -e
yes 'iexec loud app: the quick brown fox jumps over the lazy dog' | head -c "${1:-500000}"
echo "loud: wrote ${1:-500000} bytes to stdout" >&2
printf '{"deterministic-output-path":"/iexec_out"}\\n' > /iexec_out/computed.json
""",
)
SHELL = AppImage(
    tag="iexec-devnet/shell:1",
    description="runs its first argument as a shell script (tests: limits, files, signals)",
    script='exec /bin/sh -c "$@"\n',
)

NET = AppImage(
    tag="iexec-devnet/net:1",
    description="runs its first argument as a shell script, with nc and wget (tests: the app network)",
    script='exec /bin/sh -c "$@"\n',
    extra_applets=("nc", "wget", "timeout", "ip"),
)

IMAGES: dict[str, AppImage] = {
    image.tag: image for image in (HELLO, FAIL, SLEEP, ENV, CHATTY, PARTIAL, LOUD, SHELL, NET)
}


def _add(tar: tarfile.TarFile, name: str, *, data: bytes = b"", mode: int = 0o644, kind: bytes = tarfile.REGTYPE,
         link: str = "") -> None:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0  # fixed, so the same content gives the same context hash
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def build_context(script: str, busybox: Path = BUSYBOX, extra_applets: tuple[str, ...] = ()) -> bytes:
    """The uncompressed tar build context of an image running ``script``; deterministic for equal inputs."""
    try:
        busybox_bytes = busybox.read_bytes()
    except OSError as exc:
        raise ImageError(f"{busybox}: {exc.strerror}; install the Debian package busybox-static") from exc
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "Dockerfile", data=_DOCKERFILE.encode())
        for folder in ("rootfs", "rootfs/bin", "rootfs/iexec_in", "rootfs/iexec_out"):
            _add(tar, folder, mode=0o755, kind=tarfile.DIRTYPE)
        _add(tar, "rootfs/tmp", mode=0o1777, kind=tarfile.DIRTYPE)
        _add(tar, "rootfs/bin/busybox", data=busybox_bytes, mode=0o755)
        for applet in (*APPLETS, *extra_applets):
            _add(tar, f"rootfs/bin/{applet}", kind=tarfile.SYMTYPE, link="busybox")
        _add(tar, "rootfs/entrypoint.sh", data=f"#!/bin/sh\n{script}".encode(), mode=0o755)
    return buffer.getvalue()


async def build_app_image(
    engine: DockerEngine, tag: str, script: str, extra_applets: tuple[str, ...] = ()
) -> str:
    """Build (or keep, when its content is unchanged) the image ``tag`` running ``script``; returns its id."""
    context = await asyncio.to_thread(build_context, script, BUSYBOX, extra_applets)
    digest = hashlib.sha256(context).hexdigest()
    existing = await engine.local_image(tag)
    if existing is not None and existing.labels.get(CONTENT_LABEL) == digest:
        return existing.id
    return await engine.build_image(context, tag=tag, labels={CONTENT_LABEL: digest})


async def ensure_images(engine: DockerEngine, images: Iterable[AppImage] = IMAGES.values()) -> dict[str, str]:
    """Build every image of ``images`` that is missing or stale; returns tag → image id."""
    built: dict[str, str] = {}
    for image in images:
        built[image.tag] = await build_app_image(engine, image.tag, image.script, image.extra_applets)
    return built
