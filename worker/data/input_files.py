"""Input files of a task (deal param ``iexec_input_files``): each URL saved as ``<input>/0x<sha256(url)>``.

The name is what the app finds in ``IEXEC_INPUT_FILE_NAME_<i>``; it depends on the URL only, so two
workers of the same task name the same file the same way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp

from worker.data.downloads import Downloaded, DownloadError, DownloadLimits, Progress, download
from worker.data.errors import InputFileUnavailable


def input_file_name(url: str) -> str:
    return "0x" + hashlib.sha256(url.encode("utf-8")).hexdigest()


async def download_input_file(
    session: aiohttp.ClientSession,
    input_dir: Path,
    url: str,
    limits: DownloadLimits,
    *,
    position: tuple[int, int] = (1, 1),
    max_bytes: int | None = None,
    on_progress: Progress | None = None,
) -> Downloaded:
    """Save ``url`` under its name in ``input_dir``; raise ``InputFileUnavailable`` if it cannot be fetched.

    ``position`` is (1-based index, count) of the file in ``iexec_input_files``, for the message.
    """
    try:
        return await download(
            session,
            url,
            input_dir / input_file_name(url),
            limits,
            max_bytes=max_bytes,
            on_progress=on_progress,
        )
    except DownloadError as exc:
        index, count = position
        raise InputFileUnavailable(f"input file {index} of {count}, {exc}") from exc
