"""A JSON-RPC fault proxy on 127.0.0.1 between a worker and its node, for the fault tests.

It forwards every POST to the upstream node (anvil) and, while a fault is on, answers as a sick node does:

- ``HTTP_500``: HTTP 500 with a text body (a load balancer in front of a dead node);
- ``RPC_ERROR``: HTTP 200 with a JSON-RPC error object (-32603 "internal error") for every call;
- ``HANG``: never answers a request it got during the fault; the client's own timeout ends it;
- ``FROZEN``: a node stuck at the block it had when the fault began: the head, the latest block, receipts
  and logs past it are hidden and ``eth_call`` reads that block's state; transactions still go through;
- ``MALFORMED``: HTTP 200 with a body that is not JSON.

``down()`` closes the listening port (connection refused) and ``up()`` opens the same port again. The
proxy counts the requests it saw and the ones it faulted, so a test can show the fault was met.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web


class Fault(enum.Enum):
    NONE = "none"
    HTTP_500 = "http-500"
    RPC_ERROR = "rpc-error"
    HANG = "hang"
    FROZEN = "frozen"
    MALFORMED = "malformed"


_LATEST = ("latest", "pending", "safe", "finalized")


@dataclass
class NodeProxy:
    upstream: str
    port: int = 0
    fault: Fault = Fault.NONE
    requests: int = 0
    faulted: int = 0
    _frozen_at: int | None = None
    _runner: web.AppRunner | None = None
    _site: web.TCPSite | None = None
    _session: aiohttp.ClientSession | None = None
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        app = web.Application()
        app.router.add_post("/", self._serve)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await self.up()

    async def up(self) -> None:
        """Listen (again, on the same port once it has one)."""
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        server = self._site._server
        assert isinstance(server, asyncio.Server)
        self.port = int(server.sockets[0].getsockname()[1])

    async def down(self) -> None:
        """Stop listening: the node is gone (connection refused)."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def stop(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def set_fault(self, fault: Fault) -> None:
        self._frozen_at = None
        if fault is Fault.FROZEN:
            head = await self._upstream(
                {"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber", "params": []}
            )
            self._frozen_at = int(head["result"], 16)
        self.fault = fault

    @contextlib.asynccontextmanager
    async def faulty(self, fault: Fault) -> AsyncIterator[None]:
        await self.set_fault(fault)
        try:
            yield
        finally:
            await self.set_fault(Fault.NONE)

    async def _upstream(self, call: dict[str, Any]) -> dict[str, Any]:
        assert self._session is not None
        async with self._session.post(self.upstream, json=call) as response:
            answer: dict[str, Any] = await response.json(content_type=None)
            return answer

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read()
        fault = self.fault
        if fault is not Fault.NONE:
            self.faulted += 1
        if fault is Fault.HTTP_500:
            return web.Response(status=500, text="upstream node failed")
        if fault is Fault.MALFORMED:
            return web.Response(
                status=200, body=b'{"jsonrpc": "2.0", "id": 1, "result": ', content_type="application/json"
            )
        if fault is Fault.HANG:
            await self._released.wait()  # hung for good: the client gives up first, or the proxy stops
            return web.Response(status=503, text="released")
        calls = json.loads(body)
        if fault is Fault.RPC_ERROR:
            return web.json_response(_each(calls, lambda call: _error(call, -32603, "internal error")))
        frozen = self._frozen_at
        if fault is Fault.FROZEN and frozen is not None:
            answers = [
                await self._frozen(call, frozen) for call in (calls if isinstance(calls, list) else [calls])
            ]
            return web.json_response(answers if isinstance(calls, list) else answers[0])
        if isinstance(calls, list):
            return web.json_response([await self._upstream(call) for call in calls])
        return web.json_response(await self._upstream(calls))

    async def _frozen(self, call: dict[str, Any], block: int) -> dict[str, Any]:
        method = call.get("method")
        params = list(call.get("params") or [])
        tag = hex(block)
        if method == "eth_blockNumber":
            return {"jsonrpc": "2.0", "id": call.get("id"), "result": tag}
        if method == "eth_getBlockByNumber" and params and params[0] in _LATEST:
            params[0] = tag
        elif method in ("eth_call", "eth_estimateGas") and len(params) >= 2 and params[1] in _LATEST:
            params[1] = tag
        elif method in ("eth_call", "eth_estimateGas") and len(params) == 1:
            params.append(tag)
        elif method == "eth_getLogs" and params:
            flt = dict(params[0])
            to_block = flt.get("toBlock", "latest")
            if to_block in _LATEST or int(to_block, 16) > block:
                flt["toBlock"] = tag
            from_block = flt.get("fromBlock", "latest")
            if from_block not in _LATEST and int(from_block, 16) > block:
                return {"jsonrpc": "2.0", "id": call.get("id"), "result": []}
            params[0] = flt
        answer = await self._upstream({**call, "params": params})
        if method == "eth_getTransactionReceipt":
            receipt = answer.get("result")
            if receipt and int(receipt["blockNumber"], 16) > block:
                answer = {**answer, "result": None}
        return answer


def _each(calls: Any, answer: Any) -> Any:
    return [answer(call) for call in calls] if isinstance(calls, list) else answer(calls)


def _error(call: dict[str, Any], code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call.get("id"), "error": {"code": code, "message": message}}


@contextlib.asynccontextmanager
async def node_proxy(upstream: str) -> AsyncIterator[NodeProxy]:
    proxy = NodeProxy(upstream)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
