"""Dataset and input files of a task against a real HTTP server on 127.0.0.1 (see conftest)."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import aiohttp
import pytest

from tests.support.files import CID, GOOD, GOOD_CHECKSUM, FileServer
from worker.data import DataError, DatasetRef, DownloadLimits, download_task_data, input_file_name
from worker.protocol.status import ReplicateStatusCause
from worker.protocol.targets import TargetPolicy
from worker.replicate.causes import cause_of
from worker.replicate.ports import Stage

# The test servers listen on 127.0.0.1: allowlisted, as a devnet operator does.
LOOPBACK = TargetPolicy.allowing("127.0.0.0/8")
ADDRESS = "0x" + "ab" * 20
LIMITS = DownloadLimits(
    max_bytes=10 * len(GOOD), total_timeout=10.0, stall_timeout=1.0, max_redirects=3, targets=LOOPBACK
)


def _files(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir())


async def _fetch(
    session: aiohttp.ClientSession,
    folder: Path,
    *,
    dataset: DatasetRef | None = None,
    input_files: list[str] | None = None,
    gateways: list[str] | None = None,
    limits: DownloadLimits = LIMITS,
) -> None:
    await download_task_data(
        session,
        folder,
        dataset=dataset,
        input_files=input_files or [],
        limits=limits,
        gateways=gateways or [],
    )


async def test_dataset_over_http_is_saved_under_its_address(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    folder = tmp_path / "input"
    await _fetch(session, folder, dataset=DatasetRef(ADDRESS, f"{server.url}/good", GOOD_CHECKSUM))
    assert (folder / ADDRESS).read_bytes() == GOOD
    assert _files(folder) == [ADDRESS]


async def test_dataset_with_a_wrong_checksum_is_refused(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    wrong = "0x" + hashlib.sha256(b"what was registered").hexdigest()
    with pytest.raises(DataError) as caught:
        await _fetch(session, tmp_path, dataset=DatasetRef(ADDRESS, f"{server.url}/good", wrong))
    assert cause_of(Stage.DOWNLOAD_DATA, caught.value) is ReplicateStatusCause.DATASET_FILE_BAD_CHECKSUM
    assert wrong in str(caught.value)
    assert GOOD_CHECKSUM in str(caught.value)
    assert not (tmp_path / ADDRESS).exists()


async def test_dataset_without_checksum_is_accepted_with_a_warning(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="worker.data"):
        await _fetch(session, tmp_path, dataset=DatasetRef(ADDRESS, f"{server.url}/good", ""))
    assert (tmp_path / ADDRESS).read_bytes() == GOOD
    assert any(
        "INSECURE" in record.getMessage() and ADDRESS in record.getMessage() for record in caplog.records
    )


async def test_dataset_download_failure(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = f"{server.url}/missing"
    with pytest.raises(DataError) as caught:
        await _fetch(session, tmp_path, dataset=DatasetRef(ADDRESS, url, GOOD_CHECKSUM))
    assert cause_of(Stage.DOWNLOAD_DATA, caught.value) is ReplicateStatusCause.DATASET_FILE_DOWNLOAD_FAILED
    assert url in str(caught.value)
    assert "HTTP 404" in str(caught.value)


async def test_ipfs_dataset_falls_back_to_the_next_gateway(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gateways = [f"{server.url}/gw-broken", f"{server.url}/gw/"]
    await _fetch(
        session, tmp_path, dataset=DatasetRef(ADDRESS, f"/ipfs/{CID}", GOOD_CHECKSUM), gateways=gateways
    )
    assert (tmp_path / ADDRESS).read_bytes() == GOOD


async def test_ipfs_dataset_fails_when_every_gateway_fails(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gateways = [f"{server.url}/gw-broken", "http://127.0.0.1:1"]
    with pytest.raises(DataError) as caught:
        await _fetch(
            session, tmp_path, dataset=DatasetRef(ADDRESS, f"/ipfs/{CID}", GOOD_CHECKSUM), gateways=gateways
        )
    assert cause_of(Stage.DOWNLOAD_DATA, caught.value) is ReplicateStatusCause.DATASET_FILE_DOWNLOAD_FAILED
    message = str(caught.value)
    assert "any of the 2 IPFS gateways" in message
    assert "HTTP 502" in message
    assert "cannot connect to 127.0.0.1:1" in message
    assert _files(tmp_path) == []


@pytest.mark.parametrize(
    ("address", "uri", "expected"),
    [
        (ADDRESS, "s3://bucket/data", "neither an http(s) URL nor an IPFS multiaddr"),
        (ADDRESS, f"/ipfs/{CID}/../../etc/passwd", "not a valid IPFS multiaddr"),
        ("../escape", "http://127.0.0.1:1/data", "not 0x followed by 40 hex digits"),
    ],
)
async def test_unusable_dataset_references(
    session: aiohttp.ClientSession, tmp_path: Path, address: str, uri: str, expected: str
) -> None:
    with pytest.raises(DataError, match=re.escape(expected)) as caught:
        await _fetch(
            session, tmp_path / "input", dataset=DatasetRef(address, uri, GOOD_CHECKSUM), gateways=["x"]
        )
    assert cause_of(Stage.DOWNLOAD_DATA, caught.value) is ReplicateStatusCause.DATASET_FILE_DOWNLOAD_FAILED
    assert _files(tmp_path) == ["input"]
    assert _files(tmp_path / "input") == []


async def test_input_files_are_named_after_the_sha256_of_their_url(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    urls = [f"{server.url}/inputs/a.txt", f"{server.url}/inputs/b.txt?version=2"]

    await _fetch(session, tmp_path, input_files=urls)

    for url in urls:
        name = "0x" + hashlib.sha256(url.encode("utf-8")).hexdigest()
        assert input_file_name(url) == name
        assert (tmp_path / name).read_bytes() == GOOD
    assert len(_files(tmp_path)) == 2


def test_input_file_name_known_answer() -> None:
    # Computed independently with `printf '%s' URL | sha256sum`; the URL is hashed as UTF-8.
    assert input_file_name("https://example.com/a.txt") == (
        "0xe23a1e463a3d07a258a5fcdf4e5e30cd80eaa0b10aeaf7cae3ceeb4727ec598a"
    )
    assert input_file_name("https://example.com/é") == (
        "0xbd66231abfb4df41b230ec78501766bd1ddca19bd9287bb3773182944d8a48a1"
    )


async def test_input_file_failure_names_the_file_without_its_secrets(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    host = server.url.removeprefix("http://")
    urls = [f"{server.url}/inputs/a.txt", f"http://alice:pa55word@{host}/missing?token=s3cret"]
    with pytest.raises(DataError) as caught:
        await _fetch(session, tmp_path, input_files=urls)
    message = str(caught.value)
    assert cause_of(Stage.DOWNLOAD_DATA, caught.value) is ReplicateStatusCause.INPUT_FILES_DOWNLOAD_FAILED
    assert "input file 2 of 2" in message
    assert f"{server.url}/missing?…" in message
    assert "s3cret" not in message
    assert "pa55word" not in message


async def test_dataset_and_input_files_share_one_size_budget(
    server: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    limits = DownloadLimits(
        max_bytes=int(len(GOOD) * 1.5), total_timeout=10.0, stall_timeout=1.0, targets=LOOPBACK
    )
    with pytest.raises(DataError) as caught:
        await _fetch(
            session,
            tmp_path,
            dataset=DatasetRef(ADDRESS, f"{server.url}/good", GOOD_CHECKSUM),
            input_files=[f"{server.url}/inputs/a.txt"],
            limits=limits,
        )
    assert cause_of(Stage.DOWNLOAD_DATA, caught.value) is ReplicateStatusCause.INPUT_FILES_DOWNLOAD_FAILED
    assert f"over the {len(GOOD) // 2} bytes" in str(caught.value)
    assert _files(tmp_path) == [ADDRESS]
