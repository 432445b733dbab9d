"""The worker's own HTTP endpoint, served from the first moment of the process.

- ``/livez``: 200 while the process serves requests (a Kubernetes liveness probe), with the
  start-up stage; ``/readyz``: 200 once joined and the scheduler answered a recent ping, else 503
  with what it waits for; ``/health``: the detailed report (200 when UP, else 503).
- ``/metrics`` for Prometheus, ``/version``, ``/replicates`` (the replicates in hand).
- ``/status``: a live status page (plain HTML, CSS and JavaScript shipped in ``worker/static``:
  no build step, nothing loaded from elsewhere), fed by ``/api/status``.
"""

from __future__ import annotations

import asyncio
from importlib import resources

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker import __version__
from worker.membership import Health
from worker.membership.status import StatusView
from worker.metrics import Metrics

STATIC_FILES = {
    "/status": ("status.html", "text/html"),
    "/status/status.js": ("status.js", "application/javascript"),
    "/status/status.css": ("status.css", "text/css"),
}


def _static(name: str) -> bytes:
    return resources.files("worker").joinpath("static", name).read_bytes()


def create_http_app(metrics: Metrics, health: Health, status: StatusView | None = None) -> web.Application:
    async def get_metrics(_: web.Request) -> web.Response:
        payload = await asyncio.to_thread(generate_latest, metrics.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_livez(_: web.Request) -> web.Response:
        return web.json_response(health.liveness())

    async def get_readyz(_: web.Request) -> web.Response:
        ready, body = health.readiness()
        return web.json_response(body, status=200 if ready else 503)

    async def get_health(_: web.Request) -> web.Response:
        alive, body = health.report()
        return web.json_response(body, status=200 if alive else 503)

    async def get_version(_: web.Request) -> web.Response:
        return web.Response(text=__version__)

    async def get_replicates(_: web.Request) -> web.Response:
        return web.json_response(status.active_replicates() if status else [])

    async def get_status(_: web.Request) -> web.Response:
        if status is None:
            raise web.HTTPNotFound()
        return web.json_response(await status.snapshot(), headers={"Cache-Control": "no-store"})

    files = {path: (_static(name), kind) for path, (name, kind) in STATIC_FILES.items()}

    async def get_file(request: web.Request) -> web.Response:
        body, kind = files[request.path]
        return web.Response(body=body, content_type=kind, headers={"Cache-Control": "no-cache"})

    async def get_root(_: web.Request) -> web.Response:
        raise web.HTTPFound("/status")

    app = web.Application()
    app.router.add_get("/", get_root)
    app.router.add_get("/livez", get_livez)
    app.router.add_get("/readyz", get_readyz)
    app.router.add_get("/health", get_health)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/version", get_version)
    app.router.add_get("/replicates", get_replicates)
    app.router.add_get("/api/status", get_status)
    for path in files:
        app.router.add_get(path, get_file)
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
