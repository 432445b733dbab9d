"""Streamed HTTP(S) download of one file to disk, bounded in time, size, redirects and targets.

Every hop (the URL, then each redirect) is checked against the download's ``TargetPolicy`` before it
is requested: a requester's URL, or a redirect, to loopback, private, link-local or multicast addresses
is refused unless the operator allowlisted it (``worker.protocol.targets``).

The body is never held in memory: it is read in chunks, counted, hashed and written as it arrives, to a
hidden temporary name in the destination folder that is renamed once complete. Writing and hashing run
in a thread of the download's own, in order, a small batch at a time, while the event loop receives the
next ones: on a fast link the download runs at the speed of the network or of the disk, whichever is
slower, not of their sum. A download that fails for
any reason (including cancellation) leaves no file behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import aiohttp
from yarl import URL

from worker.data.targets import check_target
from worker.protocol.errors import WorkerError
from worker.protocol.redact import display_url
from worker.protocol.targets import TargetPolicy, TargetRefused

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
"""The connection's read buffer: what the loop may hold before it stops reading the socket."""
BATCH_BYTES = 1024 * 1024
"""Bytes gathered before they are handed to the writing thread."""
IN_FLIGHT_BYTES = 4 * 1024 * 1024
"""Bytes handed to the writing thread and not yet written before the loop waits for it."""

Progress = Callable[[int, int | None], None]
"""Called with (bytes written so far, announced total or None) after every write to disk."""


@dataclass(frozen=True)
class DownloadLimits:
    max_bytes: int = 10 * 1024**3
    """Most bytes one task may download (dataset and input files together)."""
    total_timeout: float = 1800.0
    """Seconds one file may take from the first connection to the last byte."""
    stall_timeout: float = 60.0
    """Seconds without a single byte from the server (connection or body) before giving up."""
    max_redirects: int = 5
    """Redirects followed for one file; a redirect loop fails at this count."""
    targets: TargetPolicy = field(default_factory=TargetPolicy)
    """Which addresses the URL and its redirects may lead to; by default public ones only."""

    def __post_init__(self) -> None:
        if self.max_bytes < 0 or self.total_timeout <= 0 or self.stall_timeout <= 0 or self.max_redirects < 0:
            raise ValueError(f"download limits must be positive: {self}")


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    sha256: str
    """Hex digest of the bytes written, without ``0x``."""


class DownloadError(WorkerError):
    """One file could not be downloaded; ``url`` is safe to log (no credentials, no query)."""

    def __init__(self, url: str, reason: str, *, status: int | None = None) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status


async def download(
    session: aiohttp.ClientSession,
    url: str,
    destination: Path,
    limits: DownloadLimits,
    *,
    max_bytes: int | None = None,
    on_progress: Progress | None = None,
) -> Downloaded:
    """Download ``url`` to ``destination`` (replaced atomically); raise ``DownloadError`` on any failure.

    ``max_bytes`` narrows ``limits.max_bytes`` for this file (what is left of a task's budget).
    """
    shown = display_url(url)
    limit = limits.max_bytes if max_bytes is None else min(max_bytes, limits.max_bytes)
    parsed = _http_url(url, shown)
    started = time.monotonic()
    part = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.part")
    try:
        async with asyncio.timeout(limits.total_timeout) as deadline:
            try:
                result = await _fetch(session, parsed, shown, part, limit, limits, on_progress)
            except TimeoutError as exc:
                if deadline.expired():
                    raise
                raise DownloadError(
                    shown,
                    f"no data received for {limits.stall_timeout:g} s; the server is unreachable or stalled",
                ) from exc
    except TimeoutError as exc:
        await _remove(part)
        raise DownloadError(
            shown,
            f"not finished within {limits.total_timeout:g} s; the server is too slow or the file too large "
            "for the configured download timeout",
        ) from exc
    except BaseException:
        # Cancellation included: a half-written file must never be mistaken for a complete one.
        await _remove(part)
        raise
    size, digest = result
    try:
        await asyncio.to_thread(os.replace, part, destination)
    except OSError as exc:
        await _remove(part)
        raise DownloadError(shown, f"cannot move the file to {destination}: {exc.strerror}") from exc
    log.info(
        "downloaded %s to %s bytes=%d seconds=%.2f", shown, destination, size, time.monotonic() - started
    )
    return Downloaded(path=destination, size=size, sha256=digest)


async def _fetch(
    session: aiohttp.ClientSession,
    url: URL,
    shown: str,
    part: Path,
    limit: int,
    limits: DownloadLimits,
    on_progress: Progress | None,
) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=limits.stall_timeout, sock_read=limits.stall_timeout
    )
    try:
        async with _follow(session, url, shown, limits, timeout) as response:
            if not 200 <= response.status < 300 or response.status == 206:
                raise DownloadError(
                    shown, _status_reason(response.status, response.reason), status=response.status
                )
            announced = response.content_length
            if announced is not None and announced > limit:
                raise DownloadError(shown, _too_large(f"announces {announced} bytes", limit))
            sink = await asyncio.to_thread(_Sink.open, part)
            try:
                await _receive(response.content, sink, shown, limit, announced, on_progress)
                return sink.size, await asyncio.to_thread(sink.finish)
            finally:
                await asyncio.to_thread(sink.close)
    except aiohttp.ClientResponseError as exc:
        raise DownloadError(shown, _status_reason(exc.status, exc.message), status=exc.status) from exc
    except aiohttp.ClientConnectorError as exc:
        raise DownloadError(
            shown, f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
        ) from exc
    except aiohttp.ServerTimeoutError as exc:
        raise TimeoutError from exc
    except aiohttp.ClientPayloadError as exc:
        raise DownloadError(shown, "the connection closed before the end of the file; retry later") from exc
    except aiohttp.ClientError as exc:
        raise DownloadError(shown, f"HTTP request failed ({type(exc).__name__})") from exc
    except TimeoutError:
        # Also an OSError, but a timeout, not a disk problem.
        raise
    except OSError as exc:
        raise DownloadError(shown, f"cannot write {part.parent}: {exc.strerror or exc}") from exc


