"""Which outbound HTTP calls go through a proxy, and the aiohttp middleware that sends them there.

The reference worker reads ``IEXEC_HTTP(S)_PROXY_HOST/_PORT`` in its entrypoint and turns them into the
JVM's ``http.proxyHost``/``https.proxyHost`` properties: every HTTP client of the JVM then sends http://
URLs to one proxy and https:// URLs to the other (tunnelled with CONNECT), except hosts matching
``http.nonProxyHosts``, whose JVM default keeps loopback direct. ``ProxyRoutes`` is that rule. The
worker's one aiohttp session carries ``proxy_middleware``, so every call made with it (scheduler REST
and push channel, result proxy, datasets, input files, IPFS gateways) follows the rule without its
caller knowing; the JSON-RPC client of ``worker.chain`` opens its own sessions and is given the proxy
of each node URL by the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import ClientHandlerType, ClientMiddlewareType, ClientRequest, ClientResponse
from yarl import URL

DEFAULT_NON_PROXY_HOSTS = "localhost|127.*|[::1]|0.0.0.0|[::0]"
"""The JVM's default ``http.nonProxyHosts`` (``DefaultProxySelector``): loopback is never proxied."""


@dataclass(frozen=True)
class ProxyRoutes:
    """``http`` and ``https``: proxy URLs (``http://host:port``) for URLs of each scheme, or None."""

    http: str | None = None
    https: str | None = None
    non_proxy_hosts: str = DEFAULT_NON_PROXY_HOSTS

    @property
    def enabled(self) -> bool:
        return bool(self.http or self.https)

    def for_url(self, url: str | URL) -> str | None:
        """The proxy a call to ``url`` goes through, None when it goes direct."""
        target = URL(url) if isinstance(url, str) else url
        scheme = (target.scheme or "").lower()
        proxy = self.https if scheme in ("https", "wss") else self.http if scheme in ("http", "ws") else None
        if proxy is None or not target.host:
            return None
        return None if self.bypasses(target.host) else proxy

    def bypasses(self, host: str) -> bool:
        """True when ``host`` matches a pattern of ``non_proxy_hosts`` (``*`` allowed at either end)."""
        name = host.lower().rstrip(".")
        if ":" in name and not name.startswith("["):
            name = f"[{name}]"  # the JVM matches IPv6 literals in their URL form
        for raw in self.non_proxy_hosts.split("|"):
            pattern = raw.strip().lower()
            if not pattern:
                continue
            if pattern == "*":
                return True
            if pattern.startswith("*") and name.endswith(pattern[1:]):
                return True
            if pattern.endswith("*") and name.startswith(pattern[:-1]):
                return True
            if name == pattern:
                return True
        return False

    def describe(self) -> str:
        """For the start-up log: where each scheme goes (proxy URLs carry no credentials here)."""
        if not self.enabled:
            return "no proxy"
        return (
            f"http:// via {self.http or 'direct'}, https:// via {self.https or 'direct'}, "
            f"direct for {self.non_proxy_hosts or 'no host'}"
        )


def proxy_middleware(routes: ProxyRoutes) -> ClientMiddlewareType:
    """A client middleware that routes each request (redirects included) by ``routes``.

    A request that already names its proxy keeps it.
    """

    async def route(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        if request.proxy is None:
            proxy = routes.for_url(request.url)
            if proxy is not None:
                request.update_proxy(URL(proxy), None, None)
        return await handler(request)

    return route
