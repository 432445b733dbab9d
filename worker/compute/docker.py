"""The Docker adapter: the only module that talks to the Docker engine (through aiodocker).

Pull policy, decided here once:

- when the app has an on-chain checksum, an image present locally under the reference whose content it
  names (image id or manifest digest) is used without asking the registry: content-addressed, it cannot
  differ from what the registry would serve. This is how images built on the host and never pushed (the
  devnet's, registered with their image id) run;
- a digest reference (``repo@sha256:...``) already present locally is used as is, for the same reason;
- any other reference (a tag) is always pulled, so a re-pushed tag reaches the worker, as with the reference
  worker; after the pull the image must match the on-chain checksum when the app has one
  (``ImageDigestMismatch`` otherwise: a registry or a re-pushed tag serving other code than the app
  registered);
- a failed pull of an app's image fails: a local image of the same name is never used in its place, since
  nothing says it is the app's code. The worker's own images (the SGX check, the LAS, the enclaves), which
  the operator may build or load without a registry, fall back to the local image (``local_fallback``).

Containers are always removed after their logs are read, also on timeout, failure and cancellation. Logs are read
once the container has ended, both streams in one pass: only their tails stay in memory, so a chatty app cannot fill
the worker's memory, and when the spec asks for it they are also written whole to files, up to a byte budget. Each
engine frame is decoded on its own, malformed UTF-8 replaced by U+FFFD, as the reference worker (docker-java) turns
each frame into a string: the files it puts in a result, and so the result digest, are the same.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiodocker
import aiohttp

from worker.compute.environment import WORKER_LABEL
from worker.compute.errors import (
    ComputeError,
    ContainerError,
    DockerUnavailableError,
    ImageBuildError,
    ImageDigestMismatch,
    ImageNotFoundError,
    ImagePullError,
    ImagePullTimeoutError,
    InvalidImageReferenceError,
    RegistryAuthError,
    RegistryUnreachableError,
)
from worker.compute.firewall import BRIDGE_NAME_OPTION, ICC_OPTION, AppFirewall, bridge_name
from worker.compute.model import (
    IEXEC_OUT,
    STDERR_FILE,
    STDOUT_FILE,
    ContainerResult,
    ContainerSpec,
    LocalImage,
    PullOutcome,
    PullProgress,
    PullProgressCallback,
    RegistryAuth,
    checksum_digest,
)

log = logging.getLogger(__name__)

DEFAULT_REGISTRY = "docker.io"
_UNREACHABLE_STATUS = 900  # aiodocker's status for "cannot connect to the engine"
_BUILTIN_NETWORKS = frozenset({"bridge", "host", "none", "default"})
# Docker keeps all logs on disk until the container is removed; rotation bounds what a chatty app can write.
_LOG_CONFIG = {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
_MIN_LOG_FILE_BYTES = 10 * 1024 * 1024
_CLEANUP_TIMEOUT = 30.0
_LOG_READ_TIMEOUT = 120.0  # reading an ended container's logs is bounded: never wait on the engine forever
_LOG_FLUSH_BYTES = 1024 * 1024
_FRAME_HEADER = 8  # stream type, 3 zero bytes, big-endian payload length (Docker's multiplexed stream)
_STDERR_STREAM = 2
_OUTPUT_CHECK_PERIOD = 1.0

_LAYER_DONE = frozenset({"Pull complete", "Already exists"})
_LAYER_STATUSES = frozenset(
    {
        "Pulling fs layer",
        "Waiting",
        "Downloading",
        "Verifying Checksum",
        "Download complete",
        "Extracting",
        "Retrying",
        *_LAYER_DONE,
    }
)


# What the HTTP client raises when the engine goes away in the middle of an answer (a body cut short, the
# socket closed by a stopping dockerd): aiodocker turns connection failures into DockerError(900), not these.
_TRANSPORT_ERRORS = (aiohttp.ClientError, OSError)


def _engine_lost(what: str, exc: BaseException) -> DockerUnavailableError:
    cause = f"{type(exc).__name__}: {exc}".rstrip(": ")
    return DockerUnavailableError(
        f"Docker engine stopped answering ({what}): {cause}; the worker waits for dockerd to be back",
        cause=cause,
    )


def registry_of(image: str) -> str:
    """Registry host of an image reference; no host means Docker Hub (``docker.io``)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return DEFAULT_REGISTRY


def is_digest_reference(image: str) -> bool:
    return "@" in image


def _qualified(image: str) -> str:
    """The reference with its registry host written out (aiodocker needs one to attach credentials)."""
    if registry_of(image) != DEFAULT_REGISTRY or image.startswith(f"{DEFAULT_REGISTRY}/"):
        return image
    path = image if "/" in image else f"library/{image}"
    return f"{DEFAULT_REGISTRY}/{path}"