_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@asynccontextmanager
async def _follow(
    session: aiohttp.ClientSession,
    url: URL,
    shown: str,
    limits: DownloadLimits,
    client_timeout: aiohttp.ClientTimeout,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """The final response for ``url``, every hop checked against the target policy before it is requested."""
    current = url
    for hop in range(limits.max_redirects + 1):
        try:
            await check_target(current, limits.targets)
        except TargetRefused as exc:
            where = "" if hop == 0 else f" (redirect {hop} to {display_url(str(current))})"
            raise DownloadError(shown, f"refused{where}: {exc}") from exc
        async with session.get(
            current, timeout=client_timeout, allow_redirects=False, raise_for_status=False,
            read_bufsize=CHUNK_BYTES,
        ) as response:  # fmt: skip
            if response.status not in _REDIRECTS:
                yield response
                return
            location = response.headers.get("Location", "")
        try:
            current = current.join(URL(location))
        except ValueError as exc:
            raise DownloadError(shown, "redirected to an invalid or non-HTTP(S) URL") from exc
        if current.scheme not in ("http", "https") or not current.host:
            raise DownloadError(shown, "redirected to an invalid or non-HTTP(S) URL")
    raise DownloadError(
        shown,
        f"more than {limits.max_redirects} redirects (a redirect loop?); use the final URL of the file instead",
    )


async def _receive(
    body: aiohttp.StreamReader,
    sink: _Sink,
    shown: str,
    limit: int,
    announced: int | None,
    on_progress: Progress | None,
) -> None:
    """Read ``body`` into ``sink``: the loop only collects chunks, a thread of the sink writes and hashes them.

    A batch goes to the thread as soon as it reaches ``BATCH_BYTES`` (the chunks as the connection handed
    them, never copied), and the loop receives on meanwhile; it waits only when ``IN_FLIGHT_BYTES`` are
    handed over and not yet written. One thread per download keeps the batches in order.
    """
    received = 0
    batch: list[bytes] = []
    batched = 0
    in_flight: deque[tuple[asyncio.Future[None], int]] = deque()
    pending = 0
    try:
        async for chunk in body.iter_any():
            received += len(chunk)
            if received > limit:
                raise DownloadError(shown, _too_large("sends more than that", limit))
            batch.append(chunk)
            batched += len(chunk)
            if batched < BATCH_BYTES:
                continue
            while in_flight and pending + batched > IN_FLIGHT_BYTES:
                written, size = in_flight.popleft()
                await written
                pending -= size
            in_flight.append((sink.submit(batch, announced, on_progress), batched))
            pending += batched
            batch, batched = [], 0
        if batch:
            in_flight.append((sink.submit(batch, announced, on_progress), batched))
        while in_flight:
            await in_flight.popleft()[0]
    finally:
        # Whatever ended the download, the file is closed only once no thread writes to it.
        if in_flight:
            futures = [future for future, _ in in_flight]
            await asyncio.wait(futures)
            for future in futures:
                if not future.cancelled():
                    future.exception()  # retrieved: the error that ended the download is already raised


class _Sink:
    """File and running sha256 of what was written, written by a thread of its own, batches in order."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._hash = hashlib.sha256()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="download")
        self.size = 0

    @classmethod
    def open(cls, path: Path) -> _Sink:
        return cls(open(path, "xb"))

    def submit(
        self, chunks: list[bytes], announced: int | None, on_progress: Progress | None
    ) -> asyncio.Future[None]:
        """Write ``chunks`` after those submitted before; ``on_progress`` is called on the loop once they are."""
        future = asyncio.wrap_future(self._thread.submit(self._write, chunks))
        if on_progress is not None:

            def progress(done: asyncio.Future[None]) -> None:
                if not done.cancelled() and done.exception() is None:
                    on_progress(self.size, announced)

            future.add_done_callback(progress)
        return future

    def _write(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self._handle.write(chunk)
            self._hash.update(chunk)
            self.size += len(chunk)

    def finish(self) -> str:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        return self._hash.hexdigest()

    def close(self) -> None:
        self._thread.shutdown(wait=False)
        self._handle.close()


def _http_url(url: str, shown: str) -> URL:
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise DownloadError(shown, "not a valid URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise DownloadError(shown, "only http:// and https:// URLs can be downloaded")
    return parsed


def _status_reason(status: int, reason: str | None) -> str:
    text = f"HTTP {status}{f' {reason}' if reason else ''}"
    if status in (401, 403):
        return f"{text}; the file is not public: make it readable without credentials"
    if status == 404:
        return f"{text}; no file at this URL: check the URL"
    if status == 429 or status >= 500:
        return f"{text}; the server is failing or overloaded, retry later"
    return text


def _too_large(what: str, limit: int) -> str:
    return (
        f"the file {what}, over the {limit} bytes this task may still download; "
        "raise IEXEC_WORKER_DATA_MAX_BYTES or use a smaller file"
    )


async def _remove(path: Path) -> None:
    # Shielded so that a cancelled download still cleans up after itself.
    await asyncio.shield(asyncio.to_thread(path.unlink, missing_ok=True))
