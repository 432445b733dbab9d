"""Read access to the Ethereum nodes and the PoCo hub, the only place the worker talks JSON-RPC.

Every method converts web3 and transport exceptions into ours: ChainError (retry later) or
ContractReverted (the chain said no). The client holds one or more RPC endpoints, in the
operator's order of preference. A call goes to the first endpoint that is neither lagging nor
recently failed; a transport error moves it to the next one (and counts as an error of that
endpoint), while a revert is an answer and is never retried elsewhere. ``refresh_heads`` reads
every endpoint's latest block: one more than ``max_block_lag`` blocks behind the best is left
aside until it catches up, because a node in the past gives false answers ("stake too low",
"task not found", "cannot reveal").

Round trips are what a transaction's pre-checks cost, so: ``eth_chainId`` is asked once per node,
web3's middleware the worker does not use is left out (see ``_UNUSED_MIDDLEWARE``), the views a pre-check needs go in one
JSON-RPC batch (``task_views``; a node that refuses batches gets the same calls one by one, at
once), and what never changes once on chain is kept: a task's deal id and a deal (PoCo
``IexecLibCore_v5.Deal`` is written once, at the match). Both are keyed by their own id and kept
only once they exist, so a task not initialized yet, or another task, never sees them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

import aiohttp
from eth_typing import ABIFunction, ChecksumAddress, HexStr
from eth_utils.abi import function_abi_to_4byte_selector, get_abi_input_types, get_abi_output_types
from hexbytes import HexBytes
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.contract import AsyncContract
from web3.exceptions import (
    BlockNotFound,
    ContractLogicError,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
)
from web3.types import (
    BlockData,
    BlockIdentifier,
    FilterParams,
    LogReceipt,
    RPCEndpoint,
    RPCResponse,
    TxData,
    TxParams,
    TxReceipt,
    Wei,
)

from worker.chain.abi import HUB_ABI, WORKERPOOL_ABI
from worker.chain.errors import ContractReverted, NonceTooLow, TaskNotFound
from worker.chain.models import (
    ChainAccount,
    ChainApp,
    ChainBlock,
    ChainCategory,
    ChainContribution,
    ChainDataset,
    ChainDeal,
    ChainTask,
    DealAsset,
    DealParams,
    TaskDescription,
    TaskViews,
)
from worker.chain.multiaddr import multiaddr_to_uri
from worker.chain.observer import ChainObserver, NullObserver
from worker.protocol.bounded import NODE_ANSWER_LIMIT, AnswerTooLarge, read_capped
from worker.protocol.crypto import ZERO_ADDRESS, checksum, to_bytes, to_hex
from worker.protocol.errors import ChainError, ConfigurationError
from worker.protocol.redact import display_origin, redact, register_url_secrets
from worker.protocol.status import ChainContributionStatus, ChainTaskStatus
from worker.protocol.tee import tee_framework

T = TypeVar("T")
log = logging.getLogger("iexec.worker.chain")

DEFAULT_REQUEST_TIMEOUT = 30.0  # seconds per JSON-RPC request
DEFAULT_MAX_BLOCK_LAG = 5
FAILURE_COOLDOWN = 10.0  # seconds an endpoint that failed is tried only after the others
STATIC_VIEWS_KEPT = 1024  # deals and task-to-deal links remembered (least recently used dropped first)
BATCH_REFUSALS = 2  # batches a node refused in a row before its calls go one by one for good
_ANSWERS = (
    TransactionNotFound,
    BlockNotFound,
    Web3RPCError,
)  # what a working node says; no reason to try another


def _hex32(value: bytes) -> str:
    return to_hex(bytes(value)).lower()


def _revert_reason(exc: ContractLogicError) -> str | None:
    message = exc.message or ""
    reason = message.removeprefix("execution reverted").lstrip(": ").strip()
    return reason or None


class BoundedHTTPProvider(AsyncHTTPProvider):
    """web3's HTTP provider with the answer read up to NODE_ANSWER_LIMIT, and an HTTP error that names no URL.

    The stock provider reads a node's answer whole and raises aiohttp's error, which quotes the URL with
    its API key.
    """

    session: aiohttp.ClientSession | None = None
    """Kept alive across calls; web3's own (a connection per call, a lock taken in a thread) when None."""

    async def _make_request(self, method: RPCEndpoint, request_data: bytes) -> bytes:
        assert self.endpoint_uri is not None  # set by the constructor from the operator's URL
        if self.session is not None:
            response = await self.session.post(
                self.endpoint_uri, data=request_data, **dict(self.get_request_kwargs())
            )
        else:
            response = await self._request_session_manager.async_get_response_from_post_request(
                self.endpoint_uri, data=request_data, **dict(self.get_request_kwargs())
            )
        async with response:
            if response.status >= 400:
                raise NodeAnswerError(
                    f"{method}: the node answered HTTP {response.status} {response.reason or ''}"
                )
            try:
                return await read_capped(response.content.iter_chunked(256 * 1024), NODE_ANSWER_LIMIT)
            except AnswerTooLarge as exc:
                raise NodeAnswerError(f"{method}: {exc}") from exc

    async def make_batch_request(
        self, batch_requests: list[tuple[RPCEndpoint, Any]]
    ) -> list[RPCResponse] | RPCResponse:
        """A JSON-RPC batch through the same bounded read; answers in the order of the requests."""
        raw = await self._make_request(RPCEndpoint("batch"), self.encode_batch_rpc_request(batch_requests))
        response = self.decode_rpc_response(raw)
        if not isinstance(response, list):
            return response  # one error object: the node refused the batch as a whole
        return sorted(response, key=lambda answer: int(answer.get("id") or 0))


