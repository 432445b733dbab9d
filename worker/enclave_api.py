"""The worker's enclave endpoint: what pre-compute and post-compute enclaves call while a TEE task computes.

Routes of iexec-worker ``ComputeController``, on their own listener rather than on the worker's
/metrics and /health server: enclaves dial ``http://worker:13100`` (the default of the reference's
pre/post-compute images), and only the pre/post-compute containers are told who ``worker`` is. The
listener binds the gateway address of the enclaves' Docker network (IEXEC_WORKER_ENCLAVE_NETWORK_NAME);
app containers run on another network (IEXEC_WORKER_DOCKER_NETWORK_NAME) whose isolation is theirs.
When the worker itself runs in a container on the enclaves' network (name or alias ``worker``), set
IEXEC_WORKER_ENCLAVE_ENDPOINT_HOST=0.0.0.0 instead. Every call must carry the task enclave's signature
(``EnclaveCallbacks``); the bodies are small, and bounded.

| route | body | answers |
|---|---|---|
| ``POST /compute/{pre|post}/{chainTaskId}/exit-causes`` | ``[{"cause", "message"}]`` | 200, 208 (already), 400, 401, 404 |
| ``POST /compute/{pre|post}/{chainTaskId}/exit`` (older enclaves) | ``{"cause"}`` | same |
| ``POST /compute/post/{chainTaskId}/computed`` | computed file JSON | 200 (the task id), 400, 401, 404 |
| ``POST /iexec_out/{chainTaskId}/computed`` (older enclaves) | same | same |
"""

from __future__ import annotations

import errno
import json
import logging
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from worker.protocol.errors import ConfigurationError
from worker.protocol.tee import WorkflowError
from worker.replicate.enclave_callbacks import Answer, EnclaveCallbacks

log = logging.getLogger("iexec.worker.enclave")

ENCLAVE_PORT = 13100
"""The port the reference's pre/post-compute images dial (``worker:13100``)."""
MAX_BODY = 256 * 1024
_CAUSES = TypeAdapter(list[WorkflowError])


class EnclaveRoutes:
    """What the routes answer with: ``callbacks`` once this worker runs TEE tasks (404 until then)."""

    def __init__(self, callbacks: EnclaveCallbacks | None = None) -> None:
        self.callbacks = callbacks


def create_enclave_app(callbacks: EnclaveCallbacks) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    add_enclave_routes(app, EnclaveRoutes(callbacks))
    return app


def add_enclave_routes(app: web.Application, routes: EnclaveRoutes) -> None:
    """The routes on ``app``: their own listener, or the /health server when it already holds every address."""

    def ready() -> EnclaveCallbacks:
        if routes.callbacks is None:
            raise web.HTTPNotFound(text="this worker runs no TEE task")
        return routes.callbacks

    def answer(result: Answer) -> web.Response:
        return web.Response(status=result.status, text=result.text)

    def signature(request: web.Request) -> str:
        return request.headers.get("Authorization", "").strip()

    async def exit_causes(request: web.Request) -> web.Response:
        try:
            causes = _CAUSES.validate_json(await request.read())
        except ValidationError:
            return web.Response(status=400, text='body must be [{"cause": "...", "message": "..."}]')
        return answer(
            await ready().exit_causes(
                request.match_info["stage"], request.match_info["task_id"], signature(request), causes
            )
        )

    async def exit_message(request: web.Request) -> web.Response:
        try:
            body: Any = json.loads(await request.read())
            cause = WorkflowError(cause=str(body["cause"]))
        except (ValueError, KeyError, TypeError, ValidationError):
            return web.Response(status=400, text='body must be {"cause": "..."}')
        return answer(
            await ready().exit_causes(
                request.match_info["stage"], request.match_info["task_id"], signature(request), [cause]
            )
        )

    async def computed(request: web.Request) -> web.Response:
        return answer(
            await ready().computed(request.match_info["task_id"], signature(request), await request.read())
        )

    app.router.add_post("/compute/{stage}/{task_id}/exit-causes", exit_causes)
    app.router.add_post("/compute/{stage}/{task_id}/exit", exit_message)
    app.router.add_post("/compute/post/{task_id}/computed", computed)
    app.router.add_post("/iexec_out/{task_id}/computed", computed)


def shares_health_server(http_host: str, http_port: int, port: int = ENCLAVE_PORT) -> bool:
    """True when the /health server already listens on every address at the enclaves' port: the routes
    then ride on it (the reference's layout), since no second listener can take that port."""
    return http_port == port and http_host in ("0.0.0.0", "::", "")


class EnclaveEndpoint:
    """Serves the enclave routes on ``host:port`` inside the worker's event loop."""

    def __init__(self, callbacks: EnclaveCallbacks, host: str, port: int = ENCLAVE_PORT) -> None:
        self._runner = web.AppRunner(create_enclave_app(callbacks), access_log=None)
        self.host = host
        self.port = port

    async def start(self) -> None:
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as exc:
            await self._runner.cleanup()
            hint = (
                "another process (or this worker's /health server, when IEXEC_WORKER_HTTP_HOST is 0.0.0.0 and "
                f"IEXEC_WORKER_PORT is {self.port}) holds that port; free it or bind /health to 127.0.0.1"
                if exc.errno == errno.EADDRINUSE
                else "set IEXEC_WORKER_ENCLAVE_ENDPOINT_HOST to an address of this host (0.0.0.0 when the worker "
                "runs in a container on the enclaves' network)"
            )
            raise ConfigurationError(
                f"enclave endpoint cannot listen on {self.host}:{self.port} ({exc.strerror}): {hint}"
            ) from exc
        log.info(
            "enclave endpoint on http://%s:%d (pre/post-compute enclaves call it as worker:%d)",
            self.host,
            self.port,
            self.port,
        )

    async def stop(self) -> None:
        await self._runner.cleanup()
