"""The development scheduler's SockJS endpoint and STOMP broker, checked at the wire level.

Real HTTP on 127.0.0.1 (aiohttp ``AppRunner`` + ``TCPSite``) and plain aiohttp requests: every
frame is written and read by hand here, so these tests do not lean on the worker's STOMP client.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from devnet.core.sockjs import StompBroker, add_sockjs_routes
from tests.support import serving_app, until
from worker.protocol.models import TaskNotification, TaskNotificationExtra
from worker.protocol.status import TaskNotificationType

TASK = "0x" + "5a" * 32
TOPIC = f"/topic/task/{TASK}"
CONNECT = "CONNECT\naccept-version:1.1,1.2\nheart-beat:10000,10000\n\n\x00"


@asynccontextmanager
async def serving(broker: StompBroker, **options: Any) -> AsyncIterator[str]:
    options.setdefault("heartbeat", 0.3)
    app = web.Application()
    add_sockjs_routes(app, broker, **options)
    async with serving_app(app, shutdown_timeout=1.0) as url:
        yield f"{url}/connect"


class RawSession:
    """A SockJS session driven by hand over the xhr transports."""

    def __init__(self, http: aiohttp.ClientSession, endpoint: str) -> None:
        self.http = http
        self.url = f"{endpoint}/{secrets.randbelow(1000):03d}/{secrets.token_hex(6)}"

    async def poll(self) -> str:
        async with self.http.post(f"{self.url}/xhr") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("application/javascript")
            text = await resp.text()
        assert text.endswith("\n")
        return text[:-1]

    async def next_frame(self) -> str:
        """The next frame that is not a heartbeat."""
        frames: list[str] = []

        async def got_one() -> bool:
            frame = await self.poll()
            if frame != "h":
                frames.append(frame)
            return bool(frames)

        await until(got_one, within=5, every=0, what="a non-heartbeat SockJS frame")
        return frames[0]

    async def send(self, *messages: str) -> int:
        async with self.http.post(f"{self.url}/xhr_send", data=json.dumps(messages)) as resp:
            return resp.status

    async def open_stomp(self) -> None:
        assert await self.poll() == "o"
        assert await self.send(CONNECT) == 204
        [connected] = messages(await self.next_frame())
        assert connected.startswith("CONNECTED\n")

    async def subscribe(self, destination: str, sub_id: str = "sub-0") -> None:
        assert await self.send(f"SUBSCRIBE\nid:{sub_id}\ndestination:{destination}\n\n\x00") == 204


def messages(frame: str) -> list[str]:
    assert frame.startswith("a["), frame
    decoded = json.loads(frame[1:])
    assert isinstance(decoded, list)
    return [str(m) for m in decoded]


def parse_stomp(text: str) -> tuple[str, dict[str, str], str]:
    head, _, rest = text.partition("\n\n")
    command, *lines = head.split("\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers.setdefault(name, value)
    assert rest.endswith("\x00"), "STOMP frame must end with NUL"
    return command, headers, rest[:-1]


def notification() -> TaskNotification:
    return TaskNotification(
        chain_task_id=TASK,
        workers_address=["0x" + "11" * 20],
        task_notification_type=TaskNotificationType.PLEASE_REVEAL,
        task_notification_extra=TaskNotificationExtra(block_number=4242),
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_info_advertises_http_transports_only(http: aiohttp.ClientSession) -> None:
    async with serving(StompBroker()) as endpoint, http.get(f"{endpoint}/info") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        assert "no-store" in resp.headers["Cache-Control"]
        info = await resp.json()
    assert info["websocket"] is False
    assert info["cookie_needed"] is True
    assert info["origins"] == ["*:*"]
    assert isinstance(info["entropy"], int)


async def test_polling_session_opens_then_answers_connect(http: aiohttp.ClientSession) -> None:
    async with serving(StompBroker()) as endpoint:
        raw = RawSession(http, endpoint)
        assert await raw.poll() == "o"
        assert await raw.send(CONNECT) == 204
        [connected] = messages(await raw.next_frame())
    command, headers, body = parse_stomp(connected)
    assert (command, headers, body) == ("CONNECTED", {"version": "1.2", "heart-beat": "0,0"}, "")


async def test_xhr_send_to_unknown_session_is_404(http: aiohttp.ClientSession) -> None:
    async with serving(StompBroker()) as endpoint:
        assert await RawSession(http, endpoint).send(CONNECT) == 404


async def test_published_notification_arrives_as_a_message_frame(http: aiohttp.ClientSession) -> None:
    broker = StompBroker()
    body = notification().to_json()
    async with serving(broker) as endpoint:
        raw = RawSession(http, endpoint)
        await raw.open_stomp()
        await raw.subscribe(TOPIC, "sub-7")
        assert broker.subscriber_count(TOPIC) == 1
        await broker.publish(TOPIC, body)
        frame = await raw.next_frame()
    assert frame.startswith('a["MESSAGE\\n')
    [message] = messages(frame)
    command, headers, received = parse_stomp(message)
    assert command == "MESSAGE"
    assert headers["destination"] == TOPIC
    assert headers["subscription"] == "sub-7"
    assert headers["message-id"]
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(body.encode()))
    assert received == body
    assert TaskNotification.model_validate_json(received) == notification()


async def test_messages_published_between_polls_wait_for_the_next_poll(http: aiohttp.ClientSession) -> None:
    broker = StompBroker()
    async with serving(broker) as endpoint:
        raw = RawSession(http, endpoint)
        await raw.open_stomp()
        await raw.subscribe(TOPIC)
        for index in range(3):
            await broker.publish(TOPIC, json.dumps({"n": index}))
        bodies = [parse_stomp(m)[2] for m in messages(await raw.next_frame())]
    assert bodies == ['{"n": 0}', '{"n": 1}', '{"n": 2}']


async def test_streaming_sends_prelude_open_heartbeats_then_reopens_after_its_limit(
    http: aiohttp.ClientSession,
) -> None:
    broker = StompBroker()
    async with serving(broker, stream_limit=600) as endpoint:
        url = f"{endpoint}/000/{secrets.token_hex(6)}"
        async with http.post(f"{url}/xhr_streaming") as resp:
            assert resp.headers["Content-Type"].startswith("application/javascript")
            assert await resp.content.readexactly(2049) == b"h" * 2048 + b"\n"
            assert await resp.content.readline() == b"o\n"
            assert await resp.content.readline() == b"h\n"  # heartbeat after 0.3 s of silence
            async with http.post(f"{url}/xhr_send", data=json.dumps([CONNECT])) as sent:
                assert sent.status == 204
            assert (await resp.content.readline()).startswith(b'a["CONNECTED\\n')
            async with http.post(
                f"{url}/xhr_send", data=json.dumps([f"SUBSCRIBE\nid:s\ndestination:{TOPIC}\n\n\x00"])
            ):
                pass
            await broker.publish(TOPIC, "x" * 700)
            assert (await resp.content.readline()).startswith(b'a["MESSAGE\\n')
            assert await resp.content.read() == b"", "the stream must end once past its byte limit"
        # Same session, new receiving request: no second "o", the session and its subscription live on.
        assert broker.subscriber_count(TOPIC) == 1
        async with http.post(f"{url}/xhr_streaming") as resp:
            await resp.content.readexactly(2049)
            await broker.publish(TOPIC, "after reopen")
            line = await resp.content.readline()
    assert line.startswith(b'a["MESSAGE\\n')
    assert parse_stomp(messages(line.decode().rstrip("\n"))[0])[2] == "after reopen"


async def test_eventsource_transport_frames_as_server_sent_events(http: aiohttp.ClientSession) -> None:
    async with serving(StompBroker()) as endpoint:
        url = f"{endpoint}/000/{secrets.token_hex(6)}"
        async with http.get(f"{url}/eventsource") as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert await resp.content.readexactly(2) == b"\r\n"
            assert await resp.content.readexactly(11) == b"data: o\r\n\r\n"


async def test_malformed_frames_get_an_error_frame_and_the_server_keeps_serving(
    http: aiohttp.ClientSession,
) -> None:
    broker = StompBroker()
    bad_inputs = [
        "HELLO\n\n\x00",  # unknown command
        "SUBSCRIBE\nid:1\n\n\x00",  # missing destination
        "SEND\ndestination:/topic/x\nnote:bad\\tescape\n\n\x00",  # undefined escape
        "SEND\ndestination:/topic/x\ncontent-length:2\n\nabc\x00",  # no NUL after content-length
        "SEND\nno colon here\n\n\x00",  # header without name:value
    ]
    async with serving(broker) as endpoint:
        witness = RawSession(http, endpoint)
        await witness.open_stomp()
        await witness.subscribe(TOPIC)
        for bad in bad_inputs:
            raw = RawSession(http, endpoint)
            await raw.open_stomp()
            assert await raw.send(bad) == 204
            [error] = messages(await raw.next_frame())
            command, headers, _ = parse_stomp(error)
            assert command == "ERROR", bad
            assert headers["message"], bad
            assert (await raw.next_frame()).startswith("c[1002,"), bad
            assert await raw.send(CONNECT) == 404, "a failed session is closed"
        # A frame before CONNECT is refused the same way.
        early = RawSession(http, endpoint)
        assert await early.poll() == "o"
        await early.send(f"SUBSCRIBE\nid:1\ndestination:{TOPIC}\n\n\x00")
        assert parse_stomp(messages(await early.next_frame())[0])[0] == "ERROR"
        # Broken SockJS payloads are refused without touching the session.
        async with http.post(f"{witness.url}/xhr_send", data=b"[not json") as resp:
            assert resp.status == 500
            assert await resp.text() == "Broken JSON encoding."
        await broker.publish(TOPIC, "still here")
        [message] = messages(await witness.next_frame())
    assert parse_stomp(message)[2] == "still here"


async def test_frame_split_across_sockjs_messages_is_reassembled(http: aiohttp.ClientSession) -> None:
    async with serving(StompBroker()) as endpoint:
        raw = RawSession(http, endpoint)
        assert await raw.poll() == "o"
        assert await raw.send(CONNECT[:10], CONNECT[10:]) == 204
        [connected] = messages(await raw.next_frame())
    assert parse_stomp(connected)[0] == "CONNECTED"


async def test_client_send_reaches_topic_subscribers_and_disconnect_gets_its_receipt(
    http: aiohttp.ClientSession,
) -> None:
    broker = StompBroker()
    async with serving(broker) as endpoint:
        listener, sender = RawSession(http, endpoint), RawSession(http, endpoint)
        await listener.open_stomp()
        await listener.subscribe(TOPIC)
        await sender.open_stomp()
        await sender.send(f"SEND\ndestination:{TOPIC}\ncontent-type:text/plain\n\nping\x00")
        command, headers, body = parse_stomp(messages(await listener.next_frame())[0])
        assert (command, headers["content-type"], body) == ("MESSAGE", "text/plain", "ping")

        await listener.send("DISCONNECT\nreceipt:bye-1\n\n\x00")
        [receipt] = messages(await listener.next_frame())
        assert parse_stomp(receipt)[:2] == ("RECEIPT", {"receipt-id": "bye-1"})
        assert (await listener.next_frame()).startswith("c[")
        assert broker.subscriber_count(TOPIC) == 0


async def test_second_receiver_on_a_session_is_refused(http: aiohttp.ClientSession) -> None:
    async with serving(StompBroker(), heartbeat=2.0) as endpoint:
        raw = RawSession(http, endpoint)
        assert await raw.poll() == "o"
        async with http.post(f"{raw.url}/xhr_streaming") as first:
            await first.content.readexactly(2049)
            assert await raw.poll() == 'c[2010,"Another connection still open"]'


async def test_dropped_and_idle_sessions_are_closed(http: aiohttp.ClientSession) -> None:
    broker = StompBroker()
    async with serving(broker, disconnect_delay=0.3) as endpoint:
        dropped = RawSession(http, endpoint)
        await dropped.open_stomp()
        await dropped.subscribe(TOPIC)
        assert await broker.drop_sessions() == 1
        assert await dropped.next_frame() == 'c[3000,"Go away!"]'
        assert broker.subscriber_count(TOPIC) == 0

        idle = RawSession(http, endpoint)
        await idle.open_stomp()
        await idle.subscribe(TOPIC)
        # Nobody polls: after the disconnect delay the session and its subscription are gone.
        await until(lambda: broker.subscriber_count(TOPIC) == 0, within=3, what="idle session expiry")
        assert await idle.send(CONNECT) == 404


async def test_closed_broker_turns_new_sessions_away(http: aiohttp.ClientSession) -> None:
    broker = StompBroker()
    async with serving(broker) as endpoint:
        await broker.close()
        assert await RawSession(http, endpoint).poll() == 'c[3000,"Go away!"]'
        with pytest.raises(ValueError, match="outside the broker"):
            await broker.publish("/queue/x", "{}")
