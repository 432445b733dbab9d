"""Everything a standard task reads: its dataset, then its input files, under one size budget."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp

from worker.data.dataset import DEFAULT_IPFS_GATEWAYS, DatasetRef, download_dataset
from worker.data.downloads import DownloadLimits, Progress
from worker.data.input_files import download_input_file, input_file_name

TaskProgress = Callable[[str, int, int | None], None]
"""Called with (file name in the input folder, bytes written so far, announced total or None)."""


async def download_task_data(
    session: aiohttp.ClientSession,
    task_input_dir: Path,
    *,
    dataset: DatasetRef | None,
    input_files: list[str],
    limits: DownloadLimits,
    gateways: list[str] | tuple[str, ...] = DEFAULT_IPFS_GATEWAYS,
    on_progress: TaskProgress | None = None,
) -> None:
    """Download the dataset and input files of a task into ``task_input_dir``.

    ``limits.max_bytes`` bounds the whole task, so many input files cannot fill the disk either.
    Raises ``DatasetUnavailable``, ``DatasetChecksumMismatch`` or ``InputFileUnavailable``.
    """
    await asyncio.to_thread(task_input_dir.mkdir, parents=True, exist_ok=True)
    used = 0
    if dataset is not None:
        downloaded = await download_dataset(
            session,
            task_input_dir,
            dataset,
            limits,
            gateways=gateways,
            on_progress=_named(on_progress, dataset.address),
        )
        used += downloaded.size
    # Names hash the URL exactly as the requester wrote it, so the list is used as is.
    for index, url in enumerate(input_files, start=1):
        downloaded = await download_input_file(
            session,
            task_input_dir,
            url,
            limits,
            position=(index, len(input_files)),
            max_bytes=limits.max_bytes - used,
            on_progress=_named(on_progress, input_file_name(url)),
        )
        used += downloaded.size


def _named(on_progress: TaskProgress | None, name: str) -> Progress | None:
    if on_progress is None:
        return None
    return lambda written, total: on_progress(name, written, total)
