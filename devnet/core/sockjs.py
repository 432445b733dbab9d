"""The development scheduler's push channel: a simple STOMP broker behind a SockJS endpoint.

It serves what iexec-core serves on ``/connect`` (its ``WebSocketConfig``): SockJS with WebSocket
disabled, so the HTTP transports only (``xhr_streaming``, ``xhr`` long polling, ``eventsource``, with
``xhr_send`` for client messages), and behind it a broker like Spring's simple broker: in memory,
destinations under ``/topic``, auto-acknowledged, no replay.

SockJS session rules kept from the reference server: heartbeat ``h`` every 5 s of silence, a
streaming response ends after 128 KiB so the client reopens it, and a session without a receiving
request for 5 s is closed (messages queued between two polls wait for the next one).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
from collections.abc import Iterable
from typing import Final, Protocol

from aiohttp import web

from worker.protocol.stomp import CLIENT_COMMANDS, FrameDecoder, StompFrame, StompProtocolError, encode_frame

log = logging.getLogger(__name__)

GO_AWAY: Final = (3000, "Go away!")
ANOTHER_CONNECTION: Final = (2010, "Another connection still open")
PROTOCOL_ERROR: Final = (1002, "STOMP protocol error")
NORMAL_CLOSURE: Final = (1000, "Normal closure")

_NO_CACHE: Final = "no-store, no-cache, must-revalidate, max-age=0"
_JS_TYPE: Final = "application/javascript;charset=UTF-8"
_SUPPORTED_VERSIONS: Final = ("1.2", "1.1")


def sockjs_message_frame(messages: Iterable[str]) -> str:
    """``a[...]`` frame; ASCII-only JSON so no transport has to care about encodings."""
    return "a" + json.dumps(list(messages), separators=(",", ":"))


def sockjs_close_frame(code: int, reason: str) -> str:
    return "c" + json.dumps([code, reason], separators=(",", ":"))


class _Link(Protocol):
    """What the broker needs from a transport session."""

    @property
    def id(self) -> str: ...

    def deliver(self, message: str) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class _StompSession:
    def __init__(self, link: _Link, max_frame_bytes: int) -> None:
        self.link = link
        self.decoder = FrameDecoder(CLIENT_COMMANDS, max_frame_bytes=max_frame_bytes)
        self.connected = False
        self.subscriptions: dict[str, str] = {}  # subscription id -> destination


class StompBroker:
    """In-memory STOMP broker: exact-destination subscriptions under ``prefix``."""

    def __init__(self, *, prefix: str = "/topic", max_frame_bytes: int = 64 * 1024) -> None:
        self._prefix = prefix.rstrip("/")
        self._max_frame_bytes = max_frame_bytes
        self._sessions: dict[str, _StompSession] = {}
        self._topics: dict[str, dict[tuple[str, str], _StompSession]] = {}
        self._message_ids = itertools.count(1)
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    # -- API for the scheduler ------------------------------------------------------------

    async def publish(self, destination: str, body: str, content_type: str = "application/json") -> None:
        if not self._routed(destination):
            raise ValueError(
                f"destination {destination!r} is outside the broker: publish under {self._prefix}/"
            )
        self._deliver(destination, body.encode("utf-8"), content_type)

    def subscriber_count(self, destination: str) -> int:
        return len(self._topics.get(destination, {}))

    async def drop_sessions(self) -> int:
        """Close every client session (``c[3000,"Go away!"]``); clients may connect again."""
        sessions = list(self._sessions.values())
        for session in sessions:
            session.link.close(*GO_AWAY)
        return len(sessions)

    async def close(self) -> None:
        """Close every session and refuse new ones."""
        self._closed = True
        await self.drop_sessions()

    # -- API for the transport ------------------------------------------------------------

    def attach(self, link: _Link) -> None:
        self._sessions[link.id] = _StompSession(link, self._max_frame_bytes)

    def detach(self, link_id: str) -> None:
        session = self._sessions.pop(link_id, None)
        if session is None:
            return
        for sub_id, destination in session.subscriptions.items():
            self._remove_subscription(destination, (link_id, sub_id))

    def receive(self, link_id: str, message: str) -> None:
        """Handle one SockJS message: any number of STOMP frames, possibly a partial one."""
        session = self._sessions.get(link_id)
        if session is None:
            return
        try:
            session.decoder.feed(message.encode("utf-8"))
            while self._sessions.get(link_id) is session and (frame := session.decoder.next_frame()):
                self._handle(session, frame)
        except StompProtocolError as exc:
            self._fail(session, str(exc))

    # -- STOMP ----------------------------------------------------------------------------

    def _handle(self, session: _StompSession, frame: StompFrame) -> None:
        command, headers = frame.command, frame.headers
        if command in ("CONNECT", "STOMP"):
            if session.connected:
                raise StompProtocolError("already connected: send CONNECT once per session")
            self._connect(session, headers.get("accept-version"))
            return
        if not session.connected:
            raise StompProtocolError(f"{command} before CONNECT: open the STOMP session first")
        if command == "SUBSCRIBE":
            sub_id, destination = self._required(frame, "id"), self._required(frame, "destination")
            if sub_id in session.subscriptions:
                raise StompProtocolError(f"subscription id {sub_id!r} is already in use in this session")
            if self._routed(destination):
                session.subscriptions[sub_id] = destination
                self._topics.setdefault(destination, {})[(session.link.id, sub_id)] = session
            else:
                log.debug("SUBSCRIBE to %s ignored: outside %s", destination, self._prefix)
        elif command == "UNSUBSCRIBE":
            sub_id = self._required(frame, "id")
            if sub_id in session.subscriptions:
                self._remove_subscription(session.subscriptions.pop(sub_id), (session.link.id, sub_id))
        elif command == "SEND":
            destination = self._required(frame, "destination")
            if self._routed(destination):
                self._deliver(destination, frame.body, headers.get("content-type"))
        elif command == "DISCONNECT":
            self._receipt(session, frame)
            session.link.close(*NORMAL_CLOSURE)
            return
        # ACK, NACK and transactions have nothing to do with auto-acknowledged topics.
        self._receipt(session, frame)

    def _connect(self, session: _StompSession, accept_version: str | None) -> None:
        offered = {v.strip() for v in (accept_version or "1.0").split(",")}
        version = next((v for v in _SUPPORTED_VERSIONS if v in offered), None)
        if version is None:
            raise StompProtocolError(f"no supported STOMP version in {accept_version!r}: offer 1.2")
        session.connected = True
        # The simple broker runs without a heart-beat scheduler, like iexec-core's: 0,0.
        self._send(session, StompFrame("CONNECTED", {"version": version, "heart-beat": "0,0"}))

    def _deliver(self, destination: str, body: bytes, content_type: str | None) -> None:
        for (_, sub_id), session in list(self._topics.get(destination, {}).items()):
            headers = {
                "destination": destination,
                "subscription": sub_id,
                "message-id": f"{session.link.id}-{next(self._message_ids)}",
            }
            if content_type:
                headers["content-type"] = content_type
            headers["content-length"] = str(len(body))
            self._send(session, StompFrame("MESSAGE", headers, body))

    def _receipt(self, session: _StompSession, frame: StompFrame) -> None:
        receipt = frame.headers.get("receipt")
        if receipt is not None:
            self._send(session, StompFrame("RECEIPT", {"receipt-id": receipt}))

    def _fail(self, session: _StompSession, message: str) -> None:
        log.info("STOMP session %s: %s", session.link.id, message)
        text = message.replace("\n", " ")[:200]
        self._send(
            session, StompFrame("ERROR", {"message": text, "content-type": "text/plain"}, text.encode())
        )
        session.link.close(*PROTOCOL_ERROR)

    @staticmethod
    def _send(session: _StompSession, frame: StompFrame) -> None:
        session.link.deliver(encode_frame(frame).decode("utf-8"))

    @staticmethod
    def _required(frame: StompFrame, name: str) -> str:
        value = frame.headers.get(name)
        if not value:
            raise StompProtocolError(f"{frame.command} needs a '{name}' header")
        return value

    def _routed(self, destination: str) -> bool:
        return destination.startswith(self._prefix + "/")

    def _remove_subscription(self, destination: str, key: tuple[str, str]) -> None:
        subscribers = self._topics.get(destination)
        if subscribers is None:
            return
        subscribers.pop(key, None)
        if not subscribers:
            del self._topics[destination]


# ---------------------------------------------------------------------------------------------
# SockJS
# ---------------------------------------------------------------------------------------------


class _SockJsSession:
    def __init__(self, session_id: str, endpoint: _SockJsEndpoint) -> None:
        self._id = session_id
        self._endpoint = endpoint
        self.pending: list[str] = []
        self.close_frame: str | None = None
        self.receiving = False
        self.wakeup = asyncio.Event()
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def id(self) -> str:
        return self._id

    @property
    def closed(self) -> bool:
        return self.close_frame is not None

    def deliver(self, message: str) -> None:
        if self.closed:
            return
        self.pending.append(message)
        self.wakeup.set()

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.close_frame = sockjs_close_frame(code, reason)
        self.wakeup.set()
        self._endpoint.broker.detach(self._id)
        if not self.receiving:
            self._schedule_expiry()

    def take(self) -> str | None:
        """The next frame to send: queued messages first, then the close frame, if any."""
        if self.pending:
            frame = sockjs_message_frame(self.pending)
            self.pending.clear()
            return frame
        return self.close_frame

    def start_receiving(self) -> None:
        self.receiving = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def stop_receiving(self) -> None:
        self.receiving = False
        # A closed session stays one disconnect delay, answering its close frame to late requests.
        self._schedule_expiry()

    def _schedule_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(self._endpoint.disconnect_delay, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        if self.receiving:
            return
        self.close(*GO_AWAY)
        self._endpoint.forget(self)


class _SockJsEndpoint:
    def __init__(
        self,
        broker: StompBroker,
        *,
        heartbeat: float,
        disconnect_delay: float,
        stream_limit: int,
    ) -> None:
        self.broker = broker
        self.heartbeat = heartbeat
        self.disconnect_delay = disconnect_delay
        self.stream_limit = stream_limit
        self.sessions: dict[str, _SockJsSession] = {}

    def forget(self, session: _SockJsSession) -> None:
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]

    async def shutdown(self, _app: web.Application) -> None:
        # Ends every streaming response so the HTTP server can stop without waiting for them.
        for session in list(self.sessions.values()):
            session.close(*GO_AWAY)

    # -- handlers -------------------------------------------------------------------------

    async def greeting(self, _request: web.Request) -> web.Response:
        return web.Response(text="Welcome to SockJS!\n", content_type="text/plain", charset="UTF-8")

    async def info(self, _request: web.Request) -> web.Response:
        body = {
            "entropy": secrets.randbits(31),
            "origins": ["*:*"],
            "cookie_needed": True,
            "websocket": False,
        }
        return web.Response(
            text=json.dumps(body),
            content_type="application/json",
            charset="UTF-8",
            headers={"Cache-Control": _NO_CACHE},
        )

    async def xhr_send(self, request: web.Request) -> web.Response:
        session = self.sessions.get(self._session_id(request))
        if session is None or session.closed:
            raise web.HTTPNotFound(text="No such SockJS session: open one with a receiving request first\n")
        raw = await request.read()
        if not raw:
            raise web.HTTPInternalServerError(text="Payload expected.")
        try:
            messages = json.loads(raw)
        except ValueError:
            raise web.HTTPInternalServerError(text="Broken JSON encoding.") from None
        if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
            raise web.HTTPInternalServerError(text="Broken JSON encoding.")
        for message in messages:
            self.broker.receive(session.id, message)
        response = web.Response(status=204, headers={"Cache-Control": _NO_CACHE})
        response.content_type = "text/plain"
        response.charset = "UTF-8"
        self._cookie(request, response)
        return response

    async def xhr(self, request: web.Request) -> web.Response:
        session, opened = self._open(request)
        if opened is not None:
            frame = opened
        elif session.receiving:
            frame = sockjs_close_frame(*ANOTHER_CONNECTION)
        else:
            session.start_receiving()
            try:
                frame = await self._next_frame(session)
            finally:
                session.stop_receiving()
        response = web.Response(text=frame + "\n", headers={"Cache-Control": _NO_CACHE})
        response.content_type = "application/javascript"
        response.charset = "UTF-8"
        self._cookie(request, response)
        return response

    async def xhr_streaming(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, _JS_TYPE, "h" * 2048 + "\n", "{}\n")

    async def eventsource(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, "text/event-stream;charset=UTF-8", "\r\n", "data: {}\r\n\r\n")

    # -- plumbing -------------------------------------------------------------------------

    @staticmethod
    def _session_id(request: web.Request) -> str:
        server, session = request.match_info["server"], request.match_info["session"]
        if not server or not session or "." in server or "." in session:
            raise web.HTTPNotFound(text="SockJS server and session ids must be non-empty and without dots\n")
        return session

    def _open(self, request: web.Request) -> tuple[_SockJsSession, str | None]:
        """The session named by the URL; the opening frame when this request created it."""
        session_id = self._session_id(request)
        session = self.sessions.get(session_id)
        if session is not None:
            return session, None
        session = _SockJsSession(session_id, self)
        self.sessions[session_id] = session
        if self.broker.closed:
            session.close(*GO_AWAY)
            return session, session.close_frame
        self.broker.attach(session)
        session.start_receiving()
        session.stop_receiving()
        return session, "o"

    async def _next_frame(self, session: _SockJsSession) -> str:
        frame = session.take()
        if frame is not None:
            return frame
        session.wakeup.clear()
        try:
            async with asyncio.timeout(self.heartbeat):
                await session.wakeup.wait()
        except TimeoutError:
            return "h"
        return session.take() or "h"

    async def _stream(
        self, request: web.Request, content_type: str, prelude: str, line: str
    ) -> web.StreamResponse:
        session, opened = self._open(request)
        response = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": _NO_CACHE})
        self._cookie(request, response)
        await response.prepare(request)

        async def write(frame: str) -> None:
            await response.write(line.format(frame).encode("utf-8"))

        try:
            await response.write(prelude.encode("ascii"))
            if opened is not None:
                await write(opened)
                if session.closed:
                    return response
            if session.receiving:
                await write(sockjs_close_frame(*ANOTHER_CONNECTION))
                return response
            session.start_receiving()
            try:
                sent = 0
                while sent < self.stream_limit:
                    frame = await self._next_frame(session)
                    await write(frame)
                    sent += len(frame) + 1
                    if frame.startswith("c"):
                        break
            finally:
                session.stop_receiving()
            await response.write_eof()
        except ConnectionResetError:
            log.debug("SockJS session %s: receiving client went away", session.id)
        return response

    @staticmethod
    def _cookie(request: web.Request, response: web.StreamResponse) -> None:
        # cookie_needed: load balancers pin the session with JSESSIONID, as Spring does.
        if "JSESSIONID" not in request.cookies:
            response.set_cookie("JSESSIONID", "dummy", path="/")


def add_sockjs_routes(
    app: web.Application,
    broker: StompBroker,
    prefix: str = "/connect",
    *,
    heartbeat: float = 5.0,
    disconnect_delay: float = 5.0,
    stream_limit: int = 128 * 1024,
) -> None:
    """Serve ``broker`` as a SockJS endpoint at ``prefix`` (HTTP transports, no WebSocket)."""
    endpoint = _SockJsEndpoint(
        broker, heartbeat=heartbeat, disconnect_delay=disconnect_delay, stream_limit=stream_limit
    )
    prefix = prefix.rstrip("/")
    session = prefix + "/{server}/{session}"
    app.router.add_get(prefix, endpoint.greeting)
    app.router.add_get(prefix + "/", endpoint.greeting)
    app.router.add_get(prefix + "/info", endpoint.info)
    app.router.add_post(session + "/xhr", endpoint.xhr)
    app.router.add_post(session + "/xhr_streaming", endpoint.xhr_streaming)
    app.router.add_post(session + "/xhr_send", endpoint.xhr_send)
    app.router.add_get(session + "/eventsource", endpoint.eventsource)
    app.on_shutdown.append(endpoint.shutdown)