class NodeAnswerError(aiohttp.ClientError):
    """The node answered with an HTTP error or too much: a transport failure of that endpoint."""


class _HubView:
    """A hub view called with calldata built from types resolved once, not through a contract object.

    web3's contract function looks its ABI entry up, validates the whole ABI and normalizes the
    answer on every call: milliseconds of CPU per view, on the path of every transaction's pre-checks.
    """

    def __init__(self, name: str) -> None:
        entry = next(e for e in HUB_ABI if e.get("type") == "function" and e.get("name") == name)
        function = cast(ABIFunction, entry)
        self.selector = function_abi_to_4byte_selector(function)
        self.inputs = get_abi_input_types(function)
        self.outputs = get_abi_output_types(function)

    def call(self, ep: Endpoint, hub: ChecksumAddress, *args: Any) -> Awaitable[bytes]:
        data = to_hex(self.selector + ep.w3.codec.encode(self.inputs, list(args)))
        return cast(Awaitable[bytes], ep.w3.eth.call({"to": hub, "data": HexStr(data)}))

    def decode(self, ep: Endpoint, answer: bytes) -> Any:
        values = ep.w3.codec.decode(self.outputs, bytes(answer))
        return values[0] if len(values) == 1 else values


_VIEW_TASK = _HubView("viewTaskABILegacy")
_VIEW_CONTRIBUTION = _HubView("viewContribution")
_VIEW_ACCOUNT = _HubView("viewAccount")


@contextmanager
def _answer(what: str) -> Iterator[None]:
    """A node answer that does not have the expected shape is that node's failure, not the worker's crash."""
    try:
        yield
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, UnicodeError) as exc:
        raise ChainError(
            f"{what}: malformed answer from the node ({type(exc).__name__}: {redact(str(exc))[:200]})"
        ) from exc


@dataclass(eq=False)
class Endpoint:
    """One JSON-RPC node; ``label`` (its position in the list) names it in metrics."""

    index: int
    url: str
    w3: AsyncWeb3[Any]
    hub: AsyncContract
    head: int | None = None
    lagging: bool = False
    failed_at: float = field(default=-math.inf)
    batch_refusals: int = 0

    @property
    def label(self) -> str:
        return str(self.index)

    @property
    def display(self) -> str:
        return display_origin(self.url)


