"""A file server on 127.0.0.1 for the download tests, and the files it serves."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from aiohttp import web

GOOD = bytes(range(256)) * (10 * 1024)

GOOD_CHECKSUM = "0x" + hashlib.sha256(GOOD).hexdigest()

HUGE = 20 * 1024 * 1024

CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


@dataclass
class FileServer:
    url: str
    release: asyncio.Event
    """Set at teardown: lets the stalling handlers return."""


async def _good(_: web.Request) -> web.Response:
    return web.Response(body=GOOD)


async def _missing(_: web.Request) -> web.Response:
    return web.Response(status=404, text="no such file")


async def _bad_gateway(_: web.Request) -> web.Response:
    return web.Response(status=502, text="upstream failed")


async def _loop(request: web.Request) -> web.Response:
    raise web.HTTPFound(str(request.rel_url))


async def _moved(_: web.Request) -> web.Response:
    raise web.HTTPFound("/good")


async def _to(request: web.Request) -> web.Response:
    """A redirect to wherever ``?where=`` says: a requester's server pointing the worker at a private host."""
    raise web.HTTPFound(request.query["where"])


async def _stream(request: web.Request, *, declared: bool, pause: float = 0.0) -> web.StreamResponse:
    response = web.StreamResponse()
    if declared:
        response.content_length = HUGE
    await response.prepare(request)
    chunk = b"x" * (1 if pause else 64 * 1024)
    sent = 0
    try:
        while sent < HUGE:
            await response.write(chunk)
            sent += len(chunk)
            if pause:
                await asyncio.sleep(pause)
    except ConnectionResetError:
        pass  # the client gave up, as it should
    return response


def _routes(release: asyncio.Event) -> web.Application:
    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(GOOD)
        await response.prepare(request)
        await response.write(GOOD[:10])
        await release.wait()
        return response

    async def huge_declared(request: web.Request) -> web.StreamResponse:
        return await _stream(request, declared=True)

    async def huge_chunked(request: web.Request) -> web.StreamResponse:
        return await _stream(request, declared=False)

    async def trickle(request: web.Request) -> web.StreamResponse:
        return await _stream(request, declared=False, pause=0.02)

    app = web.Application()
    app.router.add_get("/good", _good)
    app.router.add_get("/to", _to)
    app.router.add_get("/moved", _moved)
    app.router.add_get("/missing", _missing)
    app.router.add_get("/loop", _loop)
    app.router.add_get("/stall", stall)
    app.router.add_get("/huge-declared", huge_declared)
    app.router.add_get("/huge-chunked", huge_chunked)
    app.router.add_get("/trickle", trickle)
    app.router.add_get("/inputs/{name}", _good)
    app.router.add_get("/gw-broken/ipfs/{tail:.*}", _bad_gateway)
    app.router.add_get(f"/gw/ipfs/{CID}", _good)
    return app
