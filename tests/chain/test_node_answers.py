"""A blockchain node that answers garbage or too much (a JSON-RPC server on 127.0.0.1 written here): the
worker gets a ``ChainError`` for that call, the kind every caller already retries or logs, never a crash.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import ClientTimeout, web
from eth_abi.abi import encode
from web3 import AsyncWeb3

from tests.support import serving_app
from worker.chain.client import BoundedHTTPProvider, ChainClient
from worker.protocol.bounded import NODE_ANSWER_LIMIT
from worker.protocol.errors import ChainError

HUB = "0x" + "12" * 20
TASK = "0x" + "ab" * 32
WORKER = "0x" + "cd" * 20


def node(answer: Callable[[dict[str, Any]], web.StreamResponse]) -> web.Application:
    async def rpc(request: web.Request) -> web.StreamResponse:
        return answer(await request.json())

    app = web.Application()
    app.router.add_post("/", rpc)
    return app


def result(call: dict[str, Any], value: object) -> web.Response:
    return web.json_response({"jsonrpc": "2.0", "id": call["id"], "result": value})


async def client_of(app: web.Application) -> AsyncIterator[ChainClient]:
    async with (
        serving_app(app) as url,
        ChainClient([(AsyncWeb3(BoundedHTTPProvider(url)), url)], HUB) as chain,
    ):
        yield chain


@pytest.fixture
async def garbage_enum_node() -> AsyncIterator[ChainClient]:
    # viewContribution answers a contribution status 9: PoCo has four (0..3).
    contribution = encode(
        ["uint8", "bytes32", "bytes32", "address", "uint256"], [9, b"\1" * 32, b"\2" * 32, WORKER, 1]
    )

    def answer(call: dict[str, Any]) -> web.Response:
        if call["method"] == "eth_chainId":
            return result(call, "0x1")
        return result(call, "0x" + contribution.hex())

    async for chain in client_of(node(answer)):
        yield chain


async def test_an_unknown_enum_value_from_the_node_is_a_chain_error(garbage_enum_node: ChainClient) -> None:
    with pytest.raises(ChainError, match="malformed answer from the node"):
        await garbage_enum_node.contribution(TASK, WORKER)


async def test_a_truncated_answer_is_a_chain_error() -> None:
    def answer(call: dict[str, Any]) -> web.Response:
        return result(call, "0x1") if call["method"] == "eth_chainId" else result(call, "0x0102")

    async for chain in client_of(node(answer)):
        with pytest.raises(ChainError):
            await chain.account(WORKER)


async def test_an_answer_past_the_limit_is_not_read_whole() -> None:
    huge = json.dumps({"jsonrpc": "2.0", "id": 0, "result": "0x" + "00" * (NODE_ANSWER_LIMIT // 2 + 1024)})

    def answer(_: dict[str, Any]) -> web.Response:
        return web.Response(text=huge, content_type="application/json")

    async for chain in client_of(node(answer)):
        with pytest.raises(ChainError, match="larger than"):
            await chain.latest_block_number()


async def _faulty_client(app: web.Application, request_timeout: float = 30.0) -> AsyncIterator[ChainClient]:
    async with serving_app(app) as url:
        provider = BoundedHTTPProvider(url, request_kwargs={"timeout": ClientTimeout(total=request_timeout)})
        async with ChainClient([(AsyncWeb3(provider), url)], HUB, request_timeout=request_timeout) as chain:
            yield chain


async def test_a_node_that_never_answers_fails_the_call_at_the_timeout_naming_node_and_cause() -> None:
    release = asyncio.Event()

    async def hang(_: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/", hang)
    async for chain in _faulty_client(app, request_timeout=0.5):
        with pytest.raises(
            ChainError, match=r"eth_blockNumber on http://127\.0\.0\.1:\d+: no answer within 0\.5 s"
        ):
            await chain.latest_block_number()
        release.set()


async def test_an_http_error_of_the_node_is_named_with_its_status() -> None:
    async def fail(_: web.Request) -> web.StreamResponse:
        return web.Response(status=500, text="upstream failed")

    app = web.Application()
    app.router.add_post("/", fail)
    async for chain in _faulty_client(app):
        with pytest.raises(ChainError, match=r"on http://127\.0\.0\.1:\d+: the node answered HTTP 500"):
            await chain.latest_block_number()
        assert (
            chain.endpoints[0].failed_at > 0
        )  # a failure of that node: the next call tries the others first


async def test_a_body_that_is_not_json_is_a_malformed_answer() -> None:
    def answer(_: dict[str, Any]) -> web.Response:
        return web.Response(text='{"jsonrpc": "2.0", "id": 1, "result": ', content_type="application/json")

    async for chain in client_of(node(answer)):
        with pytest.raises(ChainError, match="malformed answer"):
            await chain.latest_block_number()
