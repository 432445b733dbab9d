"""The proxy routing of outbound calls: which URL goes through which proxy, on a real aiohttp session.

Everything runs on 127.0.0.1 in the test's event loop: a small HTTP server, and the forward proxy of
tests/support/http_proxy.py whose log says what went through it.
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from tests.support import serving_app
from tests.support.http_proxy import http_proxy
from worker.proxy import DEFAULT_NON_PROXY_HOSTS, ProxyRoutes, proxy_middleware


def _app() -> web.Application:
    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPFound("/hello")

    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_get("/moved", moved)
    return app


async def test_http_calls_and_their_redirects_go_through_the_http_proxy() -> None:
    async with serving_app(_app()) as url, http_proxy() as proxy:
        routes = ProxyRoutes(http=proxy.url, non_proxy_hosts="")
        async with (
            aiohttp.ClientSession(middlewares=(proxy_middleware(routes),)) as session,
            session.get(f"{url}/moved") as response,
        ):
            assert await response.text() == "hello"
    assert proxy.log == [f"GET {url}/moved", f"GET {url}/hello"]


async def test_https_calls_are_tunnelled_through_the_https_proxy() -> None:
    async with serving_app(_app()) as url, http_proxy() as proxy:
        target = url.replace("http://", "https://") + "/hello"
        routes = ProxyRoutes(http="http://127.0.0.1:1", https=proxy.url, non_proxy_hosts="")
        async with aiohttp.ClientSession(middlewares=(proxy_middleware(routes),)) as session:
            # The test server speaks no TLS: the handshake fails, after the tunnel was asked for.
            with pytest.raises(aiohttp.ClientError):
                await session.get(target)
    assert proxy.log == [f"CONNECT {url.removeprefix('http://')}"]


async def test_exempt_hosts_are_called_directly() -> None:
    async with serving_app(_app()) as url, http_proxy() as proxy:
        routes = ProxyRoutes(http=proxy.url)  # the JVM's default exemptions: loopback
        async with (
            aiohttp.ClientSession(middlewares=(proxy_middleware(routes),)) as session,
            session.get(f"{url}/hello") as response,
        ):
            assert await response.text() == "hello"
    assert proxy.log == []


@pytest.mark.parametrize(
    ("host", "exempt"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.10.0.1", True),
        ("::1", True),
        ("0.0.0.0", True),
        ("LOCALHOST", True),
        ("localhost.example", False),
        ("10.0.0.1", False),
        ("core.example", False),
    ],
)
def test_the_jvm_default_exempts_loopback_only(host: str, exempt: bool) -> None:
    assert ProxyRoutes(http="http://p:1", non_proxy_hosts=DEFAULT_NON_PROXY_HOSTS).bypasses(host) is exempt


def test_schemes_without_a_proxy_go_direct() -> None:
    routes = ProxyRoutes(https="http://p:1", non_proxy_hosts="")
    assert routes.for_url("http://core.example") is None
    assert routes.for_url("https://core.example") == "http://p:1"
    assert routes.for_url("unix:///var/run/docker.sock") is None
    assert not ProxyRoutes().enabled
    assert ProxyRoutes().describe() == "no proxy"
