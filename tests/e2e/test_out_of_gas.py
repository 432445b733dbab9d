"""End to end: a worker whose wallet cannot pay gas stops asking for work, says so, and resumes once refilled.

Real anvil + PoCo, Docker, the development scheduler; the wallet balance is set with anvil_setBalance.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from devnet.core.state import TaskStatus
from devnet.images import HELLO
from devnet.platform import Platform, buy
from tests.support import free_port, until
from tests.support.e2e import running_worker

pytestmark = pytest.mark.e2e

WORKER = 1
LOW = 10**16  # 0.01 ETH: less than 1e6 x the 22 gwei cap
FULL = 10**20


async def test_out_of_gas_pauses_demand_until_refilled(platform: Platform, tmp_path: Path) -> None:
    anvil = platform.devnet.anvil
    wallet = platform.workers[WORKER].address
    await anvil.rpc("anvil_setBalance", wallet, hex(LOW))
    port = free_port()
    env = {"IEXEC_WORKER_PORT": str(port), "IEXEC_WORKER_CHAIN_POLL_PERIOD": "PT0.5S"}
    try:
        async with (
            running_worker(platform, WORKER, tmp_path / "worker", env=env),
            aiohttp.ClientSession() as http,
        ):

            async def health() -> dict[str, object]:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/health") as response:
                        body: dict[str, object] = await response.json()
                        return body
                except aiohttp.ClientError:
                    return {}

            async def out_of_gas() -> bool:
                return (await health()).get("outOfGas") is True

            await until(out_of_gas, within=30, what="/health reports outOfGas")
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert "iexec_worker_out_of_gas 1.0" in await response.text()

            purchase = await buy(platform.info(), image=HELLO.tag, args="gas")
            task_id = purchase.task_ids[0]
            # The scheduler would hand this replicate to anyone who asks; an out-of-gas worker does not ask.
            # Absence can only be checked over time: several ask periods (300 ms) go by.
            await asyncio.sleep(3)
            assert platform.scheduler.replicate_history(task_id, wallet) == []

            await anvil.rpc("anvil_setBalance", wallet, hex(FULL))
            await until(
                lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
                within=60,
                what="the task completed after the refill",
            )
            assert (await health()).get("outOfGas") is False
    finally:
        await anvil.rpc("anvil_setBalance", wallet, hex(FULL))
