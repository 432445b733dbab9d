"""Read access to the Ethereum node and the PoCo hub, the only place the worker talks JSON-RPC.

Every method converts web3 and transport exceptions into ours: ChainError (retry later) or
ContractReverted (the chain said no). The endpoint is chosen here, once: a later pool of RPC
endpoints replaces ``_w3`` behind the same methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import aiohttp
from eth_typing import ChecksumAddress, HexStr
from hexbytes import HexBytes
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import ContractLogicError, TimeExhausted, TransactionNotFound, Web3Exception
from web3.types import BlockIdentifier, TxParams, TxReceipt, Wei

from worker.chain.abi import HUB_ABI, WORKERPOOL_ABI
from worker.chain.crypto import ZERO_ADDRESS, checksum, to_bytes, to_hex
from worker.chain.errors import ContractReverted, NonceTooLow, ReceiptTimeout, TaskNotFound
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
    tee_framework,
)
from worker.chain.multiaddr import multiaddr_to_uri
from worker.errors import ChainError, ConfigurationError
from worker.replicate.status import ChainContributionStatus, ChainTaskStatus

T = TypeVar("T")

DEFAULT_REQUEST_TIMEOUT = 30.0  # seconds per JSON-RPC request


def _hex32(value: bytes) -> str:
    return to_hex(bytes(value)).lower()


def _revert_reason(exc: ContractLogicError) -> str | None:
    message = exc.message or ""
    reason = message.removeprefix("execution reverted").lstrip(": ").strip()
    return reason or None


class ChainClient:
    """An AsyncWeb3 HTTP connection to one node, bound to the hub (diamond proxy) of one deployment."""

    def __init__(self, w3: AsyncWeb3[Any], hub_address: str, rpc_url: str) -> None:
        self._w3 = w3
        self.rpc_url = rpc_url
        self.hub_address: ChecksumAddress = cast(ChecksumAddress, checksum(hub_address))
        self._hub = w3.eth.contract(address=self.hub_address, abi=HUB_ABI)

    @classmethod
    async def connect(
        cls, rpc_url: str, hub_address: str, *, request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    ) -> ChainClient:
        """Open the connection and check that ``hub_address`` holds a contract on that node.

        Raises ChainError when the node does not answer, ConfigurationError when there is no
        contract at the hub address (wrong chain or wrong address).
        """
        if not rpc_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"chain node URL {rpc_url!r}: expected an http:// or https:// URL")
        w3 = AsyncWeb3(
            AsyncHTTPProvider(
                rpc_url, request_kwargs={"timeout": aiohttp.ClientTimeout(total=request_timeout)}
            )
        )
        client = cls(w3, hub_address, rpc_url)
        try:
            code = await client._rpc(f"code of hub {hub_address}", w3.eth.get_code(client.hub_address))
            if len(code) == 0:
                raise ConfigurationError(
                    f"iExec hub {hub_address}: no contract at this address on {rpc_url}; "
                    "check the chain node URL and the hub address of the scheduler's chain config"
                )
        except BaseException:
            await client.close()
            raise
        return client

    async def close(self) -> None:
        await self._w3.provider.disconnect()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _rpc(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except ContractLogicError as exc:
            reason = _revert_reason(exc)
            raise ContractReverted(
                f"{what}: reverted ({reason or 'no reason given'})", reason=reason
            ) from exc
        except (TimeoutError, Web3Exception, aiohttp.ClientError, OSError, ValueError) as exc:
            raise ChainError(f"{what} on {self.rpc_url}: {exc}") from exc

    # -- node --------------------------------------------------------------------------------

    async def chain_id(self) -> int:
        return await self._rpc("eth_chainId", self._w3.eth.chain_id)

    async def latest_block_number(self) -> int:
        return await self._rpc("eth_blockNumber", self._w3.eth.block_number)

    async def latest_block(self) -> ChainBlock:
        block = await self._rpc("latest block", self._w3.eth.get_block("latest"))
        base_fee = block.get("baseFeePerGas")
        return ChainBlock(
            number=int(block["number"]),
            timestamp=int(block["timestamp"]),
            base_fee_per_gas=int(base_fee) if base_fee is not None else None,
        )

    async def balance(self, address: str) -> int:
        """Wallet balance in wei."""
        return await self._rpc(f"balance of {address}", self._w3.eth.get_balance(self._address(address)))

    async def nonce(self, address: str, block: BlockIdentifier = "pending") -> int:
        return await self._rpc(
            f"transaction count of {address}",
            self._w3.eth.get_transaction_count(self._address(address), block),
        )

    async def gas_price(self) -> int | None:
        """``eth_gasPrice``, or None when the node does not give one (the gas policy then uses its cap)."""
        try:
            return await self._rpc("eth_gasPrice", self._w3.eth.gas_price)
        except ChainError:
            return None

    async def max_priority_fee(self) -> int | None:
        try:
            return await self._rpc("eth_maxPriorityFeePerGas", self._w3.eth.max_priority_fee)
        except ChainError:
            return None

    # -- transactions (used by TransactionSender) ---------------------------------------------

    def encode(self, function: str, *args: Any) -> str:
        """Calldata of a hub function."""
        return str(self._hub.encode_abi(function, args=list(args)))

    def _tx(self, sender: str, data: str) -> TxParams:
        return {"from": self._address(sender), "to": self.hub_address, "data": HexStr(data), "value": Wei(0)}

    async def simulate(self, sender: str, data: str, what: str) -> None:
        """``eth_call`` of a hub transaction from ``sender`` against the latest state."""
        await self._rpc(what, self._w3.eth.call(self._tx(sender, data)))

    async def estimate_gas(self, sender: str, data: str, what: str) -> int:
        return await self._rpc(what, self._w3.eth.estimate_gas(self._tx(sender, data)))

    async def broadcast(self, raw_tx: str, tx_hash: str) -> None:
        """``eth_sendRawTransaction``; a transaction the node already holds counts as sent."""
        try:
            await self._rpc("eth_sendRawTransaction", self._w3.eth.send_raw_transaction(HexBytes(raw_tx)))
        except ChainError as exc:
            message = str(exc).lower()
            if "already known" in message or "known transaction" in message:
                return
            if "nonce too low" in message or "nonce is too low" in message:
                raise NonceTooLow(f"transaction {tx_hash}: {exc}") from exc
            raise

    async def transaction_known(self, tx_hash: str) -> bool:
        """True when the node has this transaction, pending or mined."""
        try:
            await self._w3.eth.get_transaction(HexStr(tx_hash))
        except TransactionNotFound:
            return False
        except (TimeoutError, Web3Exception, aiohttp.ClientError, OSError) as exc:
            raise ChainError(f"transaction {tx_hash} on {self.rpc_url}: {exc}") from exc
        return True

    async def wait_for_receipt(self, tx_hash: str, *, wait: float, poll_interval: float) -> TxReceipt:
        try:
            return await self._w3.eth.wait_for_transaction_receipt(
                HexStr(tx_hash), timeout=wait, poll_latency=poll_interval
            )
        except TimeExhausted as exc:
            raise ReceiptTimeout(
                f"transaction {tx_hash}: not mined after {wait:g} s", tx_hash=tx_hash
            ) from exc
        except (Web3Exception, aiohttp.ClientError, OSError) as exc:
            raise ChainError(f"receipt of {tx_hash} on {self.rpc_url}: {exc}") from exc

    # -- hub views ----------------------------------------------------------------------------

    def _address(self, address: str) -> ChecksumAddress:
        return cast(ChecksumAddress, checksum(address))

    async def task(self, task_id: str) -> ChainTask:
        """The task as stored; an unknown task has status UNSET and a zero deal id."""
        raw = await self._rpc(
            f"viewTaskABILegacy({task_id})", self._hub.functions.viewTaskABILegacy(to_bytes(task_id)).call()
        )
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
            contributors=tuple(str(c) for c in who),
            results=bytes(results),
        )

    async def deal(self, deal_id: str) -> ChainDeal:
        """The deal as stored; an unknown deal has ``start_time == 0``."""
        raw = await self._rpc(f"viewDeal({deal_id})", self._hub.functions.viewDeal(to_bytes(deal_id)).call())
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
            self._hub.functions.viewContribution(to_bytes(task_id), self._address(worker)).call(),
        )
        status, result_hash, seal, enclave, weight = raw
        return ChainContribution(
            status=ChainContributionStatus(status),
            result_hash=_hex32(result_hash),
            result_seal=_hex32(seal),
            enclave_challenge=str(enclave),
            weight=int(weight),
        )

    async def account(self, address: str) -> ChainAccount:
        stake, locked = await self._rpc(
            f"viewAccount({address})", self._hub.functions.viewAccount(self._address(address)).call()
        )
        return ChainAccount(stake=int(stake), locked=int(locked))

    async def category(self, category_id: int) -> ChainCategory:
        name, description, time_ref = await self._rpc(
            f"viewCategory({category_id})", self._hub.functions.viewCategory(category_id).call()
        )
        return ChainCategory(
            category_id=category_id,
            name=str(name),
            description=str(description),
            work_clock_time_ref=int(time_ref),
        )

    async def app(self, address: str) -> ChainApp:
        owner, name, app_type, multiaddr, checksum_, mrenclave = await self._rpc(
            f"viewApp({address})", self._hub.functions.viewApp(self._address(address)).call()
        )
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
        owner, name, multiaddr, checksum_ = await self._rpc(
            f"viewDataset({address})", self._hub.functions.viewDataset(self._address(address)).call()
        )
        return ChainDataset(
            address=checksum(address),
            owner=str(owner),
            name=str(name),
            multiaddr=bytes(multiaddr),
            checksum=_hex32(checksum_),
        )

    async def workerpool_owner(self, pool_address: str) -> str:
        """``owner()`` of a workerpool contract: the wallet whose signatures authorize workers."""
        pool = self._w3.eth.contract(address=self._address(pool_address), abi=WORKERPOOL_ABI)
        owner = await self._rpc(f"owner() of workerpool {pool_address}", pool.functions.owner().call())
        return str(owner)

    async def callbackgas(self) -> int:
        return int(await self._rpc("callbackgas()", self._hub.functions.callbackgas().call()))

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
