"""A blockchain node that answers garbage or too much (a JSON-RPC server on 127.0.0.1 written here): the
worker gets a ``ChainError`` for that call, the kind every caller already retries or logs, never a crash.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
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


# -- the pre-check views: one batch, or the same calls one by one -----------------------------------


def views_node(*, batches: bool, tip: bool) -> tuple[web.Application, list[str]]:
    """A node answering the views of an ACTIVE task; ``batches`` False refuses JSON-RPC batches as a whole,
    ``tip`` False answers eth_maxPriorityFeePerGas with an error (a legacy node). Logs each request's shape."""
    seen: list[str] = []
    task = encode(
        ["uint8", "bytes32", "uint256", "uint256", "uint256", "uint256", "uint256", "bytes32", "uint256",
         "uint256", "address[]", "bytes"],
        [1, b"\3" * 32, 0, 100, 2000, 3000, 4000, b"\0" * 32, 0, 0, [], b""],
    )  # fmt: skip
    contribution = encode(
        ["(uint8,bytes32,bytes32,address,uint256)"], [(0, b"\0" * 32, b"\0" * 32, WORKER, 0)]
    )
    stake = encode(["(uint256,uint256)"], [(7, 1)])
    by_selector = {"0x248ad6a0": task, "0x" + _selector("viewContribution"): contribution}
    by_selector["0x" + _selector("viewAccount")] = stake

    def one(call: dict[str, Any]) -> dict[str, Any]:
        method = call["method"]
        value: object
        if method == "eth_chainId":
            value = "0x1"
        elif method == "eth_getCode":
            value = "0x01"
        elif method == "eth_call":
            value = "0x" + by_selector[call["params"][0]["data"][:10]].hex()
        elif method == "eth_getBlockByNumber":
            value = {"number": "0x10", "timestamp": "0x3e8", "baseFeePerGas": "0x5", "hash": "0x" + "00" * 32}
        elif method == "eth_getBalance":
            value = "0x64"
        elif method == "eth_maxPriorityFeePerGas" and tip:
            value = "0x2"
        else:
            return {
                "jsonrpc": "2.0",
                "id": call["id"],
                "error": {"code": -32601, "message": "method not found"},
            }
        return {"jsonrpc": "2.0", "id": call["id"], "result": value}

    async def rpc(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if isinstance(body, list):
            seen.append(f"batch of {len(body)}")
            if not batches:
                error = {"code": -32600, "message": "batch requests are not supported"}
                return web.json_response({"jsonrpc": "2.0", "id": None, "error": error})
            return web.json_response([one(call) for call in body])
        seen.append(body["method"])
        return web.json_response(one(body))

    app = web.Application()
    app.router.add_post("/", rpc)
    return app, seen


def _selector(name: str) -> str:
    from eth_utils.abi import function_abi_to_4byte_selector

    from worker.chain.abi import HUB_ABI

    entry = next(e for e in HUB_ABI if e.get("name") == name)
    return bytes(function_abi_to_4byte_selector(entry)).hex()  # type: ignore[arg-type]


@asynccontextmanager
async def connected(app: web.Application, seen: list[str]) -> AsyncIterator[ChainClient]:
    """The client as the worker opens it (``ChainClient.connect``); what it asked while connecting forgotten."""
    async with serving_app(app) as url, await ChainClient.connect(url, HUB) as chain:
        seen.clear()
        yield chain


async def test_the_views_of_a_pre_check_go_in_one_batch() -> None:
    app, seen = views_node(batches=True, tip=True)
    async with connected(app, seen) as chain:
        views = await chain.task_views(TASK, WORKER, stake=True, balance=True, fee="tip")

        assert seen == ["batch of 6"]
        assert views.task.contribution_deadline == 2000
        assert views.account is not None
        assert views.account.stake == 7
        assert (views.block.timestamp, views.block.base_fee_per_gas) == (1000, 5)
        assert (views.balance, views.priority_fee, views.gas_price) == (100, 2, None)


async def test_a_node_refusing_batches_gets_the_same_calls_one_by_one_and_then_no_more_batches() -> None:
    app, seen = views_node(batches=False, tip=True)
    async with connected(app, seen) as chain:
        first = await chain.task_views(TASK, WORKER, stake=True, balance=True, fee="tip")
        assert seen[0] == "batch of 6"
        assert sorted(seen[1:]) == sorted(
            [
                "eth_call",
                "eth_call",
                "eth_call",
                "eth_getBlockByNumber",
                "eth_getBalance",
                "eth_maxPriorityFeePerGas",
            ]
        )
        assert first.account is not None
        assert (first.account.stake, first.balance, first.priority_fee) == (7, 100, 2)

        await chain.task_views(TASK, WORKER, stake=False, balance=False, fee=None)
        seen.clear()
        second = await chain.task_views(TASK, WORKER, stake=False, balance=False, fee=None)
        assert "batch of 3" not in seen  # refused twice in a row: this node gets single calls for good
        assert second.task.task_id == TASK


# Asked alone, web3 warns and tries eth_feeHistory, which this node does not know either.
@pytest.mark.filterwarnings("ignore:There was an issue with the method eth_maxPriorityFeePerGas")
async def test_a_fee_question_the_node_does_not_know_leaves_the_fee_unknown_and_the_views_answered() -> None:
    app, seen = views_node(batches=True, tip=False)
    async with connected(app, seen) as chain:
        views = await chain.task_views(TASK, WORKER, stake=False, balance=True, fee="tip")

        assert seen[0] == "batch of 5"  # its error answer spoils the batch: asked again one by one
        assert views.priority_fee is None
        assert views.balance == 100
        assert views.task.contribution_deadline == 2000
