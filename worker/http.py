"""The worker's own HTTP endpoint, served from the first moment of the process.

- ``/livez``: 200 while the process serves requests (a Kubernetes liveness probe), with the
  start-up stage; ``/readyz``: 200 once joined and the scheduler answered a recent ping, else 503
  with what it waits for; ``/health``: the detailed report (200 when UP, else 503).
- ``/metrics`` for Prometheus, ``/version``, ``/replicates`` (the replicates in hand).
- ``/status``: a live status page (plain HTML, CSS and JavaScript shipped in ``worker/static``:
  no build step, nothing loaded from elsewhere), fed by ``/api/status``.

Two routes answer a Java-worker client the way iexec-worker does (docs/compatibility.md):
- ``GET /version``: ``text/plain``, the body is the iexec-worker release this worker is interchangeable
  with (``IEXEC_WORKER_PROTOCOL_VERSION``, what iexec-core's ``requiredWorkerVersion`` is compared
  with), exactly as the reference writes its own version. This worker's own version is in the
  ``X-Worker-Version`` header, and both are in the JSON answer to ``Accept: application/json``.
- ``GET /metrics``: Prometheus text by default (what scrapers ask for); the reference's ``WorkerMetrics``
  JSON when the request accepts ``application/json`` and not Prometheus text, and always at
  ``GET /metrics/worker``.
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
from worker.protocol.errors import ConfigurationError

STATIC_FILES = {
    "/status": ("status.html", "text/html"),
    "/status/status.js": ("status.js", "application/javascript"),
    "/status/status.css": ("status.css", "text/css"),
}


WORKER_VERSION_HEADER = "X-Worker-Version"
_PROMETHEUS_TYPES = ("text/plain", "application/openmetrics-text")


def _static(name: str) -> bytes:
    return resources.files("worker").joinpath("static", name).read_bytes()


def wants_json(request: web.Request) -> bool:
    """True when the client asks for JSON and not for Prometheus text (a scraper names text/plain)."""
    accept = request.headers.get("Accept", "").lower()
    return "application/json" in accept and not any(kind in accept for kind in _PROMETHEUS_TYPES)


def create_http_app(
    metrics: Metrics, health: Health, status: StatusView | None = None, *, protocol_version: str = __version__
) -> web.Application:
    async def get_metrics(request: web.Request) -> web.Response:
        if wants_json(request):
            return web.json_response(metrics.worker_metrics())
        payload = await asyncio.to_thread(generate_latest, metrics.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_worker_metrics(_: web.Request) -> web.Response:
        return web.json_response(metrics.worker_metrics())

    async def get_livez(_: web.Request) -> web.Response:
        return web.json_response(health.liveness())

    async def get_readyz(_: web.Request) -> web.Response:
        ready, body = health.readiness()
        return web.json_response(body, status=200 if ready else 503)

    async def get_health(_: web.Request) -> web.Response:
        alive, body = health.report()
        return web.json_response(body, status=200 if alive else 503)

    async def get_version(request: web.Request) -> web.Response:
        headers = {WORKER_VERSION_HEADER: __version__}
        if wants_json(request):
            body = {
                "version": protocol_version,
                "protocolVersion": protocol_version,
                "workerVersion": __version__,
            }
            return web.json_response(body, headers=headers)
        return web.Response(text=protocol_version, headers=headers)

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
    app.router.add_get("/metrics/worker", get_worker_metrics)
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
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            # A port taken by another process is the operator's to fix: exit 2 with the fix, no traceback.
            raise ConfigurationError(
                f"IEXEC_WORKER_PORT={self._port} on IEXEC_WORKER_HTTP_HOST={self._host}: {exc.strerror or exc}; "
                "stop what listens there or choose another port"
            ) from None
        server = site._server
        if server is not None and self._port == 0:
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        await self._runner.cleanup()
