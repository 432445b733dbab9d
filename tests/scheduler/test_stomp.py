"""The worker's push channel (STOMP over SockJS); the frame codec is tested in tests/protocol.

Channel tests are end-to-end over real HTTP on 127.0.0.1: the
development scheduler's SockJS endpoint and broker served by aiohttp ``AppRunner`` + ``TCPSite``;
one test serves a minimal hand-written endpoint that asks for STOMP heart-beats, which the
development broker (like iexec-core's) never does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.typedefs import Middleware

from devnet.core.sockjs import StompBroker, add_sockjs_routes
from tests.support import free_port, serving_app, until
from worker.protocol.models import TaskNotification, TaskNotificationExtra
from worker.protocol.status import TaskAbortCause, TaskNotificationType
from worker.scheduler.stomp import PushChannel

TASK = "0x" + "c3" * 32
TOPIC = f"/topic/task/{TASK}"
WALLET = "0x" + "42" * 20


@asynccontextmanager
async def serving(
    broker: StompBroker, *, port: int = 0, middlewares: tuple[Middleware, ...] = (), **options: Any
) -> AsyncIterator[str]:
    options.setdefault("heartbeat", 0.5)
    app = web.Application(middlewares=list(middlewares))
    add_sockjs_routes(app, broker, **options)
    async with serving_app(app, port=port, shutdown_timeout=1.0) as url:
        yield url


@asynccontextmanager
async def running(channel: PushChannel) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(channel.run(stop), name="push-channel-under-test")
    try:
        yield task
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await task


class Inbox:
    def __init__(self) -> None:
        self.bodies: list[str] = []

    async def __call__(self, body: str) -> None:
        self.bodies.append(body)

    async def wait_for(self, count: int) -> list[str]:
        await until(lambda: len(self.bodies) >= count, within=5, what=f"{count} message(s)")
        return self.bodies


def notification(kind: TaskNotificationType = TaskNotificationType.PLEASE_ABORT) -> TaskNotification:
    return TaskNotification(
        chain_task_id=TASK,
        workers_address=[WALLET],
        task_notification_type=kind,
        task_notification_extra=TaskNotificationExtra(task_abort_cause=TaskAbortCause.CONSENSUS_REACHED),
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def fast_channel(http: aiohttp.ClientSession, base: str, **options: Any) -> PushChannel:
    options.setdefault("reconnect_delay", 0.05)
    options.setdefault("idle_timeout", 3.0)
    return PushChannel(http, base, **options)


async def test_subscribed_topic_receives_the_published_notification_verbatim(
    http: aiohttp.ClientSession,
) -> None:
    broker = StompBroker()
    seen_headers: list[dict[str, str]] = []

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        seen_headers.append(dict(request.headers))
        return await handler(request)

    inbox = Inbox()
    body = notification().to_json()
    async with serving(broker, middlewares=(record,)) as base:
        channel = fast_channel(http, base)
        async with running(channel):
            assert await channel.wait_connected(5)
            assert channel.transport == "xhr_streaming"
            await channel.subscribe(TOPIC, inbox)
            assert broker.subscriber_count(TOPIC) == 1
            await broker.publish(TOPIC, body)
            [received] = await inbox.wait_for(1)
    assert received == body
    parsed = TaskNotification.model_validate_json(received)
    assert parsed == notification()
    assert parsed.task_abort_cause is TaskAbortCause.CONSENSUS_REACHED
    assert seen_headers, "the channel talked to the endpoint"
    assert all("Origin" not in headers for headers in seen_headers)


async def test_topics_wanted_before_connecting_are_subscribed_on_connect(http: aiohttp.ClientSession) -> None:
    broker = StompBroker()
    inbox = Inbox()
    async with serving(broker) as base:
        channel = fast_channel(http, base)
        await channel.subscribe(TOPIC, inbox)
        assert not channel.is_connected
        async with running(channel):
            assert await channel.wait_connected(5)
            assert broker.subscriber_count(TOPIC) == 1
            await broker.publish(TOPIC, "{}")
            assert await inbox.wait_for(1) == ["{}"]


async def test_channel_reconnects_and_resubscribes_after_the_server_drops_it(
    http: aiohttp.ClientSession,
) -> None:
    broker = StompBroker()
    inbox = Inbox()
    async with serving(broker) as base:
        channel = fast_channel(http, base)
        await channel.subscribe(TOPIC, inbox)
        async with running(channel):
            assert await channel.wait_connected(5)
            assert channel.reconnects == 0
            assert await broker.drop_sessions() == 1
            await until(lambda: channel.reconnects == 1 and channel.is_connected, within=5, what="reconnect")
            await until(lambda: broker.subscriber_count(TOPIC) == 1, within=5, what="re-subscription")
            await broker.publish(TOPIC, "after the drop")
            assert await inbox.wait_for(1) == ["after the drop"]


async def test_long_polling_transport_delivers_notifications(http: aiohttp.ClientSession) -> None:
    broker = StompBroker()
    inbox = Inbox()
    body = notification(TaskNotificationType.PLEASE_COMPLETE).to_json()
    async with serving(broker, heartbeat=0.2) as base:
        channel = fast_channel(http, base, transports=("xhr",))
        await channel.subscribe(TOPIC, inbox)
        async with running(channel):
            assert await channel.wait_connected(5)
            assert channel.transport == "xhr"
            await broker.publish(TOPIC, body)
            await broker.publish(TOPIC, body)
            assert await inbox.wait_for(2) == [body, body]
            assert channel.reconnects == 0, "heartbeat polls are not reconnects"


async def test_falls_back_to_polling_when_streaming_is_refused(http: aiohttp.ClientSession) -> None:
    @web.middleware
    async def no_streaming(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.endswith("/xhr_streaming"):
            raise web.HTTPNotFound()
        return await handler(request)

    broker = StompBroker()
    inbox = Inbox()
    async with serving(broker, middlewares=(no_streaming,)) as base:
        channel = fast_channel(http, base)
        await channel.subscribe(TOPIC, inbox)
        async with running(channel):
            assert await channel.wait_connected(5)
            assert channel.transport == "xhr"
            await broker.publish(TOPIC, "polled")
            assert await inbox.wait_for(1) == ["polled"]


async def test_streaming_response_reopened_after_its_byte_limit_keeps_the_session(
    http: aiohttp.ClientSession,
) -> None:
    streams: list[str] = []

    @web.middleware
    async def count_streams(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.endswith("/xhr_streaming"):
            streams.append(request.path)
        return await handler(request)

    broker = StompBroker()
    inbox = Inbox()
    async with serving(broker, stream_limit=400, middlewares=(count_streams,)) as base:
        channel = fast_channel(http, base)
        await channel.subscribe(TOPIC, inbox)
        async with running(channel):
            assert await channel.wait_connected(5)
            for index in range(6):
                await broker.publish(TOPIC, f'{{"n":{index},"pad":"{"p" * 200}"}}')
                await inbox.wait_for(index + 1)
            assert channel.reconnects == 0
    assert [body[:7] for body in inbox.bodies] == [f'{{"n":{i},' for i in range(6)]
    assert len(streams) >= 3, "each response ends past 400 bytes and is reopened"
    assert len(set(streams)) == 1, "reopened on the same SockJS session"


async def test_silent_server_is_detected_and_the_channel_reconnects(http: aiohttp.ClientSession) -> None:
    broker = StompBroker()
    async with serving(broker, heartbeat=30.0) as base:
        channel = fast_channel(http, base, idle_timeout=0.3)
        async with running(channel):
            await until(lambda: channel.reconnects >= 1, within=5, what="reconnect after silence")
            assert await channel.wait_connected(5)


async def test_unsubscribe_stops_delivery_and_subscribe_again_resumes(http: aiohttp.ClientSession) -> None:
    broker = StompBroker()
    inbox = Inbox()
    other = "/topic/task/0x" + "d4" * 32
    async with serving(broker) as base:
        channel = fast_channel(http, base)
        async with running(channel):
            assert await channel.wait_connected(5)
            await channel.subscribe(TOPIC, inbox)
            await channel.subscribe(other, inbox)
            await channel.unsubscribe(TOPIC)
            assert broker.subscriber_count(TOPIC) == 0
            assert channel.topics == {other}
            await broker.publish(TOPIC, "dropped")
            await broker.publish(other, "kept")
            assert await inbox.wait_for(1) == ["kept"]
            await channel.subscribe(TOPIC, inbox)
            await broker.publish(TOPIC, "again")
            assert await inbox.wait_for(2) == ["kept", "again"]


async def test_failing_handler_does_not_break_the_channel(http: aiohttp.ClientSession) -> None:
    broker = StompBroker()
    inbox = Inbox()

    async def flaky(body: str) -> None:
        if body == "boom":
            raise RuntimeError("handler bug")
        await inbox(body)

    async with serving(broker) as base:
        channel = fast_channel(http, base)
        await channel.subscribe(TOPIC, flaky)
        async with running(channel):
            assert await channel.wait_connected(5)
            await broker.publish(TOPIC, "boom")
            await broker.publish(TOPIC, "fine")
            assert await inbox.wait_for(1) == ["fine"]
            assert channel.reconnects == 0


async def test_stop_disconnects_cleanly(http: aiohttp.ClientSession) -> None:
    broker = StompBroker()
    async with serving(broker) as base:
        channel = fast_channel(http, base)
        await channel.subscribe(TOPIC, Inbox())
        async with running(channel) as task:
            assert await channel.wait_connected(5)
            assert broker.subscriber_count(TOPIC) == 1
        assert task.done()
        assert not channel.is_connected
        assert broker.subscriber_count(TOPIC) == 0, "DISCONNECT ends the server-side session at once"


async def test_channel_waits_for_a_scheduler_that_starts_late(http: aiohttp.ClientSession) -> None:
    port = free_port()
    broker = StompBroker()
    inbox = Inbox()
    channel = fast_channel(http, f"http://127.0.0.1:{port}", max_reconnect_delay=0.2)
    await channel.subscribe(TOPIC, inbox)
    async with running(channel):
        assert not await channel.wait_connected(0.3)
        async with serving(broker, port=port):
            assert await channel.wait_connected(5)
            await broker.publish(TOPIC, "late")
            assert await inbox.wait_for(1) == ["late"]


async def test_client_sends_heart_beats_when_the_server_asks_for_them(http: aiohttp.ClientSession) -> None:
    # The development broker never asks for heart-beats (like iexec-core's simple broker), so a
    # minimal hand-written SockJS endpoint plays a broker that does: heart-beat:0,100.
    sent: list[str] = []
    polls = 0

    async def info(_request: web.Request) -> web.Response:
        return web.json_response(
            {"websocket": False, "cookie_needed": True, "origins": ["*:*"], "entropy": 1}
        )

    async def xhr(_request: web.Request) -> web.Response:
        nonlocal polls
        polls += 1
        if polls == 1:
            return web.Response(text="o\n")
        if polls == 2:
            connected = "CONNECTED\nversion:1.2\nheart-beat:0,100\n\n\x00"
            return web.Response(text="a" + json.dumps([connected]) + "\n")
        # Held open until the client says goodbye, then acknowledged so it stops at once.
        await until(lambda: any(m.startswith("DISCONNECT") for m in sent), within=5, what="DISCONNECT")
        receipt_id = next(m for m in sent if m.startswith("DISCONNECT")).split("receipt:")[1].split("\n")[0]
        return web.Response(text="a" + json.dumps([f"RECEIPT\nreceipt-id:{receipt_id}\n\n\x00"]) + "\n")

    async def xhr_send(request: web.Request) -> web.Response:
        sent.extend(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/connect/info", info)
    app.router.add_post("/connect/{server}/{session}/xhr", xhr)
    app.router.add_post("/connect/{server}/{session}/xhr_send", xhr_send)
    async with serving_app(app, shutdown_timeout=1.0) as url:
        channel = fast_channel(http, url, transports=("xhr",), heartbeat_ms=50)
        async with running(channel):
            assert await channel.wait_connected(5)
            await until(lambda: sent.count("\n") >= 2, within=5, what="two heart-beats")
    assert sent[0].startswith("CONNECT\naccept-version:1.1,1.2\n")
    assert "heart-beat:50,50\n" in sent[0]
