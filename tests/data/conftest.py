"""A file server on 127.0.0.1 that misbehaves on demand, for the download tests (real HTTP, no fakes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support import serving_app
from tests.support.files import FileServer, _routes


@pytest.fixture
async def server() -> AsyncIterator[FileServer]:
    release = asyncio.Event()
    async with serving_app(_routes(release), access_log=None, shutdown_timeout=1.0) as url:
        try:
            yield FileServer(url, release)
        finally:
            release.set()  # before the server stops: it waits for the requests held on it


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http
