"""What the development scheduler needs from the chain, as a narrow Protocol.

The HTTP layer and the duties only see ``SchedulerChain``; ``ToolkitChain`` (in ``toolkit_chain``)
implements it over the devnet toolkit, and unit tests implement it with an in-memory fake.
Times are chain seconds (block timestamps), so tests that move anvil time move the scheduler's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from worker.chain import ChainTask
from worker.protocol.crypto import ZERO_ADDRESS, ZERO_BYTES32
from worker.protocol.status import ChainContributionStatus


@dataclass(frozen=True)
class BlockRef:
    number: int
    timestamp: int


@dataclass(frozen=True)
class DealView:
    workerpool: str
    workerpool_owner: str
    trust: int
    category: int
    tag: str
    callback: str
    params: str
    start_time: int
    bot_first: int
    bot_size: int

    @property
    def has_callback(self) -> bool:
        return bool(self.callback) and int(self.callback, 16) != 0


@dataclass(frozen=True)
class ContributionView:
    status: ChainContributionStatus
    result_hash: str = ZERO_BYTES32


NO_CONTRIBUTION = ContributionView(ChainContributionStatus.UNSET)


class SchedulerChain(Protocol):
    """Reads and transactions of the scheduler; every call may raise (the node can be down)."""

    async def chain_id(self) -> int: ...

    async def latest_block(self) -> BlockRef: ...

    async def deals_for_workerpool(self, workerpool: str, from_block: int, to_block: int) -> list[str]:
        """Deal ids announced to ``workerpool`` (SchedulerNotice) in blocks [from_block, to_block]."""
        ...

    async def initialize(self, deal_id: str, index: int) -> str:
        """Sends ``initialize`` from the scheduler wallet and returns the chain task id."""
        ...

    async def finalize(self, task_id: str, results: bytes, results_callback: bytes) -> None: ...

    async def view_task(self, task_id: str) -> ChainTask | None:
        """None when the task does not exist on chain (status UNSET)."""
        ...

    async def view_deal(self, deal_id: str) -> DealView | None:
        """None when the deal does not exist (start time 0)."""
        ...

    async def view_contribution(self, task_id: str, worker: str) -> ContributionView: ...

    async def score(self, worker: str) -> int: ...

    async def balance(self, wallet: str) -> int:
        """Native coin balance in wei (pays the worker's gas)."""
        ...

    async def consensus_block(self, task_id: str, from_block: int) -> int:
        """Block of the first TaskConsensus log of ``task_id`` since ``from_block``; 0 if none."""
        ...


def is_zero(hex_value: str) -> bool:
    return not hex_value or int(hex_value, 16) == 0


__all__ = [
    "NO_CONTRIBUTION",
    "ZERO_ADDRESS",
    "BlockRef",
    "ChainTask",
    "ContributionView",
    "DealView",
    "SchedulerChain",
    "is_zero",
]
