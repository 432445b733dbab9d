"""The dataset of a standard task: downloaded from its on-chain URI and checked against its on-chain checksum.

The URI is either an http(s) URL or an IPFS multiaddr (``/ipfs/<cid>[/path]``), fetched through a list of
gateways tried in order. The file is saved as ``<input>/<dataset address>``, the name the app finds in
``IEXEC_DATASET_FILENAME``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from worker.data.downloads import Downloaded, DownloadError, DownloadLimits, Progress, download
from worker.data.errors import DatasetChecksumMismatch, DatasetUnavailable
from worker.protocol.redact import display_url

log = logging.getLogger(__name__)

DEFAULT_IPFS_GATEWAYS: tuple[str, ...] = (
    "https://ipfs-gateway.v8-bellecour.iex.ec",
    "https://gateway.ipfs.io",
    "https://gateway.pinata.cloud",
)

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
# A CID (base58 or base32) followed by an optional path of plain segments: nothing that could climb out of
# the gateway's /ipfs/ namespace or smuggle a query.
_IPFS_MULTIADDR = re.compile(r"^/ipfs/[A-Za-z0-9]+(/[A-Za-z0-9._~-]+)*/?$")


@dataclass(frozen=True)
class DatasetRef:
    address: str
    uri: str
    """http(s) URL or IPFS multiaddr, as registered on chain."""
    checksum: str
    """``0x`` + sha256 of the file, as registered on chain; empty means unchecked."""


def is_ipfs_multiaddr(uri: str) -> bool:
    return uri.startswith("/ipfs/")


def dataset_file_name(address: str) -> str:
    if not _ADDRESS.match(address):
        raise DatasetUnavailable(
            f"dataset address {address!r} is not 0x followed by 40 hex digits",
        )
    return address


async def download_dataset(
    session: aiohttp.ClientSession,
    input_dir: Path,
    dataset: DatasetRef,
    limits: DownloadLimits,
    *,
    gateways: list[str] | tuple[str, ...] = DEFAULT_IPFS_GATEWAYS,
    max_bytes: int | None = None,
    on_progress: Progress | None = None,
) -> Downloaded:
    """Save the dataset as ``input_dir/<address>``; raise a ``DataError`` saying why not."""
    destination = input_dir / dataset_file_name(dataset.address)
    uri = dataset.uri.strip()
    if is_ipfs_multiaddr(uri):
        downloaded = await _from_gateways(
            session, uri, destination, limits, gateways, max_bytes=max_bytes, on_progress=on_progress
        )
    elif uri.lower().startswith(("http://", "https://")):
        try:
            downloaded = await download(
                session, uri, destination, limits, max_bytes=max_bytes, on_progress=on_progress
            )
        except DownloadError as exc:
            raise DatasetUnavailable(f"dataset {dataset.address}: {exc}") from exc
    else:
        raise DatasetUnavailable(
            f"dataset {dataset.address}: URI {display_url(uri)!r} is neither an http(s) URL nor an "
            "IPFS multiaddr (/ipfs/<cid>); the dataset owner must register a downloadable URI",
        )
    await _check(dataset, downloaded)
    return downloaded


async def _from_gateways(
    session: aiohttp.ClientSession,
    multiaddr: str,
    destination: Path,
    limits: DownloadLimits,
    gateways: list[str] | tuple[str, ...],
    *,
    max_bytes: int | None,
    on_progress: Progress | None,
) -> Downloaded:
    if not _IPFS_MULTIADDR.match(multiaddr) or {".", ".."} & set(multiaddr.split("/")):
        raise DatasetUnavailable(
            f"dataset URI {multiaddr!r} is not a valid IPFS multiaddr (/ipfs/<cid>[/path])",
        )
    if not gateways:
        raise DatasetUnavailable(
            f"dataset {multiaddr} is on IPFS but no gateway is configured; set IEXEC_WORKER_IPFS_GATEWAYS",
        )
    failures: list[str] = []
    for gateway in gateways:
        url = gateway.rstrip("/") + multiaddr
        try:
            return await download(
                session, url, destination, limits, max_bytes=max_bytes, on_progress=on_progress
            )
        except DownloadError as exc:
            log.warning("IPFS gateway failed for %s: %s", multiaddr, exc)
            failures.append(str(exc))
    raise DatasetUnavailable(
        f"dataset {multiaddr} could not be fetched from any of the {len(gateways)} IPFS gateways: "
        + "; ".join(failures),
    )


async def _check(dataset: DatasetRef, downloaded: Downloaded) -> None:
    expected = dataset.checksum.strip()
    actual = "0x" + downloaded.sha256
    if not expected:
        log.warning(
            "INSECURE: dataset %s has no on-chain checksum; %s is used unchecked (sha256 %s)",
            dataset.address,
            downloaded.path,
            actual,
        )
        return
    if expected.lower() != actual:
        await asyncio.to_thread(downloaded.path.unlink, missing_ok=True)
        raise DatasetChecksumMismatch(
            f"dataset {dataset.address} from {display_url(dataset.uri)}: sha256 is {actual}, the on-chain "
            f"checksum is {expected}; the file at this URI changed since the dataset was registered",
        )