def classify_pull_error(image: str, status: int, message: str) -> ComputeError:
    """Map an engine error met while pulling to the error the caller acts on."""
    text = message.lower()
    if status == _UNREACHABLE_STATUS:
        return DockerUnavailableError(
            f"Docker engine unreachable while pulling {image}: {message}", cause=message
        )
    if "invalid reference format" in text or (status == 400 and "reference" in text):
        return InvalidImageReferenceError(
            f"app image {image!r} is not a valid image reference: {message}", image=image
        )
    # Docker Hub answers "pull access denied ... does not exist or may require 'docker login'" for both
    # private and missing repositories: the fix is the same, check the name or set credentials.
    if (
        status in (401, 403)
        or "unauthorized" in text
        or "denied" in text
        or "authentication required" in text
        or "no basic auth credentials" in text
    ):
        return RegistryAuthError(
            f"registry {registry_of(image)} refused to serve {image}: {message}; "
            "check the image name and the registry credentials of the worker",
            image=image,
        )
    if status == 404 or "manifest unknown" in text or "not found" in text:
        return ImageNotFoundError(
            f"app image {image} does not exist in registry {registry_of(image)}: {message}", image=image
        )
    if "no space left" in text:
        return ImagePullError(
            f"no disk space left to pull {image}: {message}; free space on the Docker host", image=image
        )
    return RegistryUnreachableError(
        f"registry {registry_of(image)} unreachable while pulling {image}: {message}", image=image
    )


class _PullTracker:
    """Folds the engine's per-layer progress lines into totals."""

    def __init__(self, image: str) -> None:
        self.image = image
        self._current: dict[str, int] = {}
        self._total: dict[str, int] = {}
        self._done: set[str] = set()

    def update(self, event: Mapping[str, Any]) -> PullProgress | None:
        status = str(event.get("status", ""))
        layer = event.get("id")
        if status not in _LAYER_STATUSES or not isinstance(layer, str):
            return None
        self._current.setdefault(layer, 0)
        detail = event.get("progressDetail") or {}
        # Extracting reports progress too; only the download counts as bytes fetched from the registry.
        if status == "Downloading":
            self._current[layer] = int(detail.get("current", 0))
            if detail.get("total"):
                self._total[layer] = int(detail["total"])
        elif status == "Download complete" and layer in self._total:
            self._current[layer] = self._total[layer]
        if status in _LAYER_DONE:
            self._done.add(layer)
        return PullProgress(
            image=self.image,
            layers_total=len(self._current),
            layers_done=len(self._done),
            bytes_downloaded=sum(self._current.values()),
            bytes_total=sum(self._total.values()),
            status=status,
        )


