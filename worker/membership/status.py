"""The worker's live status, as the status page, ``iexec-worker status`` and ``/api/status`` show it.

One JSON document, built on request from what the worker already keeps: who it is and which
start-up stage it is in (``Health``), the wallet's balances and the gas price in use (the funds
watch), the slots (the supervisor), and from the store every recent replicate with its status
timeline, the time spent in each status, the transactions it sent and the failures with their
cause. Fees are read from the receipts of mined transactions, once each (a receipt never changes).
Nothing here is a secret: no key, password, JWT or signature; node URLs are not shown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from worker.chain import PaidFee
from worker.membership.health import Health
from worker.protocol.errors import WorkerError
from worker.protocol.status import ReplicateStatus
from worker.replicate.store import FINAL_LOCAL, ReplicateRecord, SentTransaction, StatusEntry

RS = ReplicateStatus
# The statuses a stage runs in: the time spent there is the stage's duration.
STAGE_OF: dict[ReplicateStatus, str] = {
    RS.STARTING: "start",
    RS.APP_DOWNLOADING: "download app",
    RS.DATA_DOWNLOADING: "download data",
    RS.COMPUTING: "compute",
    RS.CONTRIBUTING: "contribute",
    RS.REVEALING: "reveal",
    RS.RESULT_UPLOADING: "upload",
    RS.CONTRIBUTE_AND_FINALIZE_ONGOING: "contribute and finalize",
    RS.COMPLETING: "complete",
}


class StatusStore(Protocol):
    async def recent(self, limit: int) -> list[ReplicateRecord]: ...

    async def timelines(self, task_ids: list[str]) -> dict[str, list[StatusEntry]]: ...

    async def recent_failures(self, limit: int) -> list[tuple[str, StatusEntry]]: ...

    async def recent_transactions(self, limit: int) -> list[SentTransaction]: ...


class Fees(Protocol):
    async def __call__(self, tx_hash: str) -> PaidFee | None: ...


class Slots(Protocol):
    @property
    def slots(self) -> int: ...

    @property
    def computing(self) -> int: ...

    @property
    def active(self) -> list[str]: ...

    def status_of(self, task_id: str) -> ReplicateStatus | None: ...


@dataclass
class Identity:
    name: str
    version: str
    scheduler_url: str
    pool: str
    gas_price_multiplier: float
    gas_price_cap: int
    wallet: str | None = None


class StatusView:
    """Assembles the status document; ``attach`` gives it the parts of the current membership."""

    def __init__(self, identity: Identity, health: Health, *, limit: int = 20) -> None:
        self.identity = identity
        self._health = health
        self._limit = limit
        self._store: StatusStore | None = None
        self._fees: Fees | None = None
        self._slots: Slots | None = None
        self._paid: dict[str, PaidFee] = {}

    def attach(self, store: StatusStore, fees: Fees, slots: Slots) -> None:
        self._store, self._fees, self._slots = store, fees, slots

    def detach(self) -> None:
        self._store = self._fees = self._slots = None

    def active_replicates(self) -> list[dict[str, Any]]:
        """What ``/replicates`` lists: the replicates in hand and their status."""
        slots = self._slots
        if slots is None:
            return []
        return [{"chainTaskId": t, "status": str(slots.status_of(t))} for t in slots.active]

    async def snapshot(self) -> dict[str, Any]:
        now = time.time()
        health, ident = self._health, self.identity
        funds = health.funds
        doc: dict[str, Any] = {
            "generatedAt": now,
            "worker": {
                "name": ident.name,
                "version": ident.version,
                "wallet": ident.wallet,
                "scheduler": ident.scheduler_url,
                "pool": ident.pool,
                "stage": health.stage.value,
                "detail": health.detail,
                "joined": health.joined,
                "ready": health.ready,
                "outOfGas": health.out_of_gas,
                "uptimeSeconds": round(now - health.started_at, 1),
                "problems": dict(health.problems),
            },
            "funds": None
            if funds is None
            else {
                "ethWei": str(funds.eth_wei),
                "stakeNrlc": None if funds.stake_nrlc is None else str(funds.stake_nrlc),
                "lockedNrlc": None if funds.locked_nrlc is None else str(funds.locked_nrlc),
                "secondsAgo": round(now - funds.at, 1),
            },
            "gas": {
                "priceWei": None
                if funds is None or funds.gas_price_wei is None
                else str(funds.gas_price_wei),
                "multiplier": ident.gas_price_multiplier,
                "capWei": str(ident.gas_price_cap),
            },
            "slots": None,
            "replicates": [],
            "transactions": [],
            "failures": [],
        }
        slots, store = self._slots, self._store
        if slots is not None:
            doc["slots"] = {"total": slots.slots, "busy": slots.computing}
        if store is None:
            return doc
        active = set(slots.active) if slots is not None else set()
        records = await store.recent(self._limit)
        timelines = await store.timelines([r.task_id for r in records])
        doc["replicates"] = [
            _replicate(r, timelines.get(r.task_id, []), r.task_id in active, now) for r in records
        ]
        doc["transactions"] = [
            await self._transaction(t) for t in await store.recent_transactions(self._limit)
        ]
        doc["failures"] = [
            {
                "chainTaskId": task_id,
                "status": e.status.value,
                "cause": e.cause.value if e.cause else None,
                "at": e.at,
            }
            for task_id, e in await store.recent_failures(self._limit)
        ]
        return doc

    async def _transaction(self, sent: SentTransaction) -> dict[str, Any]:
        paid = self._paid.get(sent.tx_hash)
        if paid is None and self._fees is not None:
            try:
                paid = await self._fees(sent.tx_hash)
            except WorkerError:  # a node hiccup leaves the fee unknown until the next refresh
                paid = None
            if paid is not None:
                self._paid[sent.tx_hash] = paid
        return {
            "chainTaskId": sent.task_id,
            "kind": sent.kind,
            "txHash": sent.tx_hash,
            "nonce": sent.nonce,
            "sentAt": sent.sent_at,
            "mined": paid is not None,
            "succeeded": None if paid is None else paid.succeeded,
            "block": None if paid is None else paid.block_number,
            "gasUsed": None if paid is None else paid.gas_used,
            "gasPriceWei": None if paid is None else str(paid.gas_price),
            "feeWei": None if paid is None else str(paid.fee_wei),
        }


def _replicate(
    record: ReplicateRecord, timeline: list[StatusEntry], active: bool, now: float
) -> dict[str, Any]:
    entries = []
    stages: dict[str, float] = {}
    for i, entry in enumerate(timeline):
        if i + 1 < len(timeline):
            seconds: float | None = timeline[i + 1].at - entry.at
        elif entry.status in FINAL_LOCAL:
            seconds = None
        else:
            seconds = now - entry.at  # the status it is in now, still counting
        entries.append({
            "status": entry.status.value,
            "cause": entry.cause.value if entry.cause else None,
            "at": entry.at,
            "seconds": None if seconds is None else round(seconds, 3),
        })  # fmt: skip
        stage = STAGE_OF.get(entry.status)
        if stage is not None and seconds is not None:
            stages[stage] = round(stages.get(stage, 0.0) + seconds, 3)
    end = record.updated_at if record.final else now
    return {
        "chainTaskId": record.task_id,
        "status": record.status.value,
        "cause": record.cause.value if record.cause else None,
        "final": record.final,
        "active": active,
        "createdAt": record.created_at,
        "updatedAt": record.updated_at,
        "elapsedSeconds": round(end - record.created_at, 3),
        "stages": stages,
        "timeline": entries,
    }
