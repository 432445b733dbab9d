"""Worker authentication: Base64 login challenge, raw-ECDSA signature check and HS256 JWT.

Same rules as iexec-core (``ChallengeService``, ``JwtTokenProvider``): one challenge per wallet for
5 minutes from its creation, a per-process random JWT key (a restart invalidates every token), one
cached token per wallet valid 1 hour, and an optional case-sensitive whitelist.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Collection

import jwt

from worker.protocol.crypto import login_signature_matches

CHALLENGE_TTL_S = 300.0
TOKEN_TTL_S = 3600


class Authenticator:
    def __init__(self, version: str, whitelist: Collection[str] = ()) -> None:
        self._audience = f"iExec Scheduler v{version}"
        self._key = secrets.token_bytes(128)
        self._whitelist = frozenset(whitelist)
        self._challenges: dict[str, tuple[str, float]] = {}
        self._tokens: dict[str, str] = {}

    def forget(self) -> None:
        """A new signing key, no challenge or token left: what a restart of iexec-core does."""
        self._key = secrets.token_bytes(128)
        self._challenges.clear()
        self._tokens.clear()

    def is_allowed(self, wallet: str) -> bool:
        return not self._whitelist or wallet in self._whitelist

    def challenge(self, wallet: str) -> str:
        now = time.monotonic()
        cached = self._challenges.get(wallet)
        if cached and now - cached[1] < CHALLENGE_TTL_S:
            return cached[0]
        value = base64.b64encode(secrets.token_bytes(32)).decode()
        self._challenges[wallet] = (value, now)
        return value

    def login(self, wallet: str, signature: str) -> str | None:
        """The JWT for ``wallet`` if ``signature`` signs its pending challenge, else None."""
        if not login_signature_matches(self.challenge(wallet), signature, wallet):
            return None
        del self._challenges[wallet]
        cached = self._tokens.get(wallet)
        if cached is not None and self.subject(cached) is not None:
            return cached
        now = int(time.time())
        claims = {"aud": self._audience, "iat": now, "exp": now + TOKEN_TTL_S, "sub": wallet}
        token = jwt.encode(claims, self._key, algorithm="HS256")
        self._tokens[wallet] = token
        return token

    def subject(self, token: str) -> str | None:
        """The wallet a cached, unexpired token was issued to, else None."""
        try:
            claims = jwt.decode(token, self._key, algorithms=["HS256"], audience=self._audience)
        except jwt.ExpiredSignatureError:
            for wallet, cached in list(self._tokens.items()):
                if cached == token:
                    del self._tokens[wallet]
            return None
        except jwt.InvalidTokenError:
            return None
        subject = claims.get("sub")
        if not isinstance(subject, str) or self._tokens.get(subject) != token:
            return None
        return subject

    def bearer_subject(self, header: str | None) -> str | None:
        if not header or not header.startswith("Bearer "):
            return None
        return self.subject(header[len("Bearer ") :])
