"""The worker's own HTTP endpoint: /metrics for Prometheus, /health for orchestrators, /version."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker import __version__
from worker.membership import Health
from worker.metrics import Metrics

ReplicatesView = Callable[[], Awaitable[list[dict[str, Any]]]]


def create_http_app(
    metrics: Metrics, health: Health, replicates: ReplicatesView | None = None
) -> web.Application:
    async def get_metrics(_: web.Request) -> web.Response:
        payload = await asyncio.to_thread(generate_latest, metrics.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_health(_: web.Request) -> web.Response:
        alive, body = health.report()
        return web.json_response(body, status=200 if alive else 503)

    async def get_version(_: web.Request) -> web.Response:
        return web.Response(text=__version__)

    async def get_replicates(_: web.Request) -> web.Response:
        return web.json_response(await replicates() if replicates else [])

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/health", get_health)
    app.router.add_get("/version", get_version)
    app.router.add_get("/replicates", get_replicates)
    return app


class HttpServer:
    """Runs inside the worker's lifecycle (AppRunner + TCPSite), not as a separate event loop."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self._host = host
        self._port = port
        self.port = port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        if server is not None and self._port == 0:
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        await self._runner.cleanup()
