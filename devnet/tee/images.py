"""Images of the EMULATED enclaves, built from this host's files without any registry.

The pre-compute and post-compute images run ``enclave.py`` with the Python that runs the devnet: its
interpreter, the shared libraries it needs (found with ``ldd``), its standard library (without tests, GUI
and packaging tools) and the ``Crypto`` package (pycryptodome) are copied into a ``FROM scratch`` image at
the very paths they have on the host, so the interpreter finds its prefix and libraries as it does here.
The post-compute image is the pre-compute one with another entrypoint. The emulated SCONE LAS is a
busybox that sleeps. As for the app images (``devnet.images``), a label holds the sha256 of the build
context: an image whose label matches is not rebuilt.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import Crypto

from devnet.images import CONTENT_LABEL, AppImage, ImageError, build_app_image
from worker.compute import DockerEngine

PRE_COMPUTE_IMAGE = "iexec-devnet/tee-pre-compute:emulated"
POST_COMPUTE_IMAGE = "iexec-devnet/tee-post-compute:emulated"
PRE_COMPUTE_ENTRYPOINT = "/enclave/pre-compute"
POST_COMPUTE_ENTRYPOINT = "/enclave/post-compute"
LAS_REGISTRY = "iexec-devnet"
LAS = AppImage(
    tag=f"{LAS_REGISTRY}/scone-las:emulated",
    description="EMULATED SCONE LAS: sleeps until stopped (no attestation happens in the devnet)",
    script="echo 'emulated SCONE LAS (no attestation)'; exec sleep 2147483647\n",
)

# Parts of the standard library an enclave never imports.
_SKIPPED = frozenset({
    "site-packages", "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "distutils",
    "pydoc_data", "unittest", "venv", "curses", "dbm", "sqlite3", "__phello__", "lib-dynload",
})  # fmt: skip
# Shared libraries an extension module may use to be copied: the C library, zlib, libffi (ctypes, which
# pycryptodome loads its primitives with) and Python itself.
_BASE_LIBRARIES = re.compile(r"/(ld-linux[^/]*|lib(c|m|pthread|dl|util|rt|z|ffi|python3\.\d+)\.so[^/]*)$")


def _ldd(path: Path) -> list[str]:
    found = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False).stdout
    libraries = []
    for line in found.splitlines():
        parts = line.split()
        if (
            "=>" in parts
            and len(parts) > parts.index("=>") + 1
            and parts[parts.index("=>") + 1].startswith("/")
        ):
            libraries.append(parts[parts.index("=>") + 1])
        elif parts and parts[0].startswith("/"):
            libraries.append(parts[0])
    return libraries


def _files() -> Iterator[tuple[str, Path]]:
    """(path in the image, file on the host) of everything the enclave needs."""
    prefix = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    interpreter = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    yield str(interpreter), interpreter
    libraries = set(_ldd(interpreter))
    stdlib = prefix / "lib" / version
    for root, folders, names in os.walk(stdlib):
        folders[:] = [f for f in folders if f not in _SKIPPED and not f.startswith("config-")]
        for name in names:
            if name.endswith(".py") or (name.endswith(".pyc") and ".opt-" not in name):
                path = Path(root) / name
                yield str(path), path
    for module in sorted((stdlib / "lib-dynload").glob("*.so")):
        needed = _ldd(module)
        if all(_BASE_LIBRARIES.search(lib) for lib in needed):
            yield str(module), module
            libraries.update(needed)
    crypto = Path(Crypto.__path__[0])
    for path in sorted(crypto.rglob("*")):
        relative = path.relative_to(crypto)
        if path.is_file() and "SelfTest" not in relative.parts and path.suffix in (".py", ".so"):
            yield f"/enclave/lib/Crypto/{relative.as_posix()}", path
            if path.suffix == ".so":
                libraries.update(_ldd(path))
    for library in sorted(libraries):
        yield library, Path(os.path.realpath(library))
    yield "/enclave/enclave.py", Path(__file__).with_name("enclave.py")


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int, kind: bytes = tarfile.REGTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def enclave_context() -> bytes:
    """The tar build context of the pre-compute image; deterministic for the same host files."""
    interpreter = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    launcher = (
        "#!{python} -S\nimport sys\nsys.path[:0] = ['/enclave/lib', '/enclave']\nimport enclave\n"
        "sys.exit(enclave.main(['enclave', '{stage}']))\n"
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dockerfile = f'FROM scratch\nCOPY rootfs/ /\nENTRYPOINT ["{PRE_COMPUTE_ENTRYPOINT}"]\n'
        _add(tar, "Dockerfile", dockerfile.encode(), 0o644)
        _add(tar, "rootfs/tmp", b"", 0o1777, tarfile.DIRTYPE)
        seen: set[str] = set()
        for target, source in sorted(_files()):
            if target in seen:
                continue
            seen.add(target)
            try:
                data = source.read_bytes()
            except OSError as exc:
                raise ImageError(f"{source}: {exc.strerror}; the emulated enclave image needs it") from exc
            _add(tar, "rootfs" + target, data, 0o755 if os.access(source, os.X_OK) else 0o644)
        for stage, path in (("pre", PRE_COMPUTE_ENTRYPOINT), ("post", POST_COMPUTE_ENTRYPOINT)):
            _add(tar, "rootfs" + path, launcher.format(python=interpreter, stage=stage).encode(), 0o755)
    return buffer.getvalue()


def inputs_digest() -> str:
    """sha256 over what decides the image: the interpreter (path, size, time), pycryptodome's version, and
    this module and ``enclave.py`` byte for byte. Cheaper than the 60 MB context, so an unchanged image is
    found in milliseconds; a new Python or a changed enclave rebuilds it."""
    interpreter = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    info = interpreter.stat()
    digest = hashlib.sha256(f"{interpreter}:{info.st_size}:{info.st_mtime_ns}:{Crypto.__version__}".encode())
    for source in (Path(__file__), Path(__file__).with_name("enclave.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


async def _current(engine: DockerEngine, tag: str, digest: str) -> str | None:
    existing = await engine.local_image(tag)
    return existing.id if existing is not None and existing.labels.get(CONTENT_LABEL) == digest else None


async def ensure_enclave_images(engine: DockerEngine) -> dict[str, str]:
    """Build (or keep) the emulated pre-compute, post-compute and LAS images; returns tag -> image id."""
    digest = await asyncio.to_thread(inputs_digest)
    labels = {CONTENT_LABEL: digest}
    pre = await _current(engine, PRE_COMPUTE_IMAGE, digest)
    if pre is None:
        context = await asyncio.to_thread(enclave_context)
        pre = await engine.build_image(context, tag=PRE_COMPUTE_IMAGE, labels=labels, build_timeout=300.0)
    post = await _current(engine, POST_COMPUTE_IMAGE, digest)
    if post is None:
        post_context = io.BytesIO()
        with tarfile.open(fileobj=post_context, mode="w") as tar:
            _add(tar, "Dockerfile", f'FROM {pre}\nENTRYPOINT ["{POST_COMPUTE_ENTRYPOINT}"]\n'.encode(), 0o644)
        post = await engine.build_image(post_context.getvalue(), tag=POST_COMPUTE_IMAGE, labels=labels)
    las = await build_app_image(engine, LAS.tag, LAS.script)
    return {PRE_COMPUTE_IMAGE: pre, POST_COMPUTE_IMAGE: post, LAS.tag: las}
