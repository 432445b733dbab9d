"""Bounded reads of a peer's answer: pure unit tests over an async chunk stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from worker.protocol.bounded import AnswerTooLarge, read_capped


async def test_reading_stops_at_the_bound() -> None:
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"x" * 1000

    with pytest.raises(AnswerTooLarge, match="larger than 4096 bytes"):
        await read_capped(endless(), 4096)
    assert pulled == 5  # not one chunk more than needed to know


async def test_an_answer_within_the_bound_is_whole() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"ab", b"", b"cd"):
            yield part

    assert await read_capped(chunks(), 4) == b"abcd"
