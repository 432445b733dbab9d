"""The result digest a worker contributes, computed as every iExec worker computes it.

The rules are those of iexec-common ``ResultUtils`` and ``FileHashUtils``:

* Callback task: keccak256 of the bytes of ``callback-data``.
* Otherwise the target is ``output + deterministic-output-path`` (plain concatenation, as the Java
  worker does): a file gives sha256 of its bytes; a directory gives keccak256 of the concatenated
  sha256 of its direct children, sorted by UTF-16 code units of their names (Java ``File.compareTo``),
  where anything that is not a readable regular file contributes no bytes.

The app controls everything under ``iexec_out``, so the digest never reads outside it: a path or a
symbolic link leading out of ``iexec_out`` fails the digest instead of being followed. Files are hashed
in chunks, so a large result never sits in memory; the ``*_async`` variants run in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from pathlib import Path

from eth_utils.crypto import keccak

from worker.protocol.crypto import java_hex_decode, to_hex
from worker.result.computed import IEXEC_OUT, ComputedFile
from worker.result.errors import ResultDigestUnavailable

CHUNK_BYTES = 1024 * 1024
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def compute_result_digest(output: Path, computed: ComputedFile, *, callback: bool) -> str:
    """The ``0x``-prefixed digest; ``ResultDigestUnavailable`` says why there is none.

    ``output`` is the task's output folder (the parent of ``iexec_out``); ``callback`` tells whether
    the deal names a callback contract.
    """
    if callback:
        return callback_result_digest(computed.callback_data)
    return web2_result_digest(output, computed.deterministic_output_path)


async def compute_result_digest_async(output: Path, computed: ComputedFile, *, callback: bool) -> str:
    return await asyncio.to_thread(compute_result_digest, output, computed, callback=callback)


def callback_result_digest(callback_data: str | None) -> str:
    if not callback_data:
        raise ResultDigestUnavailable(
            "computed.json has no callback-data, yet the deal has a callback: the app must write it",
        )
    digits = callback_data[2:] if callback_data[:2] in ("0x", "0X") else callback_data
    if not set(digits) <= _HEX_DIGITS:
        raise ResultDigestUnavailable("computed.json callback-data must be hexadecimal (0x...)")
    # Odd lengths are accepted the way web3j decodes them (a leading half byte).
    return to_hex(keccak(java_hex_decode(digits)))


def web2_result_digest(output: Path, deterministic_output_path: str | None) -> str:
    if not deterministic_output_path:
        raise ResultDigestUnavailable(
            "computed.json has no deterministic-output-path: the app must name its result in it"
        )
    root = os.path.realpath(output / IEXEC_OUT)
    candidate = str(output) + deterministic_output_path
    if not _is_inside(os.path.normpath(candidate), os.path.normpath(output / IEXEC_OUT)):
        raise ResultDigestUnavailable(
            f"deterministic-output-path {deterministic_output_path!r} must name something under /{IEXEC_OUT}",
        )
    target = os.path.realpath(candidate)
    if not _is_inside(target, root):
        raise ResultDigestUnavailable(
            f"deterministic-output-path {deterministic_output_path!r} is a link leading out of /{IEXEC_OUT}; "
            "it is not followed",
        )
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError as exc:
        raise ResultDigestUnavailable(
            f"deterministic-output-path {deterministic_output_path!r} does not exist in the output",
        ) from exc
    except OSError as exc:
        raise ResultDigestUnavailable(f"{target}: cannot be read ({exc.strerror})") from exc
    if stat.S_ISREG(mode):
        return to_hex(_sha256_file(target))
    if stat.S_ISDIR(mode):
        return directory_digest(target, root)
    raise ResultDigestUnavailable(
        f"deterministic-output-path {deterministic_output_path!r} is neither a file nor a directory",
    )


def directory_digest(directory: str | Path, root: str | Path) -> str:
    """keccak256 of the sha256 of each direct child of ``directory``; links may not leave ``root``."""
    real_root = os.path.realpath(root)
    with os.scandir(directory) as entries:
        children = sorted(entries, key=lambda entry: _java_order(entry.name))
    parts: list[bytes] = []
    for child in children:
        path = child.path
        if child.is_symlink():
            path = os.path.realpath(child.path)
            if not _is_inside(path, real_root):
                raise ResultDigestUnavailable(
                    f"{child.path} is a link leading out of /{IEXEC_OUT}; it is not followed",
                )
        parts.append(_child_hash(path))
    return to_hex(keccak(b"".join(parts)))


def _child_hash(path: str) -> bytes:
    # Sub-directories, dangling links and special files contribute no bytes, as with Java workers,
    # whose read of such a child fails and yields an empty hash.
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise ResultDigestUnavailable(f"{path}: cannot be read ({exc.strerror})") from exc
    return _sha256_file(path) if stat.S_ISREG(mode) else b""


def _sha256_file(path: str) -> bytes:
    # O_NONBLOCK: a FIFO swapped in after the stat above must not block the thread forever.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ResultDigestUnavailable(f"{path}: cannot be read ({exc.strerror})") from exc
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ResultDigestUnavailable(f"{path}: not a regular file")
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.digest()


def _java_order(name: str) -> bytes:
    # Big-endian UTF-16 bytes compare exactly like Java strings (code unit by code unit).
    return name.encode("utf-16-be", "surrogatepass")


def _is_inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
