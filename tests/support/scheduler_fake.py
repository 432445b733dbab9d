"""A small fake iexec-core for the client's unit tests, served by aiohttp on 127.0.0.1.

It checks logins the way the real scheduler does (crypto.login_signature_matches), hands out
random tokens, and lets a test script answers or expire every token (as a scheduler restart does).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from worker.protocol.crypto import keccak_hex, login_signature_matches
from worker.protocol.models import PublicConfiguration

# Anvil's well-known first development key: public, never used on a real chain.
WORKER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
PUBLIC_CONFIGURATION = PublicConfiguration(
    worker_pool_address="0x" + "ab" * 20,
    scheduler_public_address="0x" + "cd" * 20,
    config_server_url="http://127.0.0.1:1/config-server",
    result_repository_url="http://127.0.0.1:1/result-proxy",
    ask_for_replicate_period=5000,
    required_worker_version="",
)
CHAIN_CONFIG = {
    "chainId": 65535,
    "sidechain": True,
    "chainNodeUrl": "http://127.0.0.1:8545",
    "iexecHubContractAddress": "0x" + "12" * 20,
    "blockTime": "PT5S",
    "addedInALaterVersion": 1,
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeCore:
    """State and scripted answers of the fake scheduler; the tests read and change it directly."""

    challenges: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # token -> wallet
    whitelist: set[str] | None = None
    logins: int = 0
    calls: list[str] = field(default_factory=list)  # "METHOD /path"
    bodies: list[object] = field(default_factory=list)  # JSON bodies of authenticated POSTs
    # Answers of updateStatus, consumed in order; when empty: 200 "PLEASE_CONTINUE".
    update_answers: list[tuple[int, str]] = field(default_factory=list)
    available: tuple[int, str] = (204, "")
    interrupted: str = "[]"
    computing: str = "[]"
    ping_answer: str = keccak_hex("0x" + PUBLIC_CONFIGURATION.lombok_string().encode().hex())
    missing_content_type: int = 0
    url: str = ""
    # When set, served as the challenge instead of a real one (an impostor's choice of what to sign).
    challenge_text: str | None = None

    def restart(self) -> None:
        """The scheduler's JWT key lives in its memory: after a restart no old token is valid."""
        self.tokens.clear()

    def count(self, call: str) -> int:
        return self.calls.count(call)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/version", self._text("9.3.0"))
        app.router.add_get("/workers/config", self._text(PUBLIC_CONFIGURATION.to_json()))
        app.router.add_get("/config-server/config/chain", self._text(json.dumps(CHAIN_CONFIG)))
        app.router.add_get("/workers/challenge", self._challenge)
        app.router.add_post("/workers/login", self._login)
        app.router.add_post("/workers/ping", self._authed(lambda: (200, self.ping_answer)))
        app.router.add_post("/workers/register", self._authed(lambda: (200, json.dumps({"id": "1"}))))
        app.router.add_get("/workers/computing", self._authed(lambda: (200, self.computing)))
        app.router.add_get("/replicates/available", self._authed(lambda: self.available))
        app.router.add_get("/replicates/interrupted", self._authed(lambda: (200, self.interrupted)))
        app.router.add_post("/replicates/{task}/updateStatus", self._authed(self._update))
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.calls.append(f"{request.method} {request.path}")
        if request.headers.get("Content-Type") != "application/json":
            self.missing_content_type += 1
        return await handler(request)

    @staticmethod
    def _text(body: str) -> Handler:
        async def answer(_: web.Request) -> web.StreamResponse:
            return web.Response(text=body)

        return answer

    def _authed(self, answer: Callable[[], tuple[int, str]]) -> Handler:
        async def check(request: web.Request) -> web.StreamResponse:
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer ") or header.removeprefix("Bearer ") not in self.tokens:
                return web.Response(status=401)
            if request.can_read_body:
                self.bodies.append(await request.json())
            status, body = answer()
            return web.Response(status=status, text=body)

        return check

    async def _challenge(self, request: web.Request) -> web.Response:
        wallet = request.query["walletAddress"]
        if self.whitelist is not None and wallet not in self.whitelist:
            return web.Response(status=401)
        if self.challenge_text is not None:
            return web.Response(text=self.challenge_text)
        # Base64 of 32 random bytes, as the real scheduler: the client must hash it web3j's odd way.
        challenge = self.challenges.setdefault(wallet, base64.b64encode(secrets.token_bytes(32)).decode())
        return web.Response(text=challenge)

    async def _login(self, request: web.Request) -> web.Response:
        wallet = request.query["walletAddress"]
        signature = (await request.json())["value"]
        challenge = self.challenges.get(wallet)
        if challenge is None or not login_signature_matches(challenge, signature, wallet):
            return web.Response(status=401)
        del self.challenges[wallet]
        self.logins += 1
        token = secrets.token_urlsafe(32)
        self.tokens[token] = wallet
        return web.Response(text=token)

    def _update(self) -> tuple[int, str]:
        return self.update_answers.pop(0) if self.update_answers else (200, json.dumps("PLEASE_CONTINUE"))
