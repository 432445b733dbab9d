"""``SchedulerChain`` over the devnet toolkit: the scheduler's reads and its two transactions."""

from __future__ import annotations

from typing import Any, cast

from eth_account.signers.local import LocalAccount
from web3.types import FilterParams

from devnet.contracts import checksum
from devnet.toolkit import Toolkit
from worker.protocol.crypto import to_hex
from worker.protocol.status import ChainTaskStatus

from .chain import BlockRef, ChainTask, ContributionView, DealView

SCHEDULER_NOTICE_TOPIC = "0x692ad61076dceddd0f1a861f737553dd61fc8501cf4190d29c4e90af6607f765"
TASK_CONSENSUS_TOPIC = "0xf6d49bf3e05d33a4bc497d3c793fb5756388bb96b947cf51bb60aaecb0e022e3"


def _address_topic(address: str) -> str:
    return "0x" + address.lower().removeprefix("0x").rjust(64, "0")


class ToolkitChain:
    def __init__(self, toolkit: Toolkit, scheduler: LocalAccount) -> None:
        self._toolkit = toolkit
        self._w3 = toolkit.w3
        self._scheduler = scheduler
        self._hub = checksum(toolkit.deployment.hub)

    async def chain_id(self) -> int:
        return self._toolkit.deployment.chain_id

    async def latest_block(self) -> BlockRef:
        block = await self._w3.eth.get_block("latest")
        return BlockRef(number=int(block["number"]), timestamp=int(block["timestamp"]))

    async def _logs(self, topics: list[Any], from_block: int, to_block: int | str) -> list[Any]:
        params = {"address": self._hub, "fromBlock": from_block, "toBlock": to_block, "topics": topics}
        return list(await self._w3.eth.get_logs(cast(FilterParams, params)))

    async def deals_for_workerpool(self, workerpool: str, from_block: int, to_block: int) -> list[str]:
        logs = await self._logs([SCHEDULER_NOTICE_TOPIC, _address_topic(workerpool)], from_block, to_block)
        return [to_hex(bytes(log["data"])[:32]) for log in logs]

    async def consensus_block(self, task_id: str, from_block: int) -> int:
        logs = await self._logs([TASK_CONSENSUS_TOPIC, task_id], from_block, "latest")
        return int(logs[0]["blockNumber"]) if logs else 0

    async def initialize(self, deal_id: str, index: int) -> str:
        return await self._toolkit.initialize(deal_id, index, self._scheduler)

    async def finalize(self, task_id: str, results: bytes, results_callback: bytes) -> None:
        await self._toolkit.finalize(task_id, results, results_callback, self._scheduler)

    async def view_task(self, task_id: str) -> ChainTask | None:
        t = await self._toolkit.view_task(task_id)
        if t.status is ChainTaskStatus.UNSET:
            return None
        return t

    async def view_deal(self, deal_id: str) -> DealView | None:
        d = await self._toolkit.view_deal(deal_id)
        if d.start_time == 0:
            return None
        return DealView(
            workerpool=d.workerpool.pointer,
            workerpool_owner=d.workerpool.owner,
            trust=d.trust,
            category=d.category,
            tag=d.tag,
            callback=d.callback,
            params=d.params,
            start_time=d.start_time,
            bot_first=d.bot_first,
            bot_size=d.bot_size,
        )

    async def view_contribution(self, task_id: str, worker: str) -> ContributionView:
        c = await self._toolkit.view_contribution(task_id, worker)
        return ContributionView(status=c.status, result_hash=c.result_hash)

    async def score(self, worker: str) -> int:
        return int(await self._toolkit.iexec.functions.viewScore(checksum(worker)).call())

    async def balance(self, wallet: str) -> int:
        return int(await self._w3.eth.get_balance(checksum(wallet)))
