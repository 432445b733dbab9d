"""Chain helpers of the tests: worker accounts, tasks bought on the devnet, an in-memory transaction journal, a recording observer."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from eth_account.signers.local import LocalAccount

from devnet.accounts import Role, account
from devnet.contracts import DEVNET_CATEGORY, Devnet
from devnet.toolkit import Deal, Toolkit
from worker.chain.models import DealParams, SentTx, TaskDescription, TxKind
from worker.protocol.crypto import ZERO_ADDRESS

APP_IMAGE = "docker.io/iexechub/python-hello-world:8.0.0"


@dataclass
class MemoryJournal:
    """The TxJournal Protocol in memory; ``crash_after_record`` makes the next record_sent fail after storing."""

    entries: dict[tuple[str, TxKind], SentTx] = field(default_factory=dict)
    records: int = 0
    replacements: int = 0
    hashes: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    crash_after_record: bool = False

    async def record_sent(self, task_id: str, kind: TxKind, tx_hash: str, nonce: int, raw_tx: str) -> None:
        self.entries[(task_id.lower(), kind)] = SentTx(task_id, kind, tx_hash, nonce, raw_tx)
        self.hashes.append(tx_hash)
        self.raw.append(raw_tx)
        self.records += 1
        if self.crash_after_record:
            self.crash_after_record = False
            raise RuntimeError("simulated crash between journal write and broadcast")

    async def replace_sent(self, task_id: str, kind: TxKind, tx_hash: str, nonce: int, raw_tx: str) -> None:
        self.entries[(task_id.lower(), kind)] = SentTx(task_id, kind, tx_hash, nonce, raw_tx)
        self.hashes.append(tx_hash)
        self.raw.append(raw_tx)
        self.replacements += 1

    async def sent(self, task_id: str, kind: TxKind) -> SentTx | None:
        return self.entries.get((task_id.lower(), kind))


async def _buy(net: Devnet, toolkit: Toolkit, **buy: Any) -> tuple[Deal, str]:
    """A deal of the devnet app on the devnet workerpool, bought by the requester: (deal, workerpool address)."""
    scheduler = account(Role.SCHEDULER)
    app = await toolkit.create_app(account(Role.APP_PROVIDER), "hello-world", APP_IMAGE, "0x" + "11" * 32)
    pool = await toolkit.create_workerpool(scheduler, "devnet-workerpool")
    deal = await toolkit.buy(
        requester=account(Role.REQUESTER),
        app=app,
        app_owner=account(Role.APP_PROVIDER),
        workerpool=pool,
        workerpool_owner=scheduler,
        category=net.deployment.categories[DEVNET_CATEGORY],
        **buy,
    )
    return deal, pool


async def new_task(
    net: Devnet,
    toolkit: Toolkit,
    *,
    workerpool_price: int = 0,
    params: dict[str, Any] | str = "",
    **buy: Any,
) -> tuple[str, str]:
    """Buy a one-task deal on the devnet workerpool and initialize it: (task id, workerpool address)."""
    scheduler = account(Role.SCHEDULER)
    if workerpool_price:
        await toolkit.fund(account(Role.REQUESTER), workerpool_price)
        await toolkit.fund(scheduler, workerpool_price * 30 // 100)
    deal, pool = await _buy(net, toolkit, params=params, workerpool_price=workerpool_price, **buy)
    task_id = await toolkit.initialize(deal.deal_id, 0, scheduler)
    return task_id, pool


def worker_account(index: int) -> LocalAccount:
    """Spare devnet workers (12..19), so that the nonces of these tests are theirs alone."""
    return account(index)


async def new_tasks(net: Devnet, toolkit: Toolkit, count: int, *, trust: int = 1) -> list[str]:
    """One deal of ``count`` tasks on the devnet workerpool, every task initialized."""
    deal, _ = await _buy(net, toolkit, volume=count, trust=trust)
    return [await toolkit.initialize(deal.deal_id, i, account(Role.SCHEDULER)) for i in range(count)]


@dataclass
class RecordingObserver:
    """The ChainObserver Protocol, keeping what it is told."""

    rpc_errors: dict[str, int] = field(default_factory=dict)
    heads: dict[str, int] = field(default_factory=dict)
    prices: list[tuple[str, int]] = field(default_factory=list)
    outcomes: list[tuple[str, str]] = field(default_factory=list)
    replacements: int = 0

    def rpc_error(self, endpoint: str) -> None:
        self.rpc_errors[endpoint] = self.rpc_errors.get(endpoint, 0) + 1

    def head(self, endpoint: str, block: int) -> None:
        self.heads[endpoint] = block

    def gas_price(self, kind: str, wei: int) -> None:
        self.prices.append((kind, wei))

    def transaction(self, kind: str, outcome: str) -> None:
        self.outcomes.append((kind, outcome))

    def replaced(self, kind: str) -> None:
        self.replacements += 1


def task_description(**changes: object) -> TaskDescription:
    """A standard task's description (no dataset, no callback, trust 1), with ``changes`` applied."""
    base = TaskDescription(
        task_id="0x" + "aa" * 32, deal_id="0x" + "bb" * 32, bot_index=0, app_type="DOCKER",
        app_uri="docker.io/x/y:1", app_checksum="0x" + "00" * 32, app_mrenclave="", app_address="0x" + "11" * 20,
        app_owner="0x" + "12" * 20, app_price=0, dataset_address=ZERO_ADDRESS, dataset_owner=ZERO_ADDRESS,
        dataset_price=0, dataset_uri="", dataset_checksum="", workerpool_address="0x" + "13" * 20,
        workerpool_owner="0x" + "14" * 20, workerpool_price=0, trust=1, category=0, tag="0x" + "00" * 32,
        requester="0x" + "15" * 20, beneficiary="0x" + "15" * 20, callback=ZERO_ADDRESS,
        deal_params=DealParams(), start_time=1, bot_first_index=0, bot_size=1, worker_stake=0,
        tee_framework=None, max_execution_time=300, contribution_deadline=2101, final_deadline=3001,
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]
