"""Read access to the Ethereum nodes and the PoCo hub, the only place the worker talks JSON-RPC.

Every method converts web3 and transport exceptions into ours: ChainError (retry later) or
ContractReverted (the chain said no). The client holds one or more RPC endpoints, in the
operator's order of preference. A call goes to the first endpoint that is neither lagging nor
recently failed; a transport error moves it to the next one (and counts as an error of that
endpoint), while a revert is an answer and is never retried elsewhere. ``refresh_heads`` reads
every endpoint's latest block: one more than ``max_block_lag`` blocks behind the best is left
aside until it catches up, because a node in the past gives false answers ("stake too low",
"task not found", "cannot reveal").
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import aiohttp
from eth_typing import ChecksumAddress, HexStr
from hexbytes import HexBytes
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.contract import AsyncContract
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3Exception, Web3RPCError
from web3.types import (
    BlockIdentifier,
    FilterParams,
    LogReceipt,
    RPCEndpoint,
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
_KNOWN_DEALS = 1024
FAILURE_COOLDOWN = 10.0  # seconds an endpoint that failed is tried only after the others
_ANSWERS = (TransactionNotFound, Web3RPCError)  # what a working node says; no reason to try another


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


class NodeAnswerError(aiohttp.ClientError):
    """The node answered with an HTTP error or too much: a transport failure of that endpoint."""


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
    ) -> None:
        if not endpoints:
            raise ConfigurationError("no blockchain node: set IEXEC_WORKER_BLOCKCHAIN_NODE_ADDRESSES")
        self.hub_address: ChecksumAddress = cast(ChecksumAddress, checksum(hub_address))
        self.endpoints = [
            Endpoint(i, url, w3, w3.eth.contract(address=self.hub_address, abi=HUB_ABI))
            for i, (w3, url) in enumerate(endpoints)
        ]
        self.max_block_lag = max_block_lag
        self.observer: ChainObserver = observer or NullObserver()
        # Deals never change once made (the id is the hash of the orders they match): read each once.
        self._deals: dict[str, ChainDeal] = {}

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
            return BoundedHTTPProvider(url, request_kwargs=kwargs)

        providers = [(provider(url), url) for url in urls]
        for made, _ in providers:
            # web3's own session opens a connection per call (force_close): one kept alive per node instead,
            # also in web3's cache so that its disconnect() closes it.
            made.session = await made.cache_async_session(aiohttp.ClientSession())
        pairs = [(AsyncWeb3(made), url) for made, url in providers]
        for w3, _ in pairs:
            # Validation asks the node its chain id again before every eth_call (two calls for one view);
            # the node itself refuses a raw transaction signed for another chain (EIP-155). Addresses here
            # are hex, never ENS names.
            w3.middleware_onion.remove("validation")
            w3.middleware_onion.remove("ens_name_to_address")
        client = cls(pairs, hub_address, max_block_lag=max_block_lag, observer=observer)
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
            raise ChainError(f"{what} on {ep.display}: {redact(str(exc))}") from exc

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

        async def head(ep: Endpoint) -> int | None:
            try:
                return await self._on(ep, "eth_blockNumber", lambda e: e.w3.eth.block_number)
            except ChainError:
                return None

        heads = await asyncio.gather(*(head(ep) for ep in self.endpoints))
        known = [h for h in heads if h is not None]
        if not known:
            raise ChainError(f"no chain node answers ({', '.join(ep.display for ep in self.endpoints)})")
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
            base_fee = block.get("baseFeePerGas")
            return ChainBlock(
                number=int(block["number"]),
                timestamp=int(block["timestamp"]),
                base_fee_per_gas=int(base_fee) if base_fee is not None else None,
            )

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
            return self._task(task_id, raw)

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
        """The deal as stored; an unknown deal has ``start_time == 0`` (and is asked again next time)."""
        known = self._deals.get(deal_id.lower())
        if known is not None:
            return known
        raw = await self._rpc(
            f"viewDeal({deal_id})", lambda ep: ep.hub.functions.viewDeal(to_bytes(deal_id)).call()
        )
        with _answer(f"viewDeal({deal_id})"):
            deal = self._deal(deal_id, raw)
        if deal.start_time > 0:
            if len(self._deals) >= _KNOWN_DEALS:
                del self._deals[next(iter(self._deals))]
            self._deals[deal.deal_id] = deal
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
            status, result_hash, seal, enclave, weight = raw
            return ChainContribution(
                status=ChainContributionStatus(status),
                result_hash=_hex32(result_hash),
                result_seal=_hex32(seal),
                enclave_challenge=str(enclave),
                weight=int(weight),
            )

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


async def _none() -> None:
    return None
