"""The status document from a real SQLite store, a fake of the fee reader and of the slots (unit tests: no
service), and the same document rendered for the terminal by ``iexec-worker status``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from worker.chain import PaidFee
from worker.membership import Health
from worker.membership.health import FundsSeen
from worker.membership.status import Identity, StatusView
from worker.ops.status import render
from worker.protocol.status import ReplicateStatus as RS
from worker.protocol.status import ReplicateStatusCause
from worker.replicate.store import ReplicateStore

DONE, RUNNING, FAILED = ("0x" + c * 64 for c in "abc")


class Slots:
    slots = 2
    computing = 1

    @property
    def active(self) -> list[str]:
        return [RUNNING]

    def status_of(self, task_id: str) -> RS | None:
        return RS.COMPUTING if task_id == RUNNING else None


class Fees:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, tx_hash: str) -> PaidFee | None:
        self.asked.append(tx_hash)
        return None if tx_hash.endswith("2") else PaidFee(tx_hash, 42, 150_000, 3 * 10**9, True)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ReplicateStore]:
    store = await ReplicateStore.open(tmp_path / "w.sqlite3")
    for task in (DONE, RUNNING, FAILED):
        await store.add(task, {"chainTaskId": task})
    for status in (
        RS.STARTING,
        RS.STARTED,
        RS.COMPUTING,
        RS.COMPUTED,
        RS.CONTRIBUTING,
        RS.CONTRIBUTED,
        RS.COMPLETED,
    ):
        await store.set_status(DONE, status)
    await store.set_status(RUNNING, RS.COMPUTING)
    await store.set_status(FAILED, RS.APP_DOWNLOAD_FAILED, ReplicateStatusCause.APP_IMAGE_DOWNLOAD_FAILED)
    await store.record_sent(DONE, "CONTRIBUTE", "0x" + "1" * 64, 7, "0x00")
    await store.record_sent(RUNNING, "CONTRIBUTE", "0x" + "2" * 64, 8, "0x00")
    yield store
    await store.close()


async def test_the_document_holds_timelines_stages_fees_and_failures(store: ReplicateStore) -> None:
    health = Health(joined=True)
    health.funds = FundsSeen(10**18, 5 * 10**9, 6 * 10**8, 1_300_000_000, at=0)
    view = StatusView(
        Identity("w", "0.1.0", "http://127.0.0.1:1", "0xpool", 1.3, 22 * 10**9, "0xwallet"), health
    )
    fees = Fees()
    view.attach(store, fees, Slots())

    doc = await view.snapshot()

    assert doc["slots"] == {"total": 2, "busy": 1}
    assert doc["gas"] == {"priceWei": "1300000000", "multiplier": 1.3, "capWei": "22000000000"}
    assert doc["funds"]["stakeNrlc"] == "5000000000"
    replicates = {r["chainTaskId"]: r for r in doc["replicates"]}
    done = replicates[DONE]
    assert [s["status"] for s in done["timeline"]] == [
        "CREATED", "STARTING", "STARTED", "COMPUTING", "COMPUTED", "CONTRIBUTING", "CONTRIBUTED", "COMPLETED"
    ]  # fmt: skip
    assert done["timeline"][-1]["seconds"] is None  # final: no time counted after it
    assert set(done["stages"]) == {"start", "compute", "contribute"}
    assert replicates[RUNNING]["active"] is True
    assert replicates[RUNNING]["timeline"][-1]["seconds"] >= 0  # still in COMPUTING, counting
    txs = {t["chainTaskId"]: t for t in doc["transactions"]}
    assert txs[DONE]["feeWei"] == str(150_000 * 3 * 10**9)
    assert txs[DONE]["block"] == 42
    assert txs[RUNNING]["mined"] is False
    assert doc["failures"] == [
        {"chainTaskId": FAILED, "status": "APP_DOWNLOAD_FAILED", "cause": "APP_IMAGE_DOWNLOAD_FAILED",
         "at": doc["failures"][0]["at"]}
    ]  # fmt: skip

    await view.snapshot()
    assert fees.asked.count("0x" + "1" * 64) == 1  # a mined transaction's fee is read once
    assert fees.asked.count("0x" + "2" * 64) == 2  # a pending one is asked again

    lines = render(doc)
    assert lines[0] == "iExec worker w 0.1.0: starting: starting"  # joined, but no ping yet: not ready
    text = "\n".join(lines)
    assert f"{RUNNING}  COMPUTING" in text
    assert f"{FAILED}  APP_DOWNLOAD_FAILED (APP_IMAGE_DOWNLOAD_FAILED)" in text
    assert "fee 0.00045 ETH (150000 gas)" in text
    assert "RLC free 5 · locked 0.6" in text
    assert "slots 1/2" in text


async def test_before_joining_the_document_has_no_replicates() -> None:
    view = StatusView(Identity("w", "0.1.0", "u", "p", 1.3, 1), Health())
    doc = await view.snapshot()
    assert doc["replicates"] == []
    assert doc["slots"] is None
    assert doc["worker"]["stage"] == "starting"
    assert view.active_replicates() == []
    assert "balances not read yet" in "\n".join(render(doc))
