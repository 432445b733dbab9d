"""Bounded reads: a peer's answer is read up to a limit, never whole whatever its size.

The scheduler, the result proxy, the blockchain node and IPFS gateways are peers the worker does not
control; an answer without end (or a gigabyte where a few bytes are expected) must fail that call,
not fill the worker's memory. Each adapter reads through :func:`read_capped` with a limit sized far
above any real answer and turns :class:`AnswerTooLarge` into its own error. Sans I/O: it consumes the
chunks an adapter's HTTP library hands it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable

KIB = 1024
MIB = 1024 * KIB
SCHEDULER_ANSWER_LIMIT = 4 * MIB
"""Largest answer of the scheduler's REST API (lists of task ids and notifications, a few KiB in practice)."""
RESULT_PROXY_ANSWER_LIMIT = 64 * KIB
"""Largest answer of the result proxy: a token, an IPFS hash or an error message."""
NODE_ANSWER_LIMIT = 32 * MIB
"""Largest JSON-RPC answer of a blockchain node (``eth_getLogs`` over the watcher's block range included)."""


class AnswerTooLarge(ValueError):
    """A peer's answer went past the limit of its kind; the read stopped there."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer is larger than {limit} bytes; it was not read further")
        self.limit = limit


async def read_capped(chunks: AsyncIterable[bytes], limit: int) -> bytes:
    """The concatenated ``chunks``, or ``AnswerTooLarge`` as soon as they exceed ``limit`` bytes."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise AnswerTooLarge(limit)
    return bytes(body)
