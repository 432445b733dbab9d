"""Streamed downloads against a real HTTP server on 127.0.0.1 (see conftest): limits, redirects, cleanup."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.support import until
from tests.support.files import GOOD, HUGE, FileServer
from worker.data import DownloadError, DownloadLimits, download, downloads, guarded_session
from worker.protocol.targets import TargetPolicy

# The test servers listen on 127.0.0.1: allowlisted, as a devnet operator does.
LOOPBACK = TargetPolicy.allowing("127.0.0.0/8")
FAST = DownloadLimits(
    max_bytes=HUGE * 2, total_timeout=10.0, stall_timeout=0.3, max_redirects=3, targets=LOOPBACK
)


def _files(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir())


async def test_good_file_is_written_with_its_sha256(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    seen: list[tuple[int, int | None]] = []

    done = await download(
        session,
        f"{server.url}/good",
        tmp_path / "file",
        FAST,
        on_progress=lambda written, total: seen.append((written, total)),
    )

    assert (tmp_path / "file").read_bytes() == GOOD
    assert (done.size, done.sha256) == (len(GOOD), hashlib.sha256(GOOD).hexdigest())
    assert seen[-1] == (len(GOOD), len(GOOD))
    assert _files(tmp_path) == ["file"]


async def test_a_redirect_is_followed(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    done = await download(session, f"{server.url}/moved", tmp_path / "file", FAST)
    assert done.path.read_bytes() == GOOD


async def test_an_existing_file_is_replaced(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    (tmp_path / "file").write_bytes(b"stale")
    await download(session, f"{server.url}/good", tmp_path / "file", FAST)
    assert (tmp_path / "file").read_bytes() == GOOD


async def test_404_names_the_status_and_leaves_nothing(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    with pytest.raises(DownloadError) as caught:
        await download(session, f"{server.url}/missing", tmp_path / "file", FAST)
    assert caught.value.status == 404
    assert "HTTP 404" in str(caught.value)
    assert f"{server.url}/missing" in str(caught.value)
    assert _files(tmp_path) == []


async def test_a_stalled_server_times_out(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    with pytest.raises(DownloadError, match=r"no data received for 0.3 s"):
        await download(session, f"{server.url}/stall", tmp_path / "file", FAST)
    assert _files(tmp_path) == []


async def test_a_slow_but_steady_server_hits_the_total_timeout(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    limits = DownloadLimits(max_bytes=HUGE, total_timeout=0.5, stall_timeout=5.0, targets=LOOPBACK)
    with pytest.raises(DownloadError, match=r"not finished within 0.5 s"):
        await download(session, f"{server.url}/trickle", tmp_path / "file", limits)
    assert _files(tmp_path) == []


@pytest.mark.parametrize(("batch", "in_flight"), [(1, 1), (4096, 1), (64 * 1024, 128 * 1024)])
async def test_the_file_is_whole_and_in_order_whatever_the_batches_handed_to_the_writer(
    server: FileServer,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    batch: int,
    in_flight: int,
) -> None:
    """Batches smaller and larger than what may be in flight: every byte lands once, in order."""
    monkeypatch.setattr(downloads, "BATCH_BYTES", batch)
    monkeypatch.setattr(downloads, "IN_FLIGHT_BYTES", in_flight)

    done = await download(session, f"{server.url}/good", tmp_path / "file", FAST)

    assert (tmp_path / "file").read_bytes() == GOOD
    assert done.sha256 == hashlib.sha256(GOOD).hexdigest()


@pytest.mark.parametrize("path", ["/huge-declared", "/huge-chunked"])
async def test_too_large_is_aborted_and_never_overruns_the_disk(
    server: FileServer,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    # Every chunk is handed to the writer as it comes: one read of a busy connection may hold more than
    # a default batch, and the test is about what reaches the disk before the limit, not about batching.
    monkeypatch.setattr(downloads, "BATCH_BYTES", 1)
    limit = 1536 * 1024
    limits = DownloadLimits(max_bytes=limit, total_timeout=10.0, stall_timeout=2.0, targets=LOOPBACK)
    on_disk: list[int] = []

    def measure(_written: int, _total: int | None) -> None:
        # What is really on disk, not what the downloader says it wrote.
        on_disk.append(sum(entry.stat().st_size for entry in tmp_path.iterdir()))

    with pytest.raises(DownloadError, match=rf"over the {limit} bytes") as caught:
        await download(session, f"{server.url}{path}", tmp_path / "file", limits, on_progress=measure)

    if path == "/huge-declared":
        assert f"announces {HUGE} bytes" in str(caught.value)
        assert on_disk == []  # refused from the Content-Length, before a byte was written
    else:
        assert on_disk, "the chunked body should have been written in part before the limit was hit"
        assert max(on_disk) <= limit
    assert _files(tmp_path) == []


async def test_a_redirect_loop_fails_cleanly(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    with pytest.raises(DownloadError, match=r"more than 3 redirects"):
        await download(session, f"{server.url}/loop", tmp_path / "file", FAST)
    assert _files(tmp_path) == []


async def test_connection_refused_names_the_host(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens there.
    with pytest.raises(DownloadError, match=r"cannot connect to 127.0.0.1:1"):
        await download(session, "http://127.0.0.1:1/file", tmp_path / "file", FAST)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/file", "file:///etc/passwd", "not a url", ""])
async def test_only_http_urls_are_downloaded(
    session: aiohttp.ClientSession, tmp_path: Path, url: str
) -> None:
    with pytest.raises(DownloadError, match=r"http:// and https://|not a valid URL"):
        await download(session, url, tmp_path / "file", FAST)
    assert _files(tmp_path) == []


async def test_a_cancelled_download_leaves_nothing(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    limits = DownloadLimits(max_bytes=HUGE, total_timeout=30.0, stall_timeout=30.0, targets=LOOPBACK)
    running = asyncio.create_task(download(session, f"{server.url}/stall", tmp_path / "file", limits))
    await until(lambda: bool(_files(tmp_path)), what="the partial file is created")
    assert _files(tmp_path)[0].endswith(".part")

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert _files(tmp_path) == []


async def test_a_redirect_to_a_link_local_address_is_refused_before_any_request(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The requester's own server (allowlisted here) redirects the worker to cloud metadata."""
    url = f"{server.url}/to?where=http://169.254.169.254/latest/meta-data/"
    with pytest.raises(
        DownloadError, match=r"refused \(redirect 1 to http://169.254.169.254/.*link-local address"
    ):
        await download(session, url, tmp_path / "f", FAST)
    assert _files(tmp_path) == []


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://localhost:{port}/good", "localhost resolves to a loopback address 127.0.0.1"),
        ("http://127.0.0.1:{port}/good", "loopback address 127.0.0.1"),
        ("http://10.1.2.3/x", "private address 10.1.2.3"),
        ("http://[::ffff:192.168.1.1]/x", "private address 192.168.1.1"),
        ("http://100.64.0.1/x", "non-public address 100.64.0.1"),
        ("http://224.0.0.1/x", "multicast address 224.0.0.1"),
    ],
)
async def test_private_targets_are_refused_by_default_also_after_resolution(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path, url: str, kind: str
) -> None:
    default = DownloadLimits(max_bytes=HUGE, total_timeout=5.0, stall_timeout=1.0)
    with pytest.raises(DownloadError, match=f"refused: {re.escape(kind)}"):
        await download(session, url.format(port=URL(server.url).port), tmp_path / "f", default)
    assert _files(tmp_path) == []


async def test_the_guarded_session_cannot_connect_to_a_refused_address(
    server: FileServer, tmp_path: Path
) -> None:
    """Second line, for a name that resolves differently at connect time (DNS rebinding)."""
    async with guarded_session(TargetPolicy()) as guarded:
        with pytest.raises(DownloadError, match=r"loopback address 127\.0\.0\.1"):
            # FAST allowlists loopback, so the check before the request passes; the resolver does not.
            await download(guarded, f"http://localhost:{URL(server.url).port}/good", tmp_path / "f", FAST)
