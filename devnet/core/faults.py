"""Faults a test switches on in the development scheduler: answers it gives instead of its own.

A ``FaultRule`` names the requests it matches (method, path prefix or a path part), the HTTP status it
answers instead of serving them, and how many times (``None``: until removed). The middleware is the
first of the application, so a faulty answer never reaches the scheduler's logic: its state is what
it would be had the request been lost. Refusing the push endpoint (``/connect``) cuts the STOMP
channel; answering 500 on every path is a scheduler that fails without going down.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FaultRule:
    status: int
    prefix: str = "/"
    contains: str = ""
    method: str = ""
    times: int | None = None
    """How many requests it still answers; ``None``: every one until removed."""
    hits: int = 0

    def matches(self, request: web.Request) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method and request.method != self.method:
            return False
        return request.path.startswith(self.prefix) and self.contains in request.path


@dataclass
class Faults:
    rules: list[FaultRule] = field(default_factory=list)

    def add(self, rule: FaultRule) -> FaultRule:
        self.rules.append(rule)
        return rule

    def remove(self, rule: FaultRule) -> None:
        if rule in self.rules:
            self.rules.remove(rule)

    def clear(self) -> None:
        self.rules.clear()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        for rule in self.rules:
            if rule.matches(request):
                rule.hits += 1
                if rule.times is not None:
                    rule.times -= 1
                log.info("fault: %s %s answered %d", request.method, request.path, rule.status)
                return web.Response(status=rule.status, text="")
        return await handler(request)
