"""Debian's ``chromium`` in headless mode: what a person's browser shows of a page, as DOM and as pixels.

Each run gets a fresh profile folder and every background service of the browser off, so it talks to
nothing but the page's own address (127.0.0.1 in the tests). ``--virtual-time-budget`` lets the page's
scripts run (fetch, render) before the DOM is dumped or the screenshot taken.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

CHROMIUM = "chromium"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
)  # fmt: skip


def chromium_path() -> str:
    path = shutil.which(CHROMIUM)
    if path is None:
        raise AssertionError("chromium is not installed: run scripts/bootstrap.sh (apt-get install chromium)")
    return path


async def _chromium(*args: str, within: float = 60) -> bytes:
    with tempfile.TemporaryDirectory(prefix="iexec-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            chromium_path(), *FLAGS, f"--user-data-dir={profile}", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), within)
    if proc.returncode != 0:
        raise AssertionError(f"chromium exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    return out


async def dump_dom(url: str, *, budget_ms: int = 4000) -> str:
    """The page's DOM after its scripts ran for ``budget_ms`` of virtual time."""
    return (await _chromium(f"--virtual-time-budget={budget_ms}", "--dump-dom", url)).decode()


async def screenshot(url: str, path: Path, *, size: str = "1400,1000", budget_ms: int = 4000) -> Path:
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    await _chromium(
        f"--virtual-time-budget={budget_ms}", f"--window-size={size}", f"--screenshot={path}", url
    )
    if not await asyncio.to_thread(lambda: path.is_file() and path.stat().st_size > 0):
        raise AssertionError(f"chromium wrote no screenshot at {path}")
    return path
