"""Writing into a folder an app controlled, without ever writing through what the app left there.

The app owns ``iexec_out`` while it runs and may leave anything under any name: a symbolic link to
``~/.ssh/authorized_keys``, to the worker's SQLite journal or to another task's output, a hard link, a
FIFO. Every file the worker writes into such a folder (``stdout.txt``, ``stderr.txt``, ``error.txt``,
``computed.json``, the result zip) goes through :func:`create_new_file`:

- the folder is opened once, without following a link (``O_NOFOLLOW | O_DIRECTORY``), and every later
  step is relative to that descriptor, so swapping the folder for a link changes nothing;
- whatever sits under the name is unlinked: a link is removed, never followed; a folder is refused;
- the file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW``: if anything reappears under the name
  between the unlink and the create, the create fails instead of opening it.

A file left by the app is thus replaced by the worker's own; nothing outside the folder is touched.
:func:`move_into` does the same for a file the worker wrote elsewhere first (the app's whole logs): the
rename replaces the name, never what a link there points to.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from worker.result.errors import ResultError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class UnsafeResultPath(ResultError):
    """A file cannot be written where the app left something that must not be replaced or followed."""


@contextlib.contextmanager
def _directory(directory: Path) -> Iterator[int]:
    """``directory`` opened without following a link, as a descriptor for the steps relative to it."""
    try:
        dir_fd = os.open(directory, _DIR_FLAGS)
    except OSError as exc:
        raise UnsafeResultPath(
            f"{directory}: cannot be opened as a folder without following links ({exc.strerror})"
        ) from exc
    try:
        yield dir_fd
    finally:
        os.close(dir_fd)


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UnsafeResultPath(f"{name!r} is not a plain file name")


def _clear(directory: Path, dir_fd: int, name: str) -> None:
    """Unlink whatever the app left under ``name`` (never following it); refuse a folder."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        # Linux answers EISDIR for a folder (POSIX says EPERM).
        if exc.errno in (errno.EISDIR, errno.EPERM):
            raise UnsafeResultPath(
                f"{directory / name}: the app left a folder under this name; the worker writes this "
                "file itself, so the app must not create it"
            ) from exc
        raise UnsafeResultPath(f"{directory / name}: cannot be replaced ({exc.strerror})") from exc


def move_into(directory: Path, name: str, source: Path) -> None:
    """Move the worker's file ``source`` to ``directory/name``, replacing what the app left under the name.

    A rename replaces a link, never follows it; ``source`` must be on the same filesystem.
    """
    _check_name(name)
    with _directory(directory) as dir_fd:
        _clear(directory, dir_fd, name)
        try:
            os.rename(source, name, dst_dir_fd=dir_fd)
        except OSError as exc:
            raise UnsafeResultPath(f"{directory / name}: cannot be moved in place ({exc.strerror})") from exc


@contextlib.contextmanager
def create_new_file(directory: Path, name: str, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A fresh regular file ``directory/name`` open for writing, replacing what was under ``name``.

    Raises ``UnsafeResultPath`` when ``directory`` is a link or not a folder, when ``name`` is not a
    plain file name, or when a folder (or something reappearing at once) sits under ``name``.
    """
    _check_name(name)
    with _directory(directory) as dir_fd:
        _clear(directory, dir_fd, name)
        try:
            fd = os.open(name, _NEW_FILE_FLAGS, mode, dir_fd=dir_fd)
        except OSError as exc:
            raise UnsafeResultPath(
                f"{directory / name}: cannot be created as a new file ({exc.strerror}); "
                "something reappeared under this name"
            ) from exc
    with os.fdopen(fd, "wb") as handle:
        yield handle


def write_new_file(directory: Path, name: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` as the fresh file ``directory/name`` (see :func:`create_new_file`)."""
    try:
        with create_new_file(directory, name, mode) as handle:
            handle.write(data)
    except UnsafeResultPath:
        raise
    except OSError as exc:
        raise UnsafeResultPath(f"{directory / name}: cannot be written ({exc.strerror or exc})") from exc