class _Tail:
    """The last ``limit`` characters of a stream, without holding the whole stream."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: collections.deque[str] = collections.deque()
        self._size = 0

    def add(self, chunk: str) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        while self._chunks and self._size - len(self._chunks[0]) >= self._limit:
            self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        return "".join(self._chunks)[-self._limit :] if self._limit > 0 else ""


class _LogSink:
    """Where the frames of one container's logs go: a tail of each stream, and the whole streams to files.

    File writes leave the event loop in blocks of about 1 MiB. Past ``spec.log_max_bytes`` the files are given
    up (and removed at the end): a log that large cannot be part of a result of that size anyway.
    """

    def __init__(self, spec: ContainerSpec) -> None:
        self._tails = (_Tail(spec.log_tail_chars), _Tail(spec.log_tail_chars))
        self._dir = spec.log_dir
        self._budget = spec.log_max_bytes
        self._paths = (self._dir / STDOUT_FILE, self._dir / STDERR_FILE) if self._dir is not None else None
        self._pending = (bytearray(), bytearray())
        self.bytes = 0
        self._files: tuple[Any, Any] | None = None
        self.over_budget = False
        self.complete = True
        self.write_error: OSError | None = None

    async def open(self) -> None:
        if self._paths is None:
            return

        folder, (stdout, stderr) = self._dir, self._paths

        def open_files() -> tuple[Any, Any]:
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
            return (stdout.open("wb"), stderr.open("wb"))

        try:
            self._files = await asyncio.to_thread(open_files)
        except OSError as exc:
            # Not the app's fault, and not fatal to the run: the caller learns the logs were not saved.
            self.complete = False
            log.error("cannot write the logs of a container into %s: %s", folder, exc)

    async def add(self, stream: int, payload: bytes) -> None:
        index = 1 if stream == _STDERR_STREAM else 0
        text = payload.decode("utf-8", "replace")
        self._tails[index].add(text)
        data = text.encode("utf-8")
        self.bytes += len(data)
        if self._files is None or self.over_budget:
            return
        if self._budget is not None and self.bytes > self._budget:
            self.over_budget = True
            self._pending[0].clear()
            self._pending[1].clear()
            return
        self._pending[index].extend(data)
        if len(self._pending[index]) >= _LOG_FLUSH_BYTES:
            await self._flush(index)

    async def _flush(self, index: int) -> None:
        if self._files is None or not self._pending[index]:
            return
        block = bytes(self._pending[index])
        self._pending[index].clear()
        try:
            await asyncio.to_thread(self._files[index].write, block)
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        """A log file that cannot be written (a full disk): the logs are given up, never the run."""
        self.complete = False
        self.write_error = exc
        log.error("cannot write the logs of a container into %s: %s", self._dir, exc)
        files, self._files = self._files, None
        for file in files or ():
            with contextlib.suppress(OSError):
                file.close()
        for path in self._paths or ():
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    async def close(self) -> bool:
        """Flush and close the files; True when they hold both streams whole."""
        if self._files is None:
            return False
        files, self._files = self._files, None
        saved = self.complete and not self.over_budget

        def finish() -> None:
            for index, file in enumerate(files):
                if saved:
                    file.write(bytes(self._pending[index]))
                file.close()
            if not saved and self._paths is not None:
                for path in self._paths:
                    path.unlink(missing_ok=True)

        try:
            await asyncio.to_thread(finish)
        except OSError as exc:
            self._files = files
            self._failed(exc)
            return False
        return saved

    def tails(self) -> tuple[str, str]:
        return self._tails[0].text(), self._tails[1].text()


def _log_config(spec: ContainerSpec) -> dict[str, Any]:
    if spec.log_max_bytes is None:
        return _LOG_CONFIG
    # Logs are read while the app runs; the engine must still keep the whole budget of log records around
    # (they are larger than their text), so the reader never finds the start of a stream rotated away.
    size = max(spec.log_max_bytes, _MIN_LOG_FILE_BYTES)
    return {"Type": "json-file", "Config": {"max-size": str(size), "max-file": "3"}}


def _parse_engine_time(value: object) -> datetime | None:
    """Docker timestamps carry nanoseconds, which ``fromisoformat`` does not take; zero time means unset."""
    if not isinstance(value, str) or value.startswith("0001-"):
        return None
    main, dot, rest = value.rstrip("Z").partition(".")
    fraction = rest[:6] if dot else ""
    try:
        return datetime.fromisoformat(f"{main}.{fraction or '0'}+00:00")
    except ValueError:
        return None


def disk_usage(folder: Path) -> int:
    """Bytes of disk used by the files under ``folder``, links not followed."""
    total = 0
    pending = [str(folder)]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += info.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
        except OSError:
            continue
    return total


@dataclass
class _OutputWatch:
    """The watch of one container's output: ``exceeded`` is set before the kill, so it is never lost to a
    container that ends (killed) while the watch is still in the kill call."""

    task: asyncio.Task[None]
    exceeded: bool = False

    async def stop(self) -> bool:
        if not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task})  # a cancellation of the caller still propagates
        return self.exceeded


def _container_config(spec: ContainerSpec) -> dict[str, Any]:
    host: dict[str, Any] = {
        "Binds": [bind.to_docker() for bind in spec.binds],
        "Privileged": False,
        "CapDrop": ["ALL"],
        "CapAdd": list(spec.cap_add),
        "Tmpfs": dict(spec.tmpfs),
        "SecurityOpt": ["no-new-privileges"],
        "ReadonlyRootfs": spec.read_only_rootfs,
        "LogConfig": _log_config(spec),
    }
    if spec.memory_bytes is not None:
        # Same value for swap: the limit is a hard one, the app cannot spill to swap.
        host["Memory"] = spec.memory_bytes
        host["MemorySwap"] = spec.memory_bytes
    if spec.nano_cpus is not None:
        host["NanoCpus"] = spec.nano_cpus
    if spec.pids_limit is not None:
        host["PidsLimit"] = spec.pids_limit
    if spec.network is not None:
        host["NetworkMode"] = spec.network
    if spec.devices:
        host["Devices"] = [
            {"PathOnHost": device, "PathInContainer": device, "CgroupPermissions": "rwm"}
            for device in spec.devices
        ]
    if spec.extra_hosts:
        host["ExtraHosts"] = list(spec.extra_hosts)
    config: dict[str, Any] = {
        "Image": spec.image,
        "Env": [f"{key}={value}" for key, value in spec.env.items()],
        "Labels": dict(spec.labels),
        "AttachStdout": False,
        "AttachStderr": False,
        "Tty": False,
        "HostConfig": host,
    }
    if spec.cmd:
        config["Cmd"] = list(spec.cmd)
    if spec.entrypoint is not None:
        config["Entrypoint"] = list(spec.entrypoint)
    if spec.user is not None:
        config["User"] = spec.user
    return config


class DockerEngine:
    """Pulls images and runs containers to completion on one Docker engine.

    Open it with ``await DockerEngine.open()`` (or ``async with``) inside the event loop, and ``close()`` it.
    ``api_timeout`` bounds every short engine call (inspect, create, remove); pulls, container runs and log reads
    have their own budgets.
    """

    def __init__(
        self, docker: aiodocker.Docker, *, api_timeout: float = 30.0, owns_client: bool = True
    ) -> None:
        self._docker = docker
        self._api_timeout = api_timeout
        self._owns_client = owns_client
        self._cleanups: set[asyncio.Task[None]] = set()
        self._guards: dict[str, AppFirewall] = {}

    def guard_network(self, network: str, firewall: AppFirewall) -> None:
        """Check ``firewall``'s rules before every container run on ``network``."""
        self._guards[network] = firewall

    @classmethod
    async def open(cls, url: str | None = None, *, api_timeout: float = 30.0) -> Self:
        """Connect to the engine at ``url`` (default: DOCKER_HOST, then the local socket)."""
        try:
            docker = aiodocker.Docker(url=url)
        except ValueError as exc:
            raise DockerUnavailableError(
                f"no Docker engine found ({exc}): start dockerd or set DOCKER_HOST"
            ) from exc
        return cls(docker, api_timeout=api_timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Wait for removals still in flight (started by cancelled runs), then close the connection."""
        if self._cleanups:
            await asyncio.wait(set(self._cleanups), timeout=_CLEANUP_TIMEOUT)
        if self._owns_client:
            await self._docker.close()

    @contextlib.asynccontextmanager
    async def _call(self, what: str) -> AsyncIterator[None]:
        """Bound a short engine call in time, and turn "engine unreachable" into our error."""
        try:
            async with asyncio.timeout(self._api_timeout):
                yield
        except TimeoutError as exc:
            raise DockerUnavailableError(
                f"Docker engine did not answer within {self._api_timeout:g}s ({what}): check that dockerd is "
                "running and not overloaded"
            ) from exc
        except aiodocker.DockerError as exc:
            if exc.status == _UNREACHABLE_STATUS:
                raise DockerUnavailableError(
                    f"Docker engine unreachable ({what}): {exc.message}; start dockerd or set DOCKER_HOST",
                    cause=exc.message,
                ) from exc
            raise
        except _TRANSPORT_ERRORS as exc:
            raise _engine_lost(what, exc) from exc

    async def ping(self) -> str:
        """The engine's version; raises ``DockerUnavailableError`` when it does not answer."""
        async with self._call("version"):
            version = await self._docker.version()
        return str(version.get("Version", "unknown"))

    # ---- images ---------------------------------------------------------------------------------------------

    async def image_exists(self, image: str) -> bool:
        try:
            async with self._call(f"inspect image {image}"):
                await self._docker.images.inspect(image)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return False
            if exc.status == 400:  # an unparsable reference cannot be present
                return False
            raise ComputeError(f"cannot inspect image {image}: {exc.message}") from exc
        return True

    async def local_image(self, image: str) -> LocalImage | None:
        """Id and labels of a local image, or None when it is absent."""
        try:
            async with self._call(f"inspect image {image}"):
                info = await self._docker.images.inspect(image)
        except aiodocker.DockerError as exc:
            if exc.status in (400, 404):
                return None
            raise ComputeError(f"cannot inspect image {image}: {exc.message}") from exc
        labels = (info.get("Config") or {}).get("Labels") or {}
        return LocalImage(
            id=str(info["Id"]),
            labels={str(key): str(value) for key, value in labels.items()},
            repo_digests=tuple(str(digest) for digest in info.get("RepoDigests") or ()),
        )

    async def remove_image(self, image: str) -> bool:
        """Remove a local image (by reference or id) with all its tags; False when it was absent."""
        try:
            async with self._call(f"remove image {image}"):
                await self._docker.images.delete(image, force=True)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return False
            raise ComputeError(f"cannot remove image {image}: {exc.message}") from exc
        return True

    async def pull(
        self,
        image: str,
        *,
        auth: RegistryAuth | None = None,
        pull_timeout: float,
        on_progress: PullProgressCallback | None = None,
        checksum: str | None = None,
        local_fallback: bool = True,
    ) -> PullOutcome:
        """Make ``image`` available locally, following the pull policy of this module.

        ``checksum`` is the app's on-chain checksum (``0x`` + sha256), zero or None when it has none.
        ``local_fallback``: a failed pull uses a local image of the same name; True only for the worker's own
        images (the SGX check, the LAS, the enclaves, built or loaded by the operator), False for an app's.
        Raises ``ImageNotFoundError``, ``RegistryAuthError``, ``RegistryUnreachableError``,
        ``ImagePullTimeoutError``, ``InvalidImageReferenceError`` or ``ImageDigestMismatch`` when the app's
        image is not available afterwards.
        """
        if not image or image != image.strip() or any(char.isspace() for char in image):
            raise InvalidImageReferenceError(
                f"app image {image!r} is not a valid image reference", image=image
            )
        expected = checksum_digest(checksum)
        local = await self.local_image(image)
        if local is not None and expected is not None and local.matches(expected):
            log.info("image %s present locally with the app's checksum: not pulled", image)
            return PullOutcome.ALREADY_PRESENT
        if local is not None and expected is None and is_digest_reference(image):
            log.info("image %s present locally, pinned by digest: not pulled", image)
            return PullOutcome.ALREADY_PRESENT
        try:
            await self._pull_within(image, auth=auth, pull_timeout=pull_timeout, on_progress=on_progress)
        except ImagePullError as exc:
            if not local_fallback or local is None or expected is not None:
                raise
            log.warning("pull of %s failed (%s); using the image present locally", image, exc)
            return PullOutcome.LOCAL_FALLBACK
        pulled = await self.local_image(image)
        if pulled is None:
            raise ImageNotFoundError(f"app image {image} still absent after a successful pull", image=image)
        if expected is not None and not pulled.matches(expected):
            raise ImageDigestMismatch(
                f"app image {image} as served by {registry_of(image)} is not the app registered on chain: its "
                f"digests are {', '.join(sorted(pulled.digests()))}, the app's checksum is 0x{expected}; the app "
                "owner re-pushed the tag or the registry serves other content",
                image=image,
            )
        return PullOutcome.PULLED

    async def _pull_within(
        self,
        image: str,
        *,
        auth: RegistryAuth | None,
        pull_timeout: float,
        on_progress: PullProgressCallback | None,
    ) -> None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(pull_timeout):
                try:
                    await self._pull_once(image, auth, on_progress)
                except RegistryAuthError:
                    if auth is None:
                        raise
                    # Wrong credentials should not block a public image: retry anonymously, as the reference
                    # worker falls back to an anonymous client when its login fails.
                    log.warning(
                        "registry %s refused the credentials of %s; retrying anonymously",
                        auth.server,
                        auth.username,
                    )
                    await self._pull_once(image, None, on_progress)
        except TimeoutError as exc:
            raise ImagePullTimeoutError(
                f"pull of {image} did not finish within {pull_timeout:g}s (stopped after "
                f"{time.monotonic() - started:.0f}s): check the registry bandwidth or raise the pull timeout",
                image=image,
            ) from exc

    async def _pull_once(
        self, image: str, auth: RegistryAuth | None, on_progress: PullProgressCallback | None
    ) -> None:
        tracker = _PullTracker(image)
        credentials = None
        reference = image
        if auth is not None:
            reference = _qualified(image)
            credentials = {"username": auth.username, "password": auth.password, "serveraddress": auth.server}
        try:
            async for event in self._docker.images.pull(reference, auth=credentials, stream=True):
                progress = tracker.update(event)
                if progress is not None and on_progress is not None:
                    on_progress(progress)
        except aiodocker.DockerError as exc:
            error = classify_pull_error(image, exc.status, exc.message)
            raise error from exc
        except _TRANSPORT_ERRORS as exc:
            raise _engine_lost(f"pull of {image}", exc) from exc

    async def build_image(
        self,
        context: bytes,
        *,
        tag: str,
        labels: Mapping[str, str] | None = None,
        build_timeout: float = 120.0,
    ) -> str:
        """Build an image from an uncompressed tar build context; returns the image id.

        Used for the devnet and test images: the context must not need the network (``FROM scratch``).
        """
        try:
            async with asyncio.timeout(build_timeout):
                await self._docker.images.build(
                    fileobj=io.BytesIO(context), encoding="identity", tag=tag, labels=labels, rm=True
                )
                info = await self._docker.images.inspect(tag)
        except TimeoutError as exc:
            raise ImageBuildError(f"build of {tag} did not finish within {build_timeout:g}s") from exc
        except aiodocker.DockerError as exc:
            if exc.status == _UNREACHABLE_STATUS:
                raise DockerUnavailableError(
                    f"Docker engine unreachable while building {tag}: {exc.message}"
                ) from exc
            raise ImageBuildError(f"build of {tag} failed: {exc.message}") from exc
        return str(info["Id"])

    # ---- containers -----------------------------------------------------------------------------------------

    async def run(self, spec: ContainerSpec) -> ContainerResult:
        """Run ``spec`` to completion, kill it at ``spec.timeout``, and return its exit status and log tails.

        The container is removed in every case. On cancellation it is removed (in a shielded task) before the
        ``CancelledError`` propagates. Raises ``ContainerError`` when the container cannot be created or started,
        e.g. because the image is absent.
        """
        await self._remove_existing(spec.name)
        guard = self._guards.get(spec.network or "")
        if guard is not None:
            # The app network: recreated isolated if something removed it, its rules checked when cheap.
            await self.ensure_app_network(guard.network)
            if guard.check_each_run:
                await guard.ensure()
        elif spec.network is not None and spec.network not in _BUILTIN_NETWORKS:
            await self._ensure_network(spec.network)
        try:
            container = await self._create(spec)
            started_at = time.time()
            async with self._call(f"start container {spec.name}"):
                try:
                    await container.start()
                except aiodocker.DockerError as exc:
                    if exc.status == _UNREACHABLE_STATUS:
                        raise
                    raise ContainerError(
                        f"container {spec.name} could not start: {exc.message}", name=spec.name
                    ) from exc
            started = time.monotonic()
            watch = self._watch_output(container, spec)
            try:
                exit_code, timed_out = await self._wait(container, spec)
            finally:
                output_exceeded = await watch.stop() if watch is not None else False
            if exit_code != 0 and not timed_out and not output_exceeded:  # not killed by this adapter
                await self._not_stopped_by_engine(container, spec, since=started_at)
            ended = time.monotonic()
            # Read once the container has ended: the engine has then copied every line to its log, while a
            # stream followed during the run can end before the last lines when the container stops.
            sink = _LogSink(spec)
            await sink.open()
            try:
                await self._read_logs(container, spec, sink)
            finally:
                logs_saved = await asyncio.shield(sink.close())
            stdout, stderr = sink.tails()
            duration = await self._engine_duration(container) or (ended - started)
        finally:
            # By name, so a container the engine created before a cancellation reached us is removed too.
            await self._remove_shielded(spec.name)
        log.info(
            "container %s ended: exit code %s%s after %.1fs",
            spec.name,
            exit_code,
            " (timed out)" if timed_out else "",
            duration,
        )
        return ContainerResult(
            name=spec.name,
            exit_code=exit_code,
            timed_out=timed_out,
            stdout=stdout,
            stderr=stderr,
            duration=duration,
            logs_bytes=sink.bytes,
            logs_saved=logs_saved,
            output_exceeded=output_exceeded,
        )

    async def start_detached(self, spec: ContainerSpec) -> None:
        """Create and start ``spec`` without waiting for it (a service such as the SCONE LAS).

        ``spec.timeout`` is not enforced; the caller stops it with ``stop_and_remove``. A leftover container
        of that name is replaced.
        """
        await self._remove_existing(spec.name)
        if spec.network is not None and spec.network not in _BUILTIN_NETWORKS:
            await self._ensure_network(spec.network)
        container = await self._create(spec)
        async with self._call(f"start container {spec.name}"):
            try:
                await container.start()
            except aiodocker.DockerError as exc:
                await self._remove_shielded(spec.name)
                raise ContainerError(
                    f"container {spec.name} could not start: {exc.message}", name=spec.name
                ) from exc
        log.info("container %s started (detached, image %s)", spec.name, spec.image)

    async def is_running(self, name: str) -> bool:
        """True when a container of exactly this name exists and runs."""
        try:
            async with self._call(f"inspect container {name}"):
                info = await self._docker.containers.container(name).show()
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return False
            raise ContainerError(f"cannot inspect container {name}: {exc.message}", name=name) from exc
        return bool((info.get("State") or {}).get("Running"))

    async def connect(self, name: str, network: str) -> None:
        """Attach the running container ``name`` to the bridge ``network`` too (created when missing)."""
        await self._ensure_network(network)
        try:
            async with self._call(f"connect container {name} to network {network}"):
                found = await self._docker.networks.get(network)
                await found.connect({"Container": name})
        except aiodocker.DockerError as exc:
            if exc.status == 403 and "already exists" in exc.message:
                return
            raise ContainerError(
                f"cannot connect container {name} to network {network}: {exc.message}", name=name
            ) from exc

    async def network_gateway(self, network: str) -> str:
        """The host's address on the bridge ``network`` (created when missing): what its containers reach it by."""
        await self._ensure_network(network)
        try:
            async with self._call(f"inspect network {network}"):
                info = await self._docker.networks.get(network)
                details = await info.show()
        except aiodocker.DockerError as exc:
            raise ContainerError(f"cannot inspect network {network}: {exc.message}", name=network) from exc
        for config in (details.get("IPAM") or {}).get("Config") or []:
            gateway = config.get("Gateway")
            if gateway and ":" not in gateway:
                return str(gateway)
        raise ContainerError(
            f"network {network} has no IPv4 gateway: use a bridge network for the enclaves", name=network
        )

    def _watch_output(self, container: Any, spec: ContainerSpec) -> _OutputWatch | None:
        """A watch that kills the container once it wrote more than its bound to /iexec_out (checked every
        second); None when the spec sets no bound."""
        folder = next((bind.host for bind in spec.binds if bind.container == IEXEC_OUT), None)
        limit = spec.output_max_bytes
        if folder is None or limit is None:
            return None

        async def watch() -> None:
            while True:
                await asyncio.sleep(_OUTPUT_CHECK_PERIOD)
                used = await asyncio.to_thread(disk_usage, folder)
                if used > limit:
                    state.exceeded = True
                    log.warning(
                        "container %s wrote %d bytes to %s, over its bound of %d: killing it",
                        spec.name, used, IEXEC_OUT, limit,
                    )  # fmt: skip
                    with contextlib.suppress(aiodocker.DockerError, DockerUnavailableError):
                        async with self._call(f"kill container {spec.name}"):
                            await container.kill(signal="SIGKILL")
                    return

        state = _OutputWatch(asyncio.create_task(watch(), name=f"output-watch-{spec.name}"))
        return state

    async def _create(self, spec: ContainerSpec) -> Any:
        try:
            async with self._call(f"create container {spec.name}"):
                return await self._docker.containers.create(_container_config(spec), name=spec.name)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                raise ContainerError(
                    f"cannot create container {spec.name}: image {spec.image} is not present locally "
                    f"({exc.message}); pull it first",
                    name=spec.name,
                ) from exc
            raise ContainerError(
                f"cannot create container {spec.name}: {exc.message}", name=spec.name
            ) from exc

    async def _wait(self, container: Any, spec: ContainerSpec) -> tuple[int, bool]:
        try:
            async with asyncio.timeout(spec.timeout):
                status = await container.wait()
            return int(status.get("StatusCode", -1)), False
        except TimeoutError:
            log.warning("container %s still running after %gs: killing it", spec.name, spec.timeout)
        except aiodocker.DockerError as exc:
            if exc.status == _UNREACHABLE_STATUS:
                raise DockerUnavailableError(
                    f"Docker engine unreachable while container {spec.name} runs: {exc.message}",
                    cause=exc.message,
                ) from exc
            raise ContainerError(
                f"cannot wait for container {spec.name}: {exc.message}", name=spec.name
            ) from exc
        except _TRANSPORT_ERRORS as exc:
            raise _engine_lost(f"wait for container {spec.name}", exc) from exc
        try:
            async with self._call(f"kill container {spec.name}"):
                await container.kill(signal="SIGKILL")
        except aiodocker.DockerError as exc:
            if exc.status != 409:  # 409: it ended on its own between the deadline and the kill
                raise ContainerError(
                    f"cannot kill container {spec.name}: {exc.message}", name=spec.name
                ) from exc
        try:
            async with self._call(f"wait for killed container {spec.name}"):
                status = await container.wait()
        except aiodocker.DockerError as exc:
            raise ContainerError(
                f"cannot wait for container {spec.name}: {exc.message}", name=spec.name
            ) from exc
        return int(status.get("StatusCode", -1)), True

    async def _not_stopped_by_engine(self, container: Any, spec: ContainerSpec, *, since: float) -> None:
        """Raise ``DockerUnavailableError`` when the engine, not the app, ended a container that failed.

        A stopping dockerd (a restart, an upgrade) sends its containers the stop signal, then SIGKILL, and
        answers their waits with 143 or 137 before it goes: the app did not fail, it was interrupted, and is
        run again once the engine is back. The engine records such a kill as an event of the container; an app
        that exits or kills itself leaves none (this adapter's own kills, at the time limit or past the output
        bound, are not asked about).
        """
        params = {
            "since": f"{int(since) - 1}",
            "until": f"{int(time.time()) + 1}",
            "filters": json.dumps({"container": [container.id], "event": ["kill"]}),
        }
        async with (
            self._call(f"events of container {spec.name}"),
            self._docker._query("events", params=params) as response,
        ):
            body = await response.text()
        for line in body.splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                signal = (event.get("Actor") or {}).get("Attributes", {}).get("signal", "?")
                raise DockerUnavailableError(
                    f"container {spec.name} was stopped by the Docker engine (signal {signal}), not by its app: "
                    "dockerd is stopping or restarting; the run starts over once it answers again",
                    cause=f"container killed by the engine (signal {signal})",
                )

    async def _read_logs(self, container: Any, spec: ContainerSpec, sink: _LogSink) -> None:
        """Both streams of an ended container from the start, frame by frame, into ``sink``; bounded in time."""
        params = {"stdout": "1", "stderr": "1", "follow": "0"}
        unbounded = aiohttp.ClientTimeout(total=None, sock_read=None)
        try:
            async with asyncio.timeout(_LOG_READ_TIMEOUT):
                await self._stream_logs(container, spec, sink, params, unbounded)
        except TimeoutError:
            sink.complete = False
            log.warning(
                "logs of container %s still streaming after %gs: kept what was read",
                spec.name,
                _LOG_READ_TIMEOUT,
            )

    async def _stream_logs(
        self,
        container: Any,
        spec: ContainerSpec,
        sink: _LogSink,
        params: dict[str, str],
        unbounded: aiohttp.ClientTimeout,
    ) -> None:
        try:
            async with self._docker._query(
                f"containers/{container.id}/logs", params=params, timeout=unbounded
            ) as response:
                content = response.content
                while True:
                    try:
                        header = await content.readexactly(_FRAME_HEADER)
                        payload = await content.readexactly(int.from_bytes(header[4:8], "big"))
                    except asyncio.IncompleteReadError as exc:
                        if exc.partial:
                            sink.complete = False
                            log.warning("logs of container %s end in the middle of a frame", spec.name)
                        return
                    await sink.add(header[0], payload)
        except aiodocker.DockerError as exc:
            sink.complete = False
            log.warning("cannot read the logs of container %s: %s", spec.name, exc.message)
        except (aiohttp.ClientError, OSError) as exc:
            sink.complete = False
            log.warning("logs of container %s only partly read: %s", spec.name, exc)

    async def _engine_duration(self, container: Any) -> float | None:
        try:
            async with self._call("inspect container"):
                info = await container.show()
        except (aiodocker.DockerError, DockerUnavailableError):
            return None
        state = info.get("State") or {}
        started = _parse_engine_time(state.get("StartedAt"))
        finished = _parse_engine_time(state.get("FinishedAt"))
        if started is None or finished is None or finished < started:
            return None
        return (finished - started).total_seconds()

    async def _remove_existing(self, name: str) -> None:
        """Remove a leftover container with exactly this name (inspect by name is exact, a list filter is not)."""
        if await self._remove(name):
            log.warning("removed leftover container %s before starting a new one", name)

    async def _remove(self, name: str) -> bool:
        """Force-remove (kill if running) the container ``name``; False when there was none."""
        try:
            async with self._call(f"remove container {name}"):
                await self._docker.containers.container(name).delete(force=True, v=True)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return False
            if exc.status == 409 and "already in progress" in exc.message:
                return True
            raise ContainerError(f"cannot remove container {name}: {exc.message}", name=name) from exc
        return True

    async def _remove_shielded(self, name: str) -> None:
        """Remove ``name`` in its own task so a cancellation of the caller cannot interrupt the removal."""

        async def remove() -> None:
            try:
                await self._remove(name)
            except ComputeError as exc:
                log.error("container %s not removed: %s; it is removed at the next start", name, exc)

        task = asyncio.create_task(remove(), name=f"remove-container-{name}")
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        await asyncio.shield(task)

    async def stop_and_remove(self, name: str) -> bool:
        """Kill and remove the container ``name`` (an aborted replicate); False when it did not exist."""
        return await self._remove(name)

    async def remove_labelled(self, worker_name: str) -> list[str]:
        """Remove every container labelled with this worker name: leftovers of a previous run of the worker."""
        filters = json.dumps({"label": [f"{WORKER_LABEL}={worker_name}"]})
        try:
            async with self._call("list containers"):
                containers = await self._docker.containers.list(all=True, filters=filters)
        except aiodocker.DockerError as exc:
            raise ComputeError(f"cannot list containers of worker {worker_name}: {exc.message}") from exc
        removed: list[str] = []
        for container in containers:
            names = container["Names"] or [container.id]
            name = str(names[0]).lstrip("/")
            if await self._remove(container.id):
                removed.append(name)
        if removed:
            log.info("removed %d leftover container(s) of worker %s: %s", len(removed), worker_name, removed)
        return removed

    async def remove_network(self, name: str) -> bool:
        """Remove the network ``name`` (one the caller created); False when there was none."""
        try:
            async with self._call(f"remove network {name}"):
                found = await self._docker.networks.get(name)
                await found.delete()
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return False
            raise ContainerError(f"cannot remove network {name}: {exc.message}", name=name) from exc
        return True

    async def network_containers(self, name: str) -> list[str]:
        """Names of the containers attached to the network ``name`` (none when it does not exist)."""
        try:
            async with self._call(f"inspect network {name}"):
                found = await self._docker.networks.get(name)
                details = await found.show()
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return []
            raise ContainerError(f"cannot inspect network {name}: {exc.message}", name=name) from exc
        return [str(c.get("Name")) for c in (details.get("Containers") or {}).values() if c.get("Name")]

    async def _ensure_network(self, name: str) -> None:
        """A plain bridge ``name`` (the TEE side's networks); app networks go through ``ensure_app_network``."""
        if await self._network_info(name) is not None:
            return
        try:
            async with self._call(f"create network {name}"):
                await self._docker.networks.create({"Name": name, "Driver": "bridge", "CheckDuplicate": True})
        except aiodocker.DockerError as exc:
            if exc.status != 409:  # created meanwhile by a concurrent run
                raise ContainerError(f"cannot create network {name}: {exc.message}", name=name) from exc

    async def _network_info(self, name: str) -> dict[str, Any] | None:
        try:
            async with self._call(f"inspect network {name}"):
                network = await self._docker.networks.get(name)
                info: dict[str, Any] = await network.show()
            return info
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise ContainerError(f"cannot inspect network {name}: {exc.message}", name=name) from exc
            return None

    async def _create_app_network(self, name: str) -> None:
        config = {
            "Name": name,
            "Driver": "bridge",
            "CheckDuplicate": True,
            # Apps do not talk to each other; the bridge has a name the firewall rules can use.
            "Options": {ICC_OPTION: "false", BRIDGE_NAME_OPTION: bridge_name(name)},
            "Labels": {"iexec.worker.app-network": "isolated"},
        }
        try:
            async with self._call(f"create network {name}"):
                await self._docker.networks.create(config)
        except aiodocker.DockerError as exc:
            if exc.status != 409:  # created meanwhile by a concurrent run
                raise ContainerError(f"cannot create network {name}: {exc.message}", name=name) from exc

    async def ensure_app_network(self, name: str) -> str:
        """The isolated app network ``name`` (see ``worker.compute.firewall``), created or fixed; its bridge.

        A network of that name made without the isolation options (by an older worker) is replaced when no
        container uses it; otherwise the error names the command that frees the name.
        """
        info = await self._network_info(name)
        if info is not None:
            options = info.get("Options") or {}
            if options.get(ICC_OPTION) == "false" and options.get(BRIDGE_NAME_OPTION) == bridge_name(name):
                return bridge_name(name)
            if info.get("Containers"):
                raise ContainerError(
                    f"Docker network {name} lets containers reach each other and is in use; stop what uses it and "
                    f"remove it (docker network rm {name}), or set IEXEC_WORKER_DOCKER_NETWORK_NAME to a new name",
                    name=name,
                )
            log.warning("Docker network %s is not isolated: replacing it", name)
            try:
                async with self._call(f"remove network {name}"):
                    await (await self._docker.networks.get(name)).delete()
            except aiodocker.DockerError as exc:
                raise ContainerError(f"cannot remove network {name}: {exc.message}", name=name) from exc
        await self._create_app_network(name)
        return bridge_name(name)
