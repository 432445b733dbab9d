"""Helpers for the development scheduler tests: an in-memory chain and a worker speaking HTTP.

``FakeChain`` implements ``SchedulerChain`` with the PoCo rules the scheduler relies on (deadlines
from the deal's start time, consensus when a contribution group outweighs the threshold).
``WorkerClient`` plays a worker over real HTTP, as the Java worker does (raw text bodies, Bearer JWT).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from eth_account.signers.local import LocalAccount

from devnet.contracts import Deployment
from devnet.core import BlockRef, ContributionView, DealView
from worker.chain import ChainTask
from worker.protocol.crypto import ZERO_ADDRESS, ZERO_BYTES32, chain_task_id, sign_login_challenge
from worker.protocol.status import ChainContributionStatus, ChainTaskStatus

HUB = "0x5fc8d32690cc91d4c39d9d3abcbd16989f875707"
WORKERPOOL = "0x" + "77" * 20
FAKE_DEPLOYMENT = Deployment(
    chain_id=31337,
    hub=HUB,
    rlc="0x" + "01" * 20,
    app_registry="0x" + "02" * 20,
    dataset_registry="0x" + "03" * 20,
    workerpool_registry="0x" + "04" * 20,
)


@dataclass
class FakeChain:
    block: BlockRef = field(default_factory=lambda: BlockRef(number=100, timestamp=1_000_000))
    deals: dict[str, DealView] = field(default_factory=dict)
    timerefs: dict[str, int] = field(default_factory=dict)
    notices: list[tuple[int, str, str]] = field(default_factory=list)  # (block, workerpool, deal)
    tasks: dict[str, ChainTask] = field(default_factory=dict)
    contributions: dict[tuple[str, str], ContributionView] = field(default_factory=dict)
    consensus_blocks: dict[str, int] = field(default_factory=dict)
    scores: dict[str, int] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    finalized: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)
    """Names of methods that raise, to simulate a node failure."""

    def _check(self, name: str) -> None:
        if name in self.broken:
            raise RuntimeError(f"fake node: {name} unavailable")

    # -- test controls ----------------------------------------------------------------------

    def mine(self, seconds: int = 1) -> None:
        self.block = BlockRef(self.block.number + 1, self.block.timestamp + seconds)

    def add_deal(
        self, deal_id: str, *, trust: int = 1, timeref: int = 100, size: int = 1, params: str = ""
    ) -> None:
        self.mine()
        self.deals[deal_id] = DealView(
            workerpool=WORKERPOOL,
            workerpool_owner="0x" + "66" * 20,
            trust=trust,
            category=0,
            tag=ZERO_BYTES32,
            callback=ZERO_ADDRESS,
            params=params,
            start_time=self.block.timestamp,
            bot_first=0,
            bot_size=size,
        )
        self.timerefs[deal_id] = timeref
        self.notices.append((self.block.number, WORKERPOOL, deal_id))

    def contribute(self, task_id: str, worker: str, result_hash: str) -> None:
        """A contribution with trust 1: consensus at once (PoCo: group > 0)."""
        self.mine()
        self.contributions[(task_id, worker)] = ContributionView(
            ChainContributionStatus.CONTRIBUTED, result_hash
        )
        task = self.tasks[task_id]
        self.tasks[task_id] = replace(
            task,
            status=ChainTaskStatus.REVEALING,
            consensus_value=result_hash,
            reveal_deadline=self.block.timestamp + 2 * task.timeref,
            winner_counter=1,
            contributors=(*task.contributors, worker),
        )
        self.consensus_blocks[task_id] = self.block.number

    def reveal(self, task_id: str, worker: str) -> None:
        self.mine()
        old = self.contributions[(task_id, worker)]
        self.contributions[(task_id, worker)] = replace(old, status=ChainContributionStatus.PROVED)
        task = self.tasks[task_id]
        self.tasks[task_id] = replace(task, reveal_counter=task.reveal_counter + 1)

    # -- SchedulerChain -----------------------------------------------------------------------

    async def chain_id(self) -> int:
        return 31337

    async def latest_block(self) -> BlockRef:
        self._check("latest_block")
        return self.block

    async def deals_for_workerpool(self, workerpool: str, from_block: int, to_block: int) -> list[str]:
        return [d for b, pool, d in self.notices if pool == workerpool and from_block <= b <= to_block]

    async def initialize(self, deal_id: str, index: int) -> str:
        self._check("initialize")
        self.mine()
        deal, timeref = self.deals[deal_id], self.timerefs[deal_id]
        task_id = chain_task_id(deal_id, index)
        self.tasks[task_id] = ChainTask(
            task_id=task_id,
            status=ChainTaskStatus.ACTIVE,
            deal_id=deal_id,
            index=index,
            timeref=timeref,
            contribution_deadline=deal.start_time + 7 * timeref,
            reveal_deadline=0,
            final_deadline=deal.start_time + 10 * timeref,
        )
        return task_id

    async def finalize(self, task_id: str, results: bytes, results_callback: bytes) -> None:
        self._check("finalize")
        self.mine()
        self.finalized.append((task_id, results, results_callback))
        self.tasks[task_id] = replace(self.tasks[task_id], status=ChainTaskStatus.COMPLETED, results=results)

    async def view_task(self, task_id: str) -> ChainTask | None:
        self._check("view_task")
        return self.tasks.get(task_id)

    async def view_deal(self, deal_id: str) -> DealView | None:
        return self.deals.get(deal_id)

    async def view_contribution(self, task_id: str, worker: str) -> ContributionView:
        return self.contributions.get((task_id, worker), ContributionView(ChainContributionStatus.UNSET))

    async def score(self, worker: str) -> int:
        return self.scores.get(worker, 0)

    async def balance(self, wallet: str) -> int:
        self._check("balance")
        return self.balances.get(wallet, 10**20)

    async def consensus_block(self, task_id: str, from_block: int) -> int:
        return self.consensus_blocks.get(task_id, 0)


@dataclass
class FakeResults:
    uploaded: bool = True

    async def is_uploaded(self, task: Any) -> bool:
        return self.uploaded


@dataclass
class Answer:
    status: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class WorkerClient:
    """A worker on the scheduler's REST API; ``token`` is None until ``login``."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, account: LocalAccount) -> None:
        self.session = session
        self.base = base_url
        self.account = account
        self.wallet = account.address.lower()
        self.token: str | None = None

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        raw: str | None = None,
        auth: bool = True,
        **query: Any,
    ) -> Answer:
        headers = {"Content-Type": "application/json"}
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        params = {k: str(v) for k, v in query.items()}
        async with self.session.request(
            method, self.base + path, data=data, headers=headers, params=params
        ) as r:
            return Answer(r.status, await r.text())

    async def login(self) -> str:
        challenge = await self.call("GET", "/workers/challenge", auth=False, walletAddress=self.wallet)
        assert challenge.status == 200, challenge
        signature = sign_login_challenge(challenge.text, self.account.key)
        answer = await self.call(
            "POST", "/workers/login", body={"value": signature}, auth=False, walletAddress=self.wallet
        )
        assert answer.status == 200, answer
        self.token = answer.text
        return answer.text

    async def register(self, cpu_nb: int = 2, *, tee: bool = False, tdx: bool = False) -> Answer:
        model = {
            "name": "test-worker",
            "walletAddress": self.wallet,
            "os": "Linux",
            "cpu": "amd64",
            "cpuNb": cpu_nb,
            "memorySize": 4,
            "gpuEnabled": False,
            "teeEnabled": tee,
            "tdxEnabled": tdx,
        }
        return await self.call("POST", "/workers/register", body=model)

    async def available(self, block_number: int = 1) -> Answer:
        return await self.call("GET", "/replicates/available", blockNumber=block_number)

    async def update(self, task_id: str, status: str, details: dict[str, Any] | None = None) -> Answer:
        body: dict[str, Any] = {"status": status}
        if details is not None:
            body["details"] = details
        return await self.call("POST", f"/replicates/{task_id}/updateStatus", body=body)
