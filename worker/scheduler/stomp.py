"""Push channel from the scheduler: STOMP 1.2 over SockJS, on SockJS's HTTP transports only.

iexec-core exposes ``{coreUrl}/connect`` as a SockJS endpoint with WebSocket disabled and a simple
STOMP broker behind it (iexec-core ``WebSocketConfig``). The worker subscribes to
``/topic/task/{chainTaskId}`` for every task it works on; the scheduler publishes a
``TaskNotification`` JSON body there.

Transports: ``xhr_streaming`` (one long POST that streams frames, reopened when the server ends it
after its byte limit), falling back to ``xhr`` long polling when streaming is refused. Messages go
up with ``xhr_send``. Notifications published while the channel is down are not replayed by the
scheduler; the caller recovers through ``/replicates/interrupted`` and the next-action answers.

The frame codec is sans-io and lives in ``worker.protocol.stomp``; this module is the aiohttp client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Final

import aiohttp
from yarl import URL

from worker.protocol.bounded import read_capped
from worker.protocol.errors import SchedulerError
from worker.protocol.stomp import SERVER_COMMANDS, FrameDecoder, StompFrame, StompProtocolError, encode_frame

log = logging.getLogger(__name__)


Handler = Callable[[str], Awaitable[None]]

TRANSPORTS: Final = ("xhr_streaming", "xhr")
_MAX_SOCKJS_LINE: Final = 1024 * 1024


class PushChannelError(SchedulerError):
    """The push channel broke (refused transport, closed session, ERROR frame, garbled data)."""


class _TransportRefused(PushChannelError):
    """The server answered the first receive request of a transport with an error status."""


# What a broken link raises: worth a reconnect, never a crash. OSError covers sockets reset
# underneath aiohttp's own exceptions.
_LINK_ERRORS: Final = (aiohttp.ClientError, OSError, TimeoutError, PushChannelError)


class _Link:
    """One SockJS session carrying one STOMP session."""

    def __init__(self, endpoint: URL, transport: str) -> None:
        self.transport = transport
        base = endpoint / f"{secrets.randbelow(1000):03d}" / secrets.token_hex(8)
        self.receive_url = base / transport
        self.send_url = base / "xhr_send"
        self.send_lock = asyncio.Lock()
        self.decoder = FrameDecoder(SERVER_COMMANDS, max_frame_bytes=_MAX_SOCKJS_LINE)
        self.ready = False
        self.dead = False
        self.sub_ids: dict[str, str] = {}  # destination -> subscription id
        self.destinations: dict[str, str] = {}  # subscription id -> destination
        self.receipts: dict[str, asyncio.Future[None]] = {}
        self.response: aiohttp.ClientResponse | None = None
        self._next_id = 0

    def new_id(self, kind: str) -> str:
        self._next_id += 1
        return f"{kind}-{self._next_id}"

    def abort(self) -> None:
        """Break the receive side so the session ends and is rebuilt."""
        self.dead = True
        self.ready = False
        if self.response is not None:
            self.response.close()


class PushChannel:
    """Keeps a STOMP session to the scheduler and dispatches MESSAGE bodies to topic handlers.

    ``run(stop)`` owns the connection: it connects, re-connects with backoff after any drop and
    re-subscribes every current topic each time. ``subscribe``/``unsubscribe`` only change the
    wanted set when the channel is down; the set is applied on the next connect.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
        connect_timeout: float = 15.0,
        idle_timeout: float = 20.0,
        send_timeout: float = 10.0,
        heartbeat_ms: int = 10_000,
        transports: Iterable[str] = TRANSPORTS,
        endpoint_path: str = "/connect",
    ) -> None:
        self._http = session
        self._endpoint = URL(base_url.rstrip("/") + endpoint_path)
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._send_timeout = send_timeout
        self._heartbeat_ms = heartbeat_ms
        self._transports = tuple(transports)
        unknown = set(self._transports) - set(TRANSPORTS)
        if unknown or not self._transports:
            raise ValueError(
                f"push channel transports {sorted(unknown)} unknown: choose from {list(TRANSPORTS)}"
            )
        self._topics: dict[str, Handler] = {}
        self._lock = asyncio.Lock()
        self._link: _Link | None = None
        self._ready = asyncio.Event()
        self._sessions = 0
        self.transport: str | None = None

    # -- public state ---------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._ready.is_set()

    # A bool answer reads better at call sites (`if not await ch.wait_connected(5)`) than a raise.
    async def wait_connected(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """True once a STOMP session is up with every topic subscribed; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    @property
    def reconnects(self) -> int:
        """STOMP sessions established after the first one (for the reconnect counter metric)."""
        return max(self._sessions - 1, 0)

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(self._topics)

    # -- subscriptions --------------------------------------------------------------------

    async def subscribe(self, destination: str, handler: Handler) -> None:
        async with self._lock:
            self._topics[destination] = handler
            link = self._link
            if link is None or not link.ready or destination in link.sub_ids:
                return
            frame = self._subscribe_frame(link, destination)
            await self._send_or_abort(link, [frame], f"SUBSCRIBE {destination}")

    async def unsubscribe(self, destination: str) -> None:
        async with self._lock:
            self._topics.pop(destination, None)
            link = self._link
            if link is None or not link.ready or destination not in link.sub_ids:
                return
            sub_id = link.sub_ids.pop(destination)
            link.destinations.pop(sub_id, None)
            frame = StompFrame("UNSUBSCRIBE", {"id": sub_id})
            await self._send_or_abort(link, [frame], f"UNSUBSCRIBE {destination}")

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        delay = self._reconnect_delay
        while not stop.is_set():
            sessions_before = self._sessions
            serve = asyncio.create_task(self._serve(), name="push-channel-session")
            stopped = asyncio.create_task(stop.wait(), name="push-channel-stop")
            error: BaseException | None = None
            try:
                await asyncio.wait({serve, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if stop.is_set() and not serve.done():
                    await self._disconnect()
            finally:
                stopped.cancel()
                serve.cancel()
                # asyncio.wait neither raises the task's error nor swallows our own cancellation.
                await asyncio.wait({serve, stopped})
                self._drop_link(quietly=stop.is_set())
                if not serve.cancelled():
                    error = serve.exception()
            if stop.is_set():
                break
            if self._sessions > sessions_before:
                delay = self._reconnect_delay
            if isinstance(error, _LINK_ERRORS):
                log.warning(
                    "push channel to %s down (%s), retry in %.3g s", self._endpoint, _describe(error), delay
                )
            elif error is not None:
                raise error
            else:
                log.info("push channel to %s ended, reconnecting in %.3g s", self._endpoint, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
            delay = min(delay * 2, self._max_reconnect_delay)
        log.info("push channel stopped")

    async def _serve(self) -> None:
        await self._fetch_info()
        for index, transport in enumerate(self._transports):
            link = _Link(self._endpoint, transport)
            try:
                await self._serve_link(link)
                return
            except _TransportRefused as exc:
                if index == len(self._transports) - 1:
                    raise
                log.info("push channel transport %s refused (%s), trying the next one", transport, exc)

    async def _fetch_info(self) -> None:
        url = self._endpoint / "info"
        timeout = aiohttp.ClientTimeout(total=self._connect_timeout)
        async with self._http.get(url, timeout=timeout) as resp:
            if resp.status != 200:
                raise PushChannelError(f"GET {url} answered HTTP {resp.status}: is the scheduler URL right?")
            try:
                info = json.loads(await read_capped(resp.content.iter_chunked(64 * 1024), _MAX_SOCKJS_LINE))
            except ValueError as exc:  # AnswerTooLarge included
                raise PushChannelError(f"GET {url} did not answer SockJS info JSON") from exc
        if not isinstance(info, dict):
            raise PushChannelError(f"GET {url} did not answer a SockJS info object")

    async def _serve_link(self, link: _Link) -> None:
        heartbeat: asyncio.Task[None] | None = None
        opened = False
        try:
            connect_deadline = asyncio.timeout(self._connect_timeout)
            async with connect_deadline, contextlib.aclosing(self._sockjs_frames(link)) as frames:
                async for sockjs in frames:
                    kind = sockjs[:1]
                    if kind == "h":
                        continue
                    if kind == "o":
                        if opened:
                            raise PushChannelError("SockJS 'o' frame received twice on one session")
                        opened = True
                        await self._send(link, [self._connect_frame()])
                    elif not opened:
                        raise PushChannelError(f"SockJS session did not start with 'o' but {sockjs[:40]!r}")
                    elif kind == "a":
                        for frame in self._stomp_frames(link, sockjs):
                            if frame.command == "CONNECTED":
                                connect_deadline.reschedule(None)
                                heartbeat = self._on_connected(link, frame)
                                await self._resubscribe(link)
                            else:
                                await self._on_frame(link, frame)
                    elif kind == "c":
                        raise PushChannelError(f"scheduler closed the SockJS session: {sockjs[1:80]}")
                    else:
                        raise PushChannelError(f"unknown SockJS frame {sockjs[:40]!r}")
        except TimeoutError as exc:
            if connect_deadline.expired():
                raise PushChannelError(
                    f"no STOMP CONNECTED from the scheduler within {self._connect_timeout} s"
                ) from exc
            raise
        finally:
            link.dead = True
            if heartbeat is not None:
                heartbeat.cancel()
                await asyncio.wait({heartbeat})

    async def _sockjs_frames(self, link: _Link) -> AsyncGenerator[str, None]:
        first = True
        while not link.dead:
            if link.transport == "xhr_streaming":
                timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout)
            else:
                timeout = aiohttp.ClientTimeout(total=self._idle_timeout, sock_connect=self._connect_timeout)
            async with self._http.post(link.receive_url, timeout=timeout) as resp:
                link.response = resp
                if resp.status != 200:
                    message = f"POST {link.receive_url} answered HTTP {resp.status}"
                    raise _TransportRefused(message) if first else PushChannelError(message)
                first = False
                pending = bytearray()
                while True:
                    try:
                        async with asyncio.timeout(self._idle_timeout):
                            chunk = await resp.content.readany()
                    except TimeoutError as exc:
                        raise PushChannelError(
                            f"scheduler silent for {self._idle_timeout} s (SockJS heartbeats expected)"
                        ) from exc
                    if not chunk:
                        break  # the server ends a streaming response after its byte limit
                    pending += chunk
                    while (end := pending.find(b"\n")) >= 0:
                        line = bytes(pending[:end])
                        del pending[: end + 1]
                        if not line:
                            continue
                        try:
                            frame = line.decode("utf-8")
                        except UnicodeDecodeError as exc:
                            raise PushChannelError("SockJS frame is not UTF-8") from exc
                        # The 2 KiB 'hhh…' streaming prelude reads as a heartbeat.
                        yield "h" if frame.strip("h") == "" else frame
                        if frame.startswith("c"):
                            return
                    if len(pending) > _MAX_SOCKJS_LINE:
                        raise PushChannelError(f"SockJS frame longer than {_MAX_SOCKJS_LINE} bytes")
                link.response = None
        raise PushChannelError("push channel session abandoned after a failed send")

    @staticmethod
    def _stomp_frames(link: _Link, sockjs: str) -> list[StompFrame]:
        try:
            messages = json.loads(sockjs[1:])
        except ValueError as exc:
            raise PushChannelError(f"SockJS 'a' frame is not a JSON array: {exc}") from exc
        if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
            raise PushChannelError("SockJS 'a' frame is not a JSON array of strings")
        frames: list[StompFrame] = []
        try:
            for message in messages:
                link.decoder.feed(message.encode("utf-8"))
                frames.extend(link.decoder.frames())
        except StompProtocolError as exc:
            raise PushChannelError(f"scheduler sent a malformed STOMP frame: {exc}") from exc
        return frames

    def _connect_frame(self) -> StompFrame:
        beat = self._heartbeat_ms
        headers = {
            "accept-version": "1.1,1.2",
            "host": self._endpoint.host or "localhost",
            "heart-beat": f"{beat},{beat}",
        }
        return StompFrame("CONNECT", headers)

    def _on_connected(self, link: _Link, frame: StompFrame) -> asyncio.Task[None] | None:
        self._sessions += 1
        self.transport = link.transport
        log.info(
            "push channel connected to %s over %s (STOMP %s)",
            self._endpoint,
            link.transport,
            frame.headers.get("version", "1.0"),
        )
        # heart-beat negotiation (STOMP 1.2 §Heart-beating): we must send every max(cx, sy) ms
        # when both are non-zero. Incoming silence is already bounded by idle_timeout.
        try:
            server_wants = int(frame.headers.get("heart-beat", "0,0").split(",")[1])
        except (IndexError, ValueError):
            server_wants = 0
        if self._heartbeat_ms and server_wants:
            period = max(self._heartbeat_ms, server_wants) / 1000
            return asyncio.create_task(self._send_heartbeats(link, period), name="push-channel-heartbeat")
        return None

    async def _send_heartbeats(self, link: _Link, period: float) -> None:
        while not link.dead:
            await asyncio.sleep(period)
            await self._send_or_abort(link, ["\n"], "heart-beat")

    async def _resubscribe(self, link: _Link) -> None:
        async with self._lock:
            frames = [self._subscribe_frame(link, destination) for destination in self._topics]
            if frames:
                await self._send(link, frames)
            link.ready = True
            self._link = link
            self._ready.set()
        if frames:
            log.info("push channel subscribed to %d topic(s)", len(frames))

    @staticmethod
    def _subscribe_frame(link: _Link, destination: str) -> StompFrame:
        sub_id = link.new_id("sub")
        link.sub_ids[destination] = sub_id
        link.destinations[sub_id] = destination
        return StompFrame("SUBSCRIBE", {"id": sub_id, "destination": destination, "ack": "auto"})

    async def _on_frame(self, link: _Link, frame: StompFrame) -> None:
        if frame.command == "MESSAGE":
            destination = link.destinations.get(frame.headers.get("subscription", ""))
            handler = self._topics.get(destination) if destination else None
            if handler is None:
                log.debug(
                    "push channel dropped a message for %s: not subscribed", frame.headers.get("destination")
                )
                return
            log.debug("push channel message on %s (%d bytes)", destination, len(frame.body))
            try:
                body = frame.text()
            except UnicodeDecodeError:
                log.warning("push channel message on %s is not UTF-8: dropped", destination)
                return
            try:
                await handler(body)
            except Exception:
                log.exception("push channel handler for %s failed", destination)
        elif frame.command == "RECEIPT":
            waiter = link.receipts.pop(frame.headers.get("receipt-id", ""), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif frame.command == "ERROR":
            raise PushChannelError(
                f"scheduler sent STOMP ERROR: {frame.headers.get('message', '(no message)')}"
            )
        else:
            raise PushChannelError(f"unexpected STOMP {frame.command} frame from the scheduler")

    async def _send(self, link: _Link, frames: Iterable[StompFrame | str]) -> None:
        messages = [f if isinstance(f, str) else encode_frame(f).decode("utf-8") for f in frames]
        body = json.dumps(messages, separators=(",", ":"))
        timeout = aiohttp.ClientTimeout(total=self._send_timeout)
        headers = {"Content-Type": "text/plain;charset=UTF-8"}
        async with (
            link.send_lock,
            self._http.post(link.send_url, data=body, headers=headers, timeout=timeout) as resp,
        ):
            if resp.status == 404:
                raise PushChannelError(f"SockJS session {link.send_url.parent.name} is gone (xhr_send 404)")
            if resp.status not in (200, 204):
                raise PushChannelError(f"POST {link.send_url} answered HTTP {resp.status}")

    async def _send_or_abort(self, link: _Link, frames: Iterable[StompFrame | str], what: str) -> None:
        try:
            await self._send(link, frames)
        except _LINK_ERRORS as exc:
            # The topic stays wanted: breaking the link makes run() reconnect and subscribe again.
            log.warning("push channel could not send %s (%s), reconnecting", what, _describe(exc))
            link.abort()

    async def _disconnect(self) -> None:
        link = self._link
        if link is None or not link.ready:
            return
        receipt = link.new_id("disconnect")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        link.receipts[receipt] = waiter
        try:
            async with asyncio.timeout(2.0):
                await self._send(link, [StompFrame("DISCONNECT", {"receipt": receipt})])
                await waiter
        except _LINK_ERRORS as exc:
            log.debug("push channel DISCONNECT not acknowledged: %s", _describe(exc))

    def _drop_link(self, *, quietly: bool) -> None:
        if self._ready.is_set() and not quietly:
            log.info("push channel to %s lost", self._endpoint)
        self._ready.clear()
        link, self._link = self._link, None
        if link is not None:
            link.ready = False
            link.dead = True
            for waiter in link.receipts.values():
                waiter.cancel()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
