"""STOMP 1.2 frame codec, sans I/O: bytes in, frames out, and frames back to bytes.

The scheduler's push channel speaks STOMP over SockJS (iexec-core ``WebSocketConfig``). This module
only parses and renders frames; the worker's client (``worker.scheduler.stomp``) and the development
scheduler's broker both use it, so the two sides speak exactly the same framing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

CLIENT_COMMANDS: Final = frozenset(
    {
        "CONNECT",
        "STOMP",
        "SEND",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "ACK",
        "NACK",
        "BEGIN",
        "COMMIT",
        "ABORT",
        "DISCONNECT",
    }
)
SERVER_COMMANDS: Final = frozenset({"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"})

# STOMP 1.2: CONNECT and CONNECTED headers are written verbatim, every other frame escapes them.
_UNESCAPED_COMMANDS: Final = frozenset({"CONNECT", "CONNECTED"})
_ESCAPES: Final = {"\\": "\\\\", "\r": "\\r", "\n": "\\n", ":": "\\c"}
_UNESCAPES: Final = {"\\": "\\", "r": "\r", "n": "\n", "c": ":"}


class StompProtocolError(ValueError):
    """Bytes that are not a STOMP 1.2 frame; the message says what is wrong with them."""


@dataclass(frozen=True, slots=True)
class StompFrame:
    command: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def text(self) -> str:
        """The body as text (STOMP bodies of this protocol are UTF-8 JSON)."""
        return self.body.decode("utf-8")


def _escape(value: str) -> str:
    return "".join(_ESCAPES.get(char, char) for char in value)


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        code = next(chars, "")
        if code not in _UNESCAPES:
            raise StompProtocolError(f"undefined escape sequence '\\{code}' in header {value!r}")
        out.append(_UNESCAPES[code])
    return "".join(out)


def encode_frame(frame: StompFrame) -> bytes:
    """Serialise a frame; ``content-length`` is added whenever there is a body."""
    escaped = frame.command not in _UNESCAPED_COMMANDS
    lines = [frame.command]
    headers = dict(frame.headers)
    if frame.body and "content-length" not in headers:
        headers["content-length"] = str(len(frame.body))
    for name, value in headers.items():
        if escaped:
            lines.append(f"{_escape(name)}:{_escape(value)}")
        elif any(char in name + value for char in "\r\n") or ":" in name:
            raise StompProtocolError(
                f"{frame.command} header {name!r} cannot hold a colon in its name or a line break"
            )
        else:
            lines.append(f"{name}:{value}")
    head = "\n".join(lines) + "\n\n"
    return head.encode("utf-8") + frame.body + b"\x00"


class FrameDecoder:
    """Incremental decoder: feed it bytes as they arrive, take whole frames out.

    Heart-beats (bare end-of-lines between frames) are skipped. A frame split across several
    SockJS messages is kept until it is complete; ``max_frame_bytes`` bounds what is buffered.
    """

    def __init__(self, commands: Iterable[str], *, max_frame_bytes: int = 64 * 1024) -> None:
        self._commands = frozenset(commands)
        self._max = max_frame_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def frames(self) -> list[StompFrame]:
        """Every complete frame buffered so far; raises on the first malformed one."""
        out: list[StompFrame] = []
        while (frame := self.next_frame()) is not None:
            out.append(frame)
        return out

    def next_frame(self) -> StompFrame | None:
        buf = self._buffer
        start = 0
        while start < len(buf) and buf[start] in b"\r\n":
            start += 1
        del buf[:start]
        if not buf:
            return None
        pos = 0
        lines: list[str] = []
        while True:
            end = buf.find(b"\n", pos)
            if end < 0:
                self._check_size(len(buf))
                return None
            raw = bytes(buf[pos:end])
            pos = end + 1
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if not raw:
                break
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise StompProtocolError(f"frame header line is not UTF-8: {exc}") from exc
        command, header_lines = lines[0], lines[1:]
        if command not in self._commands:
            raise StompProtocolError(f"unknown STOMP command {command[:40]!r}")
        headers = self._parse_headers(command, header_lines)
        length_text = headers.get("content-length")
        if length_text is not None:
            if not length_text.isdigit():
                raise StompProtocolError(f"content-length {length_text[:20]!r} is not a byte count")
            length = int(length_text)
            self._check_size(pos + length + 1)
            if len(buf) < pos + length + 1:
                return None
            if buf[pos + length] != 0:
                raise StompProtocolError(
                    f"{command} body is not followed by NUL after content-length {length}"
                )
            body = bytes(buf[pos : pos + length])
            del buf[: pos + length + 1]
        else:
            nul = buf.find(b"\x00", pos)
            if nul < 0:
                self._check_size(len(buf))
                return None
            body = bytes(buf[pos:nul])
            del buf[: nul + 1]
        return StompFrame(command, headers, body)

    def _check_size(self, size: int) -> None:
        if size > self._max:
            raise StompProtocolError(f"frame larger than {self._max} bytes")

    @staticmethod
    def _parse_headers(command: str, header_lines: list[str]) -> dict[str, str]:
        escaped = command not in _UNESCAPED_COMMANDS
        headers: dict[str, str] = {}
        for line in header_lines:
            name, colon, value = line.partition(":")
            if not colon or not name:
                raise StompProtocolError(f"header line {line[:80]!r} has no 'name:value' form")
            if escaped:
                name, value = _unescape(name), _unescape(value)
            # STOMP 1.2: when a header repeats, the first value is the one that counts.
            headers.setdefault(name, value)
        return headers
