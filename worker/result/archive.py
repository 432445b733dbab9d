"""Standard post-compute: check the result file names, zip ``iexec_out`` and publish ``computed.json``.

Layout (iexec-worker ``PostComputeService``): ``output/iexec_out/`` is what the app wrote,
``output/iexec_out.zip`` and ``output/computed.json`` are produced here. Entries are the regular
files of ``iexec_out`` with paths relative to it, DEFLATE-compressed; a symbolic link or special
file becomes an empty entry, so nothing outside the folder is ever read. The zip may be bounded in
size, so a runaway app cannot fill the disk through it.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import stat
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from typing_extensions import Buffer

from worker.result.computed import (
    COMPUTED_FILE_NAME,
    IEXEC_OUT,
    MAX_COMPUTED_FILE_BYTES,
    read_bounded_regular_file,
)
from worker.result.errors import (
    ComputedFileInvalid,
    ComputedFileMissing,
    ResultFileNameTooLong,
    ResultFolderUnreadable,
    ResultZipFailed,
)
from worker.result.safe_write import create_new_file, write_new_file

ZIP_NAME = "iexec_out.zip"
MAX_RESULT_FILE_NAME_LENGTH = 31
CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class PostComputeResult:
    zip_path: Path
    computed_path: Path


def run_standard_post_compute(output: Path, *, max_zip_bytes: int | None = None) -> PostComputeResult:
    """Check names, zip ``output/iexec_out`` and copy its ``computed.json`` next to the zip.

    Raises a ``ResultError`` saying why not.
    """
    iexec_out = output / IEXEC_OUT
    check_file_names(iexec_out)
    zip_path = output / ZIP_NAME
    zip_folder(iexec_out, zip_path, max_bytes=max_zip_bytes)
    computed_path = output / COMPUTED_FILE_NAME
    copy_computed_file(iexec_out / COMPUTED_FILE_NAME, computed_path)
    return PostComputeResult(zip_path=zip_path, computed_path=computed_path)


async def run_standard_post_compute_async(
    output: Path, *, max_zip_bytes: int | None = None
) -> PostComputeResult:
    return await asyncio.to_thread(run_standard_post_compute, output, max_zip_bytes=max_zip_bytes)


def check_file_names(iexec_out: Path) -> None:
    """Every file name under ``iexec_out`` must fit in 31 UTF-16 code units (iexec-worker ``PostComputeService``).

    As there, only files are checked, at any depth: a folder's own name is free, a link is a file (it is not
    followed, its name is checked). Every offending file is named, then the check fails.
    """
    too_long: list[str] = []
    try:
        for entry, relative in _walk(iexec_out):
            if (
                not entry.is_dir(follow_symlinks=False)
                and _java_length(entry.name) > MAX_RESULT_FILE_NAME_LENGTH
            ):
                too_long.append(relative)
    except OSError as exc:
        raise ResultFolderUnreadable(f"{iexec_out}: cannot be listed ({exc})") from exc
    if too_long:
        shown = ", ".join(sorted(too_long)[:10]) + (" …" if len(too_long) > 10 else "")
        raise ResultFileNameTooLong(
            f"{iexec_out}: result file names are limited to {MAX_RESULT_FILE_NAME_LENGTH} characters, "
            f"{len(too_long)} file(s) have longer ones ({shown}); the app must use shorter names",
        )


def zip_folder(folder: Path, zip_path: Path, *, max_bytes: int | None = None) -> None:
    """Zip the files of ``folder`` into ``zip_path``.

    Raises ``ResultZipFailed``, also when ``max_bytes`` would be exceeded.
    """
    try:
        with create_new_file(zip_path.parent, zip_path.name) as raw:
            sink = _CappedWriter(raw, max_bytes)
            with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                entries = sorted(_walk(folder), key=lambda item: item[1])
                for entry, relative in entries:
                    if entry.is_dir(follow_symlinks=False):
                        continue
                    _add_entry(archive, entry, relative)
    except _TooLarge as exc:
        zip_path.unlink(missing_ok=True)
        raise ResultZipFailed(
            f"{zip_path}: the result zip would exceed the maximum result size of {max_bytes} bytes; "
            "the app must write less to /iexec_out or the limit must be raised",
        ) from exc
    except (OSError, UnicodeError, zipfile.LargeZipFile) as exc:
        zip_path.unlink(missing_ok=True)
        raise ResultZipFailed(f"{folder}: cannot be zipped into {zip_path} ({exc})") from exc


def copy_computed_file(source: Path, destination: Path) -> None:
    if not os.path.lexists(source):
        raise ComputedFileMissing(f"{source}: the app wrote no computed.json")
    data = read_bounded_regular_file(source, MAX_COMPUTED_FILE_BYTES, ComputedFileInvalid)
    write_new_file(destination.parent, destination.name, data)


def _add_entry(archive: zipfile.ZipFile, entry: os.DirEntry[str], relative: str) -> None:
    info = entry.stat(follow_symlinks=False)
    zinfo = zipfile.ZipInfo(relative, date_time=_zip_time(info.st_mtime))
    zinfo.compress_type = zipfile.ZIP_DEFLATED
    zinfo.external_attr = (stat.S_IFREG | stat.S_IMODE(info.st_mode)) << 16
    if not stat.S_ISREG(info.st_mode):
        # A link's target and a special file's stream are never read: the entry stays empty.
        archive.writestr(zinfo, b"")
        return
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    with os.fdopen(os.open(entry.path, flags), "rb") as source:
        if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
            archive.writestr(zinfo, b"")
            return
        with archive.open(zinfo, "w", force_zip64=True) as target:
            shutil.copyfileobj(source, target, CHUNK_BYTES)


def _walk(root: Path) -> Iterator[tuple[os.DirEntry[str], str]]:
    """Every entry under ``root`` with its ``/``-separated relative path; links are not entered."""
    pending = [(str(root), "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                relative = prefix + entry.name
                yield entry, relative
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, relative + "/"))


def _java_length(name: str) -> int:
    return len(name.encode("utf-16-le", "surrogatepass")) // 2


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    # The zip format cannot express dates before 1980.
    year, month, day, hour, minute, second = time.localtime(max(mtime, 315532800))[:6]
    return (max(year, 1980), month, day, hour, minute, second)


class _TooLarge(Exception):
    pass


class _CappedWriter(io.RawIOBase):
    """A seekable binary sink that refuses to grow past ``limit`` bytes."""

    def __init__(self, raw: BinaryIO, limit: int | None) -> None:
        super().__init__()
        self._raw = raw
        self._limit = limit

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: Buffer) -> int:
        size = memoryview(data).nbytes
        if self._limit is not None and self._raw.tell() + size > self._limit:
            raise _TooLarge
        return self._raw.write(data)

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def flush(self) -> None:
        self._raw.flush()
