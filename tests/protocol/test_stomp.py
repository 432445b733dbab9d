"""The STOMP 1.2 frame codec of the push channel: pure unit tests, bytes in and frames out."""

from __future__ import annotations

import pytest

from worker.protocol.stomp import (
    CLIENT_COMMANDS,
    SERVER_COMMANDS,
    FrameDecoder,
    StompFrame,
    StompProtocolError,
    encode_frame,
)


def test_headers_are_escaped_except_in_connect_frames() -> None:
    frame = StompFrame("SEND", {"destination": "/topic/a:b", "note": "line1\nline2\\end\r"}, b"{}")
    wire = encode_frame(frame)
    assert wire == b"SEND\ndestination:/topic/a\\cb\nnote:line1\\nline2\\\\end\\r\ncontent-length:2\n\n{}\x00"
    decoder = FrameDecoder(CLIENT_COMMANDS)
    decoder.feed(wire)
    assert decoder.frames() == [StompFrame("SEND", {**frame.headers, "content-length": "2"}, b"{}")]

    connect = encode_frame(StompFrame("CONNECT", {"host": "127.0.0.1:8080"}))
    assert connect == b"CONNECT\nhost:127.0.0.1:8080\n\n\x00"


def test_decoder_handles_split_frames_heartbeats_crlf_and_repeated_headers() -> None:
    decoder = FrameDecoder(SERVER_COMMANDS)
    wire = b"\n\r\nMESSAGE\r\nsubscription:s\r\nsubscription:ignored\r\n\r\nbody\x00\nRECEIPT\nreceipt-id:r\n\n\x00"
    for index in range(0, len(wire), 7):
        decoder.feed(wire[index : index + 7])
    frames = decoder.frames()
    assert [f.command for f in frames] == ["MESSAGE", "RECEIPT"]
    assert frames[0].headers == {"subscription": "s"}
    assert frames[0].body == b"body"
    assert decoder.next_frame() is None


def test_content_length_allows_nul_in_body() -> None:
    decoder = FrameDecoder(SERVER_COMMANDS)
    decoder.feed(b"MESSAGE\ncontent-length:3\n\na\x00b\x00")
    assert decoder.frames()[0].body == b"a\x00b"


@pytest.mark.parametrize(
    ("wire", "complaint"),
    [
        (b"NOPE\n\n\x00", "unknown STOMP command"),
        (b"MESSAGE\nbad\\x:1\n\n\x00", "undefined escape"),
        (b"MESSAGE\njust-a-name\n\n\x00", "name:value"),
        (b"MESSAGE\ncontent-length:-1\n\n\x00", "content-length"),
        (b"MESSAGE\ncontent-length:1\n\nab\x00", "not followed by NUL"),
        (b"MESSAGE\n\n" + b"x" * 200, "larger than 100 bytes"),
    ],
)
def test_decoder_rejects_malformed_frames(wire: bytes, complaint: str) -> None:
    decoder = FrameDecoder(SERVER_COMMANDS, max_frame_bytes=100)
    decoder.feed(wire)
    with pytest.raises(StompProtocolError, match=complaint):
        decoder.frames()


# -- channel against the development broker ---------------------------------------------------
