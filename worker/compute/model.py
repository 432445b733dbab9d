"""What the compute stage asks of a container engine, and what it gets back.

``ContainerEngine`` is the seam between the replicate pipeline and Docker: ``DockerEngine`` implements it, and unit
tests of the pipeline implement it with fakes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

MAX_LOG_CHARS = 100_000
"""Characters kept from the end of each of stdout and stderr (the scheduler's ComputeLogs limit)."""

STDOUT_FILE = "stdout.txt"
STDERR_FILE = "stderr.txt"
"""Names of the whole logs written into ``ContainerSpec.log_dir`` (the reference's names in iexec_out)."""

IEXEC_IN = "/iexec_in"
IEXEC_OUT = "/iexec_out"


@dataclass(frozen=True, slots=True)
class RegistryAuth:
    """Credentials for one registry; ``server`` is its address as it appears in image references."""

    server: str
    username: str
    password: str = field(repr=False)


class PullOutcome(enum.Enum):
    """How ``pull`` made the image available."""

    PULLED = "pulled"
    """The registry was asked and the image is now up to date with it."""
    ALREADY_PRESENT = "already-present"
    """Present locally with the expected content (a digest reference, or the on-chain checksum matched):
    content-addressed, so the registry was not asked."""
    LOCAL_FALLBACK = "local-fallback"
    """The pull failed and a local image of this name is used: only for the worker's own images (the SGX check,
    the LAS, the enclaves), never for an app's."""


@dataclass(frozen=True, slots=True)
class PullProgress:
    """Progress of one pull, summed over the image layers seen so far."""

    image: str
    layers_total: int
    layers_done: int
    bytes_downloaded: int
    bytes_total: int
    status: str
    """The last status line of the engine, e.g. ``Downloading`` or ``Pull complete``."""


PullProgressCallback = Callable[[PullProgress], None]


@dataclass(frozen=True, slots=True)
class LocalImage:
    """An image present on the engine."""

    id: str
    labels: Mapping[str, str]
    repo_digests: tuple[str, ...] = ()
    """``repository@sha256:...`` of the manifests this image was pulled or pushed as."""

    def digests(self) -> frozenset[str]:
        """Every sha256 (64 lowercase hex) that names this content: the image id and the manifest digests."""
        found = {self.id.rsplit(":", 1)[-1].lower()}
        found.update(
            digest.rsplit("@sha256:", 1)[-1].lower() for digest in self.repo_digests if "@sha256:" in digest
        )
        return frozenset(found)

    def matches(self, checksum: str) -> bool:
        """True when ``checksum`` (the app's on-chain ``0x`` + 64 hex) names this image's content."""
        return checksum_digest(checksum) in self.digests()


def checksum_digest(checksum: str | None) -> str | None:
    """The sha256 an app's on-chain checksum stands for, or None when the app has none (empty or zero)."""
    text = (checksum or "").strip().lower().removeprefix("0x").removeprefix("sha256:")
    if not text or set(text) == {"0"}:
        return None
    return text


@dataclass(frozen=True, slots=True)
class Bind:
    """A host path mounted into the container."""

    host: Path
    container: str
    read_only: bool = False

    def to_docker(self) -> str:
        return f"{self.host}:{self.container}:{'ro' if self.read_only else 'rw'}"


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """One container run to completion: the app of a replicate, or a devnet/test container."""

    name: str
    image: str
    timeout: float
    """Seconds the container may run before it is killed (the category's max execution time)."""
    cmd: tuple[str, ...] = ()
    """Arguments given to the image entrypoint; empty keeps the image's own CMD."""
    entrypoint: tuple[str, ...] | None = None
    """Replaces the image entrypoint when set."""
    env: Mapping[str, str] = field(default_factory=dict)
    binds: tuple[Bind, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    memory_bytes: int | None = None
    """Hard memory limit, swap included; None leaves the engine default (unlimited)."""
    nano_cpus: int | None = None
    """CPU quota in units of 1e-9 CPU (1_000_000_000 is one core); None means unlimited."""
    pids_limit: int | None = None
    """Maximum number of processes and threads inside the container; None means unlimited."""
    network: str | None = None
    """Docker network name. None keeps the engine default bridge (apps may need the internet, as with the
    reference worker); ``"none"`` isolates the container; any other name is created as a bridge when missing."""
    read_only_rootfs: bool = False
    devices: tuple[str, ...] = ()
    """Host device nodes passed through at the same path with ``rwm`` cgroup rights (the SGX devices)."""
    extra_hosts: tuple[str, ...] = ()
    """``host:ip`` lines added to the container's /etc/hosts."""
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    """In-memory filesystems to mount: container path -> mount options (``size=`` bounds them)."""
    user: str | None = None
    """``uid[:gid]`` or a user name of the image; None keeps the image's user."""
    output_max_bytes: int | None = None
    """Bytes the container may write under the host folder bound at /iexec_out before it is killed."""
    cap_add: tuple[str, ...] = ()
    """Capabilities given back after all are dropped (the firewall helper's NET_ADMIN; never an app)."""
    log_tail_chars: int = MAX_LOG_CHARS
    log_dir: Path | None = None
    """When set, each stream is also written whole, as UTF-8, to ``log_dir/stdout.txt`` and
    ``log_dir/stderr.txt`` (each engine frame decoded on its own, as the reference worker decodes them)."""
    log_max_bytes: int | None = None
    """Most bytes of whole logs written to ``log_dir`` (both streams together); beyond it the files are
    removed and ``ContainerResult.logs_saved`` is False. The engine's own log retention is sized from it."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("ContainerSpec.name must not be empty")
        if not self.image:
            raise ValueError(f"ContainerSpec.image must not be empty (container {self.name})")
        if self.timeout <= 0:
            raise ValueError(
                f"ContainerSpec.timeout must be > 0 seconds, got {self.timeout} (container {self.name})"
            )


@dataclass(frozen=True, slots=True)
class ContainerResult:
    """How a container ended. Logs are tails: at most ``log_tail_chars`` characters each."""

    name: str
    exit_code: int
    """The process exit status; 137 (SIGKILL) after a timeout."""
    timed_out: bool
    stdout: str
    stderr: str
    duration: float
    """Seconds between the container start and its end, as the engine measured them."""
    logs_bytes: int = 0
    """UTF-8 bytes of both streams together, as decoded (counted whether or not they were saved)."""
    logs_saved: bool = False
    """True when ``spec.log_dir`` holds both streams whole; False without ``log_dir``, or when they were
    larger than ``spec.log_max_bytes`` or could not all be read."""
    output_exceeded: bool = False
    """Killed for writing more than ``output_max_bytes`` to /iexec_out."""


class ContainerEngine(Protocol):
    """The operations the worker needs from a container engine."""

    async def ping(self) -> str: ...

    async def pull(
        self,
        image: str,
        *,
        auth: RegistryAuth | None = None,
        pull_timeout: float,
        on_progress: PullProgressCallback | None = None,
        checksum: str | None = None,
        local_fallback: bool = True,
    ) -> PullOutcome: ...

    async def image_exists(self, image: str) -> bool: ...

    async def run(self, spec: ContainerSpec) -> ContainerResult: ...

    async def start_detached(self, spec: ContainerSpec) -> None: ...

    async def is_running(self, name: str) -> bool: ...

    async def stop_and_remove(self, name: str) -> bool: ...

    async def remove_labelled(self, worker_name: str) -> list[str]: ...

    async def close(self) -> None: ...
