"""The worker's HTTP endpoints served on loopback with an in-memory Health (unit tests: no worker)."""

from __future__ import annotations

import socket
import time

import aiohttp
import pytest

from tests.support import serving_app
from worker.http import HttpServer, create_http_app
from worker.membership import Health
from worker.membership.health import StartStage
from worker.membership.status import Identity, StatusView
from worker.metrics import Metrics
from worker.protocol.errors import ConfigurationError


async def test_probes_page_and_status_document() -> None:
    health = Health()
    health.enter(StartStage.SCHEDULER, "waiting for the scheduler at http://x (attempt 3, next in 8 s)")
    status = StatusView(Identity("w", "0.1.0", "http://x", "0xpool", 1.3, 10), health)
    async with (
        serving_app(create_http_app(Metrics(), health, status)) as base,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(f"{base}/livez") as response:
            assert response.status == 200
        async with session.get(f"{base}/readyz") as response:
            assert response.status == 503
            assert (await response.json())["waitingFor"].endswith("(attempt 3, next in 8 s)")
        async with session.get(f"{base}/health") as response:
            assert response.status == 503
            assert (await response.json())["stage"] == "scheduler"
        health.joined, health.last_ping_ok = True, time.time()
        async with session.get(f"{base}/readyz") as response:
            assert response.status == 200
        async with session.get(f"{base}/", allow_redirects=False) as response:
            assert response.headers["Location"] == "/status"
        async with session.get(f"{base}/status") as response:
            assert response.content_type == "text/html"
            assert '<script src="/status/status.js">' in await response.text()
        async with session.get(f"{base}/status/status.js") as response:
            assert response.content_type == "application/javascript"
        async with session.get(f"{base}/api/status") as response:
            assert (await response.json())["worker"]["ready"] is True


async def test_a_port_already_taken_is_a_configuration_error_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpServer(create_http_app(Metrics(), Health()), "127.0.0.1", port)
        with pytest.raises(
            ConfigurationError, match=rf"IEXEC_WORKER_PORT={port} on IEXEC_WORKER_HTTP_HOST=127.0.0.1"
        ):
            await server.start()
