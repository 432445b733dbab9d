"""Helpers for the tests that talk to the development result proxy: an in-memory chain and a result zip.

``FakeProxyChain`` implements ``ResultProxyChain``; the proxy tests and the worker's upload tests both
stand the real proxy up over it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from eth_account.signers.local import LocalAccount

from devnet.resultproxy import ProxyContribution, ProxyDeal, ProxyTask
from worker.protocol.crypto import ZERO_BYTES32
from worker.protocol.errors import ChainError
from worker.protocol.status import ChainContributionStatus, ChainTaskStatus
from worker.result import ComputedFile, compute_result_digest, run_standard_post_compute


@dataclass
class FakeProxyChain:
    tasks: dict[str, ProxyTask] = field(default_factory=dict)
    deals: dict[str, ProxyDeal] = field(default_factory=dict)
    contributions: dict[tuple[str, str], ProxyContribution] = field(default_factory=dict)
    broken: bool = False
    block_time: int = field(default_factory=lambda: int(time.time()))

    async def task(self, chain_task_id: str) -> ProxyTask:
        if self.broken:
            raise ChainError("node unreachable")
        return self.tasks.get(chain_task_id, ProxyTask(ChainTaskStatus.UNSET, 0, ZERO_BYTES32))

    async def deal(self, deal_id: str) -> ProxyDeal:
        return self.deals[deal_id]

    async def contribution(self, chain_task_id: str, worker: str) -> ProxyContribution:
        default = ProxyContribution(ChainContributionStatus.UNSET, ZERO_BYTES32)
        return self.contributions.get((chain_task_id, worker.lower()), default)

    async def now(self) -> int:
        return self.block_time


def proved_chain(
    task_id: str, deal_id: str, worker: LocalAccount, owner: LocalAccount, proved_hash: str
) -> FakeProxyChain:
    """A task revealing for ten minutes more, in a pool of ``owner``, where ``worker`` proved ``proved_hash``."""
    return FakeProxyChain(
        tasks={task_id: ProxyTask(ChainTaskStatus.REVEALING, int(time.time()) + 600, deal_id)},
        deals={deal_id: ProxyDeal(workerpool_owner=owner.address, tag=ZERO_BYTES32)},
        contributions={
            (task_id, worker.address.lower()): ProxyContribution(ChainContributionStatus.PROVED, proved_hash)
        },
    )


def standard_result(output: Path) -> tuple[Path, str]:
    """Zip path and digest of a task output holding ``result.txt`` = "42", as the worker's post-compute makes them."""
    (output / "iexec_out").mkdir(parents=True)
    (output / "iexec_out" / "result.txt").write_text("42")
    (output / "iexec_out" / "computed.json").write_text('{"deterministic-output-path": "/iexec_out"}')
    done = run_standard_post_compute(output)
    digest = compute_result_digest(
        output, ComputedFile(deterministic_output_path="/iexec_out"), callback=False
    )
    return done.zip_path, digest
