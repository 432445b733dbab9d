"""A chain reorganisation drops the block holding the worker's contribution, or its reveal, on the real platform.

The worker waits for 3 confirmations (IEXEC_WORKER_TX_CONFIRMATIONS=3). anvil automines, so a miner of the
test makes a block every second, except while the transaction under test is on chain and not yet dropped:
no third block can then come before ``anvil_reorg`` replaces the blocks from the one holding it with empty
ones (the transaction leaves the chain and the node, as when the winning branch never saw it). The worker
must put the same signed bytes back; the task then completes with one contribution and one reveal of this
worker on the final chain, the worker still running and no container left.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from devnet.core.state import TaskStatus
from devnet.images import SLEEP
from devnet.platform import Platform, buy
from tests.support import until
from tests.support.docker import container_exists
from tests.support.e2e import contribute_count, running_worker
from worker.chain.abi import TASK_CONTRIBUTE_TOPIC, TASK_REVEAL_TOPIC
from worker.compute import container_name
from worker.protocol.status import ChainContributionStatus, ChainTaskStatus, ReplicateStatus

pytestmark = pytest.mark.e2e

RS = ReplicateStatus
CONFIRMATIONS = 3


async def _event_blocks(platform: Platform, topic: str, task_id: str, wallet: str) -> list[int]:
    w3 = platform.devnet.w3
    logs = await w3.eth.get_logs({
        "fromBlock": 0, "toBlock": "latest", "address": w3.to_checksum_address(platform.devnet.deployment.hub),
        "topics": [topic, task_id, "0x" + wallet.lower().removeprefix("0x").rjust(64, "0")],
    })  # fmt: skip
    return [int(entry["blockNumber"]) for entry in logs]


@contextlib.asynccontextmanager
async def miner(platform: Platform, hold: Callable[[], Awaitable[bool]]) -> AsyncIterator[None]:
    """A block every second, unless ``hold()`` says the transaction under test must not get deeper."""

    async def mine() -> None:
        while True:
            if not await hold():
                await platform.devnet.anvil.mine(1)
            await asyncio.sleep(1.0)

    task = asyncio.create_task(mine(), name="test-miner")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _drop_block_of(platform: Platform, topic: str, task_id: str, wallet: str) -> int:
    """Wait for the transaction's event, then reorganise from its block on; returns the block dropped."""
    blocks: list[int] = []

    async def mined() -> bool:
        blocks[:] = await _event_blocks(platform, topic, task_id, wallet)
        return bool(blocks)

    await until(mined, within=180, every=0.05, what="the transaction mined")
    head = await platform.devnet.w3.eth.block_number
    await platform.devnet.anvil.rpc("anvil_reorg", head - blocks[0] + 1, [])
    assert await _event_blocks(platform, topic, task_id, wallet) == [], "the reorganisation kept the event"
    return blocks[0]


@pytest.mark.parametrize(
    ("topic", "what"),
    [(TASK_CONTRIBUTE_TOPIC, "contribution"), (TASK_REVEAL_TOPIC, "reveal")],
    ids=["contribution", "reveal"],
)
async def test_a_reorganisation_dropping_the_block_of_a_transaction_ends_with_one_of_it_on_chain(
    platform: Platform, tmp_path: Path, caplog: pytest.LogCaptureFixture, topic: str, what: str
) -> None:
    caplog.set_level("INFO")
    index = 0 if what == "contribution" else 1
    wallet = platform.workers[index].address
    w3 = platform.devnet.w3
    nonce_before = await w3.eth.get_transaction_count(w3.to_checksum_address(wallet))
    dropped = False
    task_ids: list[str] = []

    async def hold() -> bool:
        return (
            bool(task_ids) and not dropped and bool(await _event_blocks(platform, topic, task_ids[0], wallet))
        )

    env = {"IEXEC_WORKER_TX_CONFIRMATIONS": str(CONFIRMATIONS), "IEXEC_WORKER_CHAIN_POLL_PERIOD": "PT1S"}
    async with (
        running_worker(platform, index, tmp_path / "worker", env=env) as worker,
        miner(platform, hold),
    ):
        task_ids.append((await buy(platform.info(), image=SLEEP.tag, args="1")).task_ids[0])
        task_id = task_ids[0]
        block = await _drop_block_of(platform, topic, task_id, wallet)
        dropped = True

        await until(
            lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
            within=300,
            every=0.5,
            what=f"task {task_id} COMPLETED after the {what} was dropped",
        )
        assert not worker.task.done(), "the worker stopped"
        container = container_name(worker.name, task_id)
        assert not await container_exists(container)

    assert (await platform.toolkit.view_task(task_id)).status is ChainTaskStatus.COMPLETED
    contribution = await platform.toolkit.view_contribution(task_id, wallet)
    assert contribution.status is ChainContributionStatus.PROVED
    assert await contribute_count(platform, task_id, wallet) == 1
    assert len(await _event_blocks(platform, TASK_REVEAL_TOPIC, task_id, wallet)) == 1
    assert await w3.eth.get_transaction_count(w3.to_checksum_address(wallet)) - nonce_before == 2
    history = platform.scheduler.replicate_history(task_id, wallet)
    assert history.count(RS.CONTRIBUTED) == 1
    assert history.count(RS.REVEALED) == 1
    assert history[-1] is RS.COMPLETED
    assert f"block {block} holding tx" in caplog.text or "the node holds none of its versions" in caplog.text
    assert "re-sending the same signed tx" in caplog.text