class ChainClient:
    """AsyncWeb3 HTTP connections to one or more nodes of one chain, bound to the hub of one deployment."""

    def __init__(
        self,
        endpoints: Sequence[tuple[AsyncWeb3[Any], str]],
        hub_address: str,
        *,
        max_block_lag: int = DEFAULT_MAX_BLOCK_LAG,
        observer: ChainObserver | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        """``request_timeout`` is the bound the providers were given (for messages)."""
        if not endpoints:
            raise ConfigurationError("no blockchain node: set IEXEC_WORKER_BLOCKCHAIN_NODE_ADDRESSES")
        self.hub_address: ChecksumAddress = cast(ChecksumAddress, checksum(hub_address))
        self.endpoints = [
            Endpoint(i, url, w3, w3.eth.contract(address=self.hub_address, abi=HUB_ABI))
            for i, (w3, url) in enumerate(endpoints)
        ]
        self.max_block_lag = max_block_lag
        self.request_timeout = request_timeout
        self.observer: ChainObserver = observer or NullObserver()
        self._deal_ids: _Kept[str] = _Kept(STATIC_VIEWS_KEPT)
        self._deals: _Kept[ChainDeal] = _Kept(STATIC_VIEWS_KEPT)

    @property
    def rpc_url(self) -> str:
        """The endpoint calls go to now, without any secret of its URL (for messages)."""
        return self._ordered()[0].display

    @classmethod
    async def connect(
        cls,
        rpc_urls: str | Sequence[str],
        hub_address: str,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_block_lag: int = DEFAULT_MAX_BLOCK_LAG,
        observer: ChainObserver | None = None,
        proxy_for: Callable[[str], str | None] | None = None,
    ) -> ChainClient:
        """Open the connections and check that ``hub_address`` holds a contract on every node that answers.

        ``proxy_for`` names the HTTP proxy of each node URL (None: direct), as for every outbound call.

        Raises ChainError when no node answers, ConfigurationError when a node has no contract at
        the hub address or is on another chain than the first (wrong chain or wrong address).
        """
        urls = [rpc_urls] if isinstance(rpc_urls, str) else list(dict.fromkeys(rpc_urls))
        for url in urls:
            # Its path or query may hold an API key: never in a log line, an error or /health.
            register_url_secrets(url)
            if not url.startswith(("http://", "https://")):
                raise ConfigurationError(
                    f"chain node URL {display_origin(url)!r}: expected an http:// or https:// URL"
                )

        def provider(url: str) -> BoundedHTTPProvider:
            kwargs: dict[str, Any] = {"timeout": aiohttp.ClientTimeout(total=request_timeout)}
            proxy = proxy_for(url) if proxy_for is not None else None
            if proxy is not None:
                kwargs["proxy"] = proxy
            # eth_chainId only: web3 asks it before each eth_call and eth_estimateGas, it never changes.
            return BoundedHTTPProvider(
                url,
                request_kwargs=kwargs,
                cache_allowed_requests=True,
                cacheable_requests={RPCEndpoint("eth_chainId")},
            )

        providers = [(provider(url), url) for url in urls]
        for made, _ in providers:
            # web3's own session opens a connection per call (force_close): one kept alive per node instead,
            # also in web3's cache so that its disconnect() closes it.
            made.session = await made.cache_async_session(aiohttp.ClientSession())
        pairs = [(_web3(made), url) for made, url in providers]
        client = cls(
            pairs,
            hub_address,
            max_block_lag=max_block_lag,
            observer=observer,
            request_timeout=request_timeout,
        )
        try:
            await client._check_endpoints(hub_address)
        except BaseException:
            await client.close()
            raise
        return client

    async def _check_endpoints(self, hub_address: str) -> None:
        chain_ids: dict[int, Endpoint] = {}
        errors: list[str] = []
        for ep in self.endpoints:
            try:
                code = await self._on(
                    ep, f"code of hub {hub_address}", lambda e: e.w3.eth.get_code(self.hub_address)
                )
                chain_id = await self._on(ep, "eth_chainId", lambda e: e.w3.eth.chain_id)
            except ChainError as exc:
                log.warning("chain node %s (#%s) does not answer yet: %s", ep.display, ep.label, exc)
                errors.append(str(exc))
                continue
            if len(code) == 0:
                raise ConfigurationError(
                    f"iExec hub {hub_address}: no contract at this address on {ep.display}; "
                    "check the chain node URL and the hub address of the scheduler's chain config"
                )
            other = next(iter(chain_ids.values()), None)
            if chain_ids and chain_id not in chain_ids and other is not None:
                raise ConfigurationError(
                    f"chain node {ep.display} is on chain {chain_id}, {other.display} on chain "
                    f"{next(iter(chain_ids))}: list nodes of one chain in IEXEC_WORKER_BLOCKCHAIN_NODE_ADDRESSES"
                )
            chain_ids.setdefault(chain_id, ep)
        if not chain_ids:
            raise ChainError(f"no chain node answers: {'; '.join(errors)}")

    async def close(self) -> None:
        for ep in self.endpoints:
            await ep.w3.provider.disconnect()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- endpoint choice ------------------------------------------------------------------------

    def _ordered(self) -> list[Endpoint]:
        now = time.monotonic()
        # Stable sort: the operator's order among equals; lagging and recently failed nodes last.
        return sorted(self.endpoints, key=lambda ep: (ep.lagging, now - ep.failed_at < FAILURE_COOLDOWN))

    async def _on(self, ep: Endpoint, what: str, call: Callable[[Endpoint], Awaitable[T]]) -> T:
        try:
            return await call(ep)
        except ContractLogicError as exc:
            reason = _revert_reason(exc)
            raise ContractReverted(
                f"{what}: reverted ({reason or 'no reason given'})", reason=reason
            ) from exc
        except (TimeoutError, Web3Exception, aiohttp.ClientError, OSError, ValueError) as exc:
            if not isinstance(exc, _ANSWERS):
                ep.failed_at = time.monotonic()
                self.observer.rpc_error(ep.label)
            raise ChainError(f"{what} on {ep.display}: {self._cause(exc)}") from exc

    def _cause(self, exc: BaseException) -> str:
        """What went wrong, in words, even when the exception carries none (a timeout has no message)."""
        if isinstance(exc, TimeoutError):
            return f"no answer within {self.request_timeout:g} s (the node hangs or is overloaded)"
        if isinstance(exc, aiohttp.ClientResponseError):
            return f"the node answered HTTP {exc.status} {exc.message}"
        if isinstance(exc, ValueError) and not isinstance(exc, Web3Exception):
            return f"malformed answer ({type(exc).__name__}: {redact(str(exc))[:200]})"
        return redact(str(exc)) or type(exc).__name__

    async def _rpc(self, what: str, call: Callable[[Endpoint], Awaitable[T]]) -> T:
        """``call`` on the preferred endpoint, then on the next ones while the transport fails."""
        last: ChainError | None = None
        for ep in self._ordered():
            try:
                return await self._on(ep, what, call)
            except ChainError as exc:
                if isinstance(exc.__cause__, _ANSWERS):
                    raise  # the node answered (an unknown hash, "nonce too low"...): not its failure
                if last is None and len(self.endpoints) > 1:
                    log.warning("%s failed on node %s: trying the next one", what, ep.display)
                last = exc
        assert last is not None
        raise last

    async def refresh_heads(self) -> int:
        """Read every endpoint's latest block, set aside the laggards; returns the best block.

        Raises ChainError when no endpoint answers.
        """

        errors: list[str] = []

        async def head(ep: Endpoint) -> int | None:
            try:
                return await self._on(ep, "eth_blockNumber", lambda e: e.w3.eth.block_number)
            except ChainError as exc:
                errors.append(str(exc))
                return None

        heads = await asyncio.gather(*(head(ep) for ep in self.endpoints))
        known = [h for h in heads if h is not None]
        if not known:
            raise ChainError(f"no chain node answers: {'; '.join(errors)}")
        best = max(known)
        for ep, number in zip(self.endpoints, heads, strict=True):
            if number is None:
                continue
            ep.head = number
            self.observer.head(ep.label, number)
            lagging = best - number > self.max_block_lag
            if lagging != ep.lagging:
                if lagging:
                    log.warning(
                        "chain node %s (#%s) is %d blocks behind the best (%d): not used until it catches up",
                        ep.display, ep.label, best - number, best,
                    )  # fmt: skip
                else:
                    log.info(
                        "chain node %s (#%s) caught up (block %d): used again", ep.display, ep.label, number
                    )
            ep.lagging = lagging
        return best

    # -- node --------------------------------------------------------------------------------

    async def chain_id(self) -> int:
        return await self._rpc("eth_chainId", lambda ep: ep.w3.eth.chain_id)

    async def latest_block_number(self) -> int:
        return await self._rpc("eth_blockNumber", lambda ep: ep.w3.eth.block_number)

    async def latest_block(self) -> ChainBlock:
        block = await self._rpc("latest block", lambda ep: ep.w3.eth.get_block("latest"))
        with _answer("latest block"):
            return self._block(block)

    @staticmethod
    def _block(block: BlockData) -> ChainBlock:
        base_fee = block.get("baseFeePerGas")
        return ChainBlock(
            number=int(block["number"]),
            timestamp=int(block["timestamp"]),
            base_fee_per_gas=int(base_fee) if base_fee is not None else None,
        )

    async def block_hash(self, number: int) -> str | None:
        """Hash of block ``number`` on the node's chain now (lowercase hex), None when it has no such block."""
        try:
            block = await self._rpc(f"block {number}", lambda ep: ep.w3.eth.get_block(number))
        except ChainError as exc:
            if isinstance(exc.__cause__, BlockNotFound):
                return None
            raise
        with _answer(f"block {number}"):
            return _hex32(block["hash"])

    async def balance(self, address: str) -> int:
        """Wallet balance in wei."""
        return await self._rpc(
            f"balance of {address}", lambda ep: ep.w3.eth.get_balance(self._address(address))
        )

    async def nonce(self, address: str, block: BlockIdentifier = "pending") -> int:
        return await self._rpc(
            f"transaction count of {address}",
            lambda ep: ep.w3.eth.get_transaction_count(self._address(address), block),
        )

    async def gas_price(self) -> int | None:
        """``eth_gasPrice``, or None when the node does not give one (the gas policy then uses its cap)."""
        try:
            return await self._rpc("eth_gasPrice", lambda ep: ep.w3.eth.gas_price)
        except ChainError:
            return None

    async def max_priority_fee(self) -> int | None:
        try:
            return await self._rpc("eth_maxPriorityFeePerGas", lambda ep: ep.w3.eth.max_priority_fee)
        except ChainError:
            return None

    async def logs(self, topics: list[Any], from_block: int, to_block: int) -> list[LogReceipt]:
        """Hub logs matching ``topics`` (web3 filter syntax: a list in a position means "any of")."""
        params: FilterParams = {
            "address": self.hub_address,
            "fromBlock": from_block,
            "toBlock": to_block,
            "topics": topics,
        }
        return await self._rpc(f"logs {from_block}..{to_block}", lambda ep: ep.w3.eth.get_logs(params))

    # -- transactions (used by TransactionSender) ---------------------------------------------

    def encode(self, function: str, *args: Any) -> str:
        """Calldata of a hub function."""
        return str(self.endpoints[0].hub.encode_abi(function, args=list(args)))

    def _tx(self, sender: str, data: str) -> TxParams:
        return {"from": self._address(sender), "to": self.hub_address, "data": HexStr(data), "value": Wei(0)}

    async def simulate(self, sender: str, data: str, what: str) -> None:
        """``eth_call`` of a hub transaction from ``sender`` against the latest state."""
        await self._rpc(what, lambda ep: ep.w3.eth.call(self._tx(sender, data)))

    async def estimate_gas(self, sender: str, data: str, what: str) -> int:
        return await self._rpc(what, lambda ep: ep.w3.eth.estimate_gas(self._tx(sender, data)))

    async def broadcast(self, raw_tx: str, tx_hash: str) -> None:
        """``eth_sendRawTransaction``; a transaction the node already holds counts as sent."""
        try:
            await self._rpc(
                "eth_sendRawTransaction", lambda ep: ep.w3.eth.send_raw_transaction(HexBytes(raw_tx))
            )
        except ChainError as exc:
            message = str(exc).lower()
            if "already known" in message or "known transaction" in message or "already imported" in message:
                return
            if "nonce too low" in message or "nonce is too low" in message:
                raise NonceTooLow(f"transaction {tx_hash}: {exc}") from exc
            raise

    async def transaction(self, tx_hash: str) -> TxData | None:
        """The transaction as the node holds it (pending or mined), None when it does not know it."""
        try:
            return await self._rpc(
                f"transaction {tx_hash}", lambda ep: ep.w3.eth.get_transaction(HexStr(tx_hash))
            )
        except ChainError as exc:
            if isinstance(exc.__cause__, TransactionNotFound):
                return None
            raise

    async def transaction_known(self, tx_hash: str) -> bool:
        """True when the node has this transaction, pending or mined."""
        return await self.transaction(tx_hash) is not None

    async def receipt(self, tx_hash: str) -> TxReceipt | None:
        """The receipt of a mined transaction, None while it is pending or unknown."""
        try:
            return await self._rpc(
                f"receipt of {tx_hash}", lambda ep: ep.w3.eth.get_transaction_receipt(HexStr(tx_hash))
            )
        except ChainError as exc:
            if isinstance(exc.__cause__, TransactionNotFound):
                return None
            raise

    # -- hub views ----------------------------------------------------------------------------

    def _address(self, address: str) -> ChecksumAddress:
        return cast(ChecksumAddress, checksum(address))

    async def task(self, task_id: str) -> ChainTask:
        """The task as stored; an unknown task has status UNSET and a zero deal id."""
        raw = await self._rpc(
            f"viewTaskABILegacy({task_id})",
            lambda ep: ep.hub.functions.viewTaskABILegacy(to_bytes(task_id)).call(),
        )
        with _answer(f"viewTaskABILegacy({task_id})"):
            return self._remember_task(self._task(task_id, raw))

    def _remember_task(self, task: ChainTask) -> ChainTask:
        if int(task.deal_id, 16) != 0:
            self._deal_ids.put(task.task_id, task.deal_id)
        return task

    def known_deal_id(self, task_id: str) -> str | None:
        """The deal of a task already read from the chain (a task's deal never changes), else None."""
        return self._deal_ids.get(task_id.lower())

    @staticmethod
    def _task(task_id: str, raw: Any) -> ChainTask:
        (
            status,
            deal,
            idx,
            timeref,
            contrib_dl,
            reveal_dl,
            final_dl,
            consensus,
            reveals,
            winners,
            who,
            results,
        ) = raw
        return ChainTask(
            task_id=task_id.lower(),
            status=ChainTaskStatus(status),
            deal_id=_hex32(deal),
            index=int(idx),
            timeref=int(timeref),
            contribution_deadline=int(contrib_dl),
            reveal_deadline=int(reveal_dl),
            final_deadline=int(final_dl),
            consensus_value=_hex32(consensus),
            reveal_counter=int(reveals),
            winner_counter=int(winners),
            contributors=tuple(str(c).lower() for c in who),
            results=bytes(results),
        )

    async def deal(self, deal_id: str) -> ChainDeal:
        """The deal as stored; an unknown deal has ``start_time == 0``.

        A deal that exists is read once: its fields are written at the match and never again.
        """
        known = self._deals.get(deal_id.lower())
        if known is not None:
            return known
        raw = await self._rpc(
            f"viewDeal({deal_id})", lambda ep: ep.hub.functions.viewDeal(to_bytes(deal_id)).call()
        )
        with _answer(f"viewDeal({deal_id})"):
            deal = self._deal(deal_id, raw)
        if deal.start_time > 0:
            self._deals.put(deal.deal_id, deal)
        return deal

    @staticmethod
    def _deal(deal_id: str, raw: Any) -> ChainDeal:
        (app, dataset, pool, trust, category, tag, requester, beneficiary, callback, params, start, *rest) = (
            raw
        )
        bot_first, bot_size, worker_stake, reward_ratio, sponsor = rest

        def asset(fields: tuple[str, str, int]) -> DealAsset:
            return DealAsset(pointer=str(fields[0]), owner=str(fields[1]), price=int(fields[2]))

        return ChainDeal(
            deal_id=deal_id.lower(),
            app=asset(app),
            dataset=asset(dataset),
            workerpool=asset(pool),
            trust=int(trust),
            category=int(category),
            tag=_hex32(tag),
            requester=str(requester),
            beneficiary=str(beneficiary),
            callback=str(callback),
            params=str(params),
            start_time=int(start),
            bot_first=int(bot_first),
            bot_size=int(bot_size),
            worker_stake=int(worker_stake),
            scheduler_reward_ratio=int(reward_ratio),
            sponsor=str(sponsor),
        )

    async def contribution(self, task_id: str, worker: str) -> ChainContribution:
        raw = await self._rpc(
            f"viewContribution({task_id}, {worker})",
            lambda ep: ep.hub.functions.viewContribution(to_bytes(task_id), self._address(worker)).call(),
        )
        with _answer(f"viewContribution({task_id}, {worker})"):
            return self._contribution(raw)

    @staticmethod
    def _contribution(raw: Any) -> ChainContribution:
        status, result_hash, seal, enclave, weight = raw
        return ChainContribution(
            status=ChainContributionStatus(status),
            result_hash=_hex32(result_hash),
            result_seal=_hex32(seal),
            enclave_challenge=checksum(str(enclave)),
            weight=int(weight),
        )

    async def task_views(
        self, task_id: str, worker: str, *, stake: bool, balance: bool, fee: str | None
    ) -> TaskViews:
        """The task, ``worker``'s contribution and the latest block, in one round trip.

        ``stake`` adds the worker's hub account, ``balance`` its wallet balance, ``fee`` the node's
        ``"tip"`` (eth_maxPriorityFeePerGas) or ``"gas_price"`` (eth_gasPrice); an unanswered fee
        question gives None, as ``max_priority_fee`` and ``gas_price`` do.
        """
        what = f"views of task {task_id}"
        ep, answers = await self._rpc(what, lambda e: self._views_on(e, task_id, worker, stake, balance, fee))
        with _answer(what):
            task_answer, contribution_answer, *rest = answers
            raw_task = _VIEW_TASK.decode(ep, task_answer)
            raw_contribution = _VIEW_CONTRIBUTION.decode(ep, contribution_answer)
            raw_account = _VIEW_ACCOUNT.decode(ep, rest.pop(0)) if stake else None
            block = self._block(cast(BlockData, rest.pop(0)))
            wallet = int(rest.pop(0)) if balance else None
            price = rest.pop(0) if fee is not None else None
            return TaskViews(
                task=self._remember_task(self._task(task_id, raw_task)),
                contribution=self._contribution(raw_contribution),
                block=block,
                account=ChainAccount(int(raw_account[0]), int(raw_account[1])) if raw_account else None,
                balance=wallet,
                priority_fee=int(price) if fee == "tip" and price is not None else None,
                gas_price=int(price) if fee == "gas_price" and price is not None else None,
            )

    async def _views_on(
        self, ep: Endpoint, task_id: str, worker: str, stake: bool, balance: bool, fee: str | None
    ) -> tuple[Endpoint, list[Any]]:
        tid, who, hub = to_bytes(task_id), self._address(worker), self.hub_address

        def node_calls() -> list[Any]:
            # Made inside the batch context when batching: web3 then queues them instead of sending.
            calls: list[Any] = [_VIEW_TASK.call(ep, hub, tid), _VIEW_CONTRIBUTION.call(ep, hub, tid, who)]
            if stake:
                calls.append(_VIEW_ACCOUNT.call(ep, hub, who))
            calls.append(ep.w3.eth.get_block("latest"))
            if balance:
                calls.append(ep.w3.eth.get_balance(who))
            if fee == "tip":
                calls.append(ep.w3.eth.max_priority_fee)
            elif fee == "gas_price":
                calls.append(ep.w3.eth.gas_price)
            return calls

        if ep.batch_refusals < BATCH_REFUSALS:
            try:
                async with ep.w3.batch_requests() as batch:
                    for item in node_calls():
                        batch.add(item)
                    answers = list(await batch.async_execute())
            except (Web3Exception, NodeAnswerError) as exc:
                # Batches unsupported or too large for this node, or one answer an error (a fee question a
                # legacy node does not know): the same calls one by one say which, and answer the rest.
                ep.batch_refusals += 1
                log.debug("batch of %s refused by %s: %s", task_id, ep.display, redact(str(exc)))
            else:
                ep.batch_refusals = 0
                return ep, answers
        calls = node_calls()
        if fee is not None:
            calls[-1] = _or_none(calls[-1])
        return ep, list(await asyncio.gather(*calls))

    async def account(self, address: str) -> ChainAccount:
        raw = await self._rpc(
            f"viewAccount({address})", lambda ep: ep.hub.functions.viewAccount(self._address(address)).call()
        )
        with _answer(f"viewAccount({address})"):
            stake, locked = raw
            return ChainAccount(stake=int(stake), locked=int(locked))

    async def category(self, category_id: int) -> ChainCategory:
        raw = await self._rpc(
            f"viewCategory({category_id})", lambda ep: ep.hub.functions.viewCategory(category_id).call()
        )
        with _answer(f"viewCategory({category_id})"):
            name, description, time_ref = raw
        return ChainCategory(
            category_id=category_id,
            name=str(name),
            description=str(description),
            work_clock_time_ref=int(time_ref),
        )

    async def app(self, address: str) -> ChainApp:
        raw = await self._rpc(
            f"viewApp({address})", lambda ep: ep.hub.functions.viewApp(self._address(address)).call()
        )
        with _answer(f"viewApp({address})"):
            owner, name, app_type, multiaddr, checksum_, mrenclave = raw
        return ChainApp(
            address=checksum(address),
            owner=str(owner),
            name=str(name),
            app_type=str(app_type),
            multiaddr=bytes(multiaddr),
            checksum=_hex32(checksum_),
            mrenclave=bytes(mrenclave),
        )

    async def dataset(self, address: str) -> ChainDataset:
        raw = await self._rpc(
            f"viewDataset({address})", lambda ep: ep.hub.functions.viewDataset(self._address(address)).call()
        )
        with _answer(f"viewDataset({address})"):
            owner, name, multiaddr, checksum_ = raw
        return ChainDataset(
            address=checksum(address),
            owner=str(owner),
            name=str(name),
            multiaddr=bytes(multiaddr),
            checksum=_hex32(checksum_),
        )

    async def workerpool_owner(self, pool_address: str) -> str:
        """``owner()`` of a workerpool contract: the wallet whose signatures authorize workers."""
        address = self._address(pool_address)
        owner = await self._rpc(
            f"owner() of workerpool {pool_address}",
            lambda ep: ep.w3.eth.contract(address=address, abi=WORKERPOOL_ABI).functions.owner().call(),
        )
        return str(owner)

    async def callbackgas(self) -> int:
        return int(await self._rpc("callbackgas()", lambda ep: ep.hub.functions.callbackgas().call()))

    async def task_description(self, task_id: str) -> TaskDescription:
        """Assemble what a replicate needs from the task, deal, category, app and dataset views.

        Raises TaskNotFound while the task is not initialized (or its deal is unknown) on this node.
        """
        task = await self.task(task_id)
        if int(task.deal_id, 16) == 0:
            raise TaskNotFound(f"task {task_id}: not initialized on chain (yet)")
        deal = await self.deal(task.deal_id)
        if deal.start_time <= 0:
            raise TaskNotFound(f"task {task_id}: deal {task.deal_id} not found on chain")
        has_dataset = deal.dataset.pointer.lower() != ZERO_ADDRESS
        category, app, dataset = await asyncio.gather(
            self.category(deal.category),
            self.app(deal.app.pointer),
            self.dataset(deal.dataset.pointer) if has_dataset else _none(),
        )
        with _answer(f"task description of {task_id}"):
            return self._description(task, deal, category, app, dataset)

    @staticmethod
    def _description(
        task: ChainTask, deal: ChainDeal, category: ChainCategory, app: ChainApp, dataset: ChainDataset | None
    ) -> TaskDescription:
        return TaskDescription(
            task_id=task.task_id,
            deal_id=task.deal_id,
            bot_index=task.index,
            app_type=app.app_type,
            app_uri=app.multiaddr.decode("ascii", errors="replace"),
            app_checksum=app.checksum,
            app_mrenclave=app.mrenclave.decode("utf-8", errors="replace"),
            app_address=deal.app.pointer,
            app_owner=deal.app.owner,
            app_price=deal.app.price,
            dataset_address=deal.dataset.pointer,
            dataset_owner=deal.dataset.owner,
            dataset_price=deal.dataset.price,
            dataset_uri=multiaddr_to_uri(dataset.multiaddr) if dataset else "",
            dataset_checksum=dataset.checksum if dataset else "",
            workerpool_address=deal.workerpool.pointer,
            workerpool_owner=deal.workerpool.owner,
            workerpool_price=deal.workerpool.price,
            trust=deal.trust,
            category=deal.category,
            tag=deal.tag,
            requester=deal.requester,
            beneficiary=deal.beneficiary,
            callback=deal.callback,
            deal_params=DealParams.parse(deal.params),
            start_time=deal.start_time,
            bot_first_index=deal.bot_first,
            bot_size=deal.bot_size,
            worker_stake=deal.worker_stake,
            tee_framework=tee_framework(deal.tag),
            max_execution_time=category.work_clock_time_ref,
            contribution_deadline=task.contribution_deadline,
            final_deadline=task.final_deadline,
        )


# web3's default middleware the worker has no use for, each a cost on every request: "validation" asks
# the chain id before every eth_call and eth_estimateGas and checks the transaction fields of calls that
# name no chain id, ENS names are never used, gas price strategies and gas buffering only apply to
# eth_sendTransaction (the worker signs locally and uses eth_sendRawTransaction).
_UNUSED_MIDDLEWARE = ("validation", "ens_name_to_address", "gas_price_strategy", "gas_estimate")


def _web3(provider: AsyncHTTPProvider) -> AsyncWeb3[Any]:
    w3 = AsyncWeb3(provider)
    for name in _UNUSED_MIDDLEWARE:
        w3.middleware_onion.remove(name)
    return w3


async def _none() -> None:
    return None


async def _or_none(answer: Awaitable[T]) -> T | None:
    """An optional question to the node: its error is "no answer", not a failure of the others."""
    try:
        return await answer
    except (Web3Exception, ValueError):
        return None


class _Kept(Generic[T]):
    """A bounded map of values that never change once on chain, least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, T] = OrderedDict()

    def get(self, key: str) -> T | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: T) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)
