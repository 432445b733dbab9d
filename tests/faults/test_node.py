"""The only blockchain node of the worker misbehaves for a while, on the real platform: errors, silence, a
frozen head, garbage, or no node at all.

A JSON-RPC fault proxy (tests/support/node_proxy.py) stands between the worker and anvil; the scheduler
keeps talking to anvil directly. The fault begins when the app starts computing, so the contribution is
sent inside it, and lasts ~12 s (the node gone: 15 s, and a minute in the slow run). Each test asserts what
an operator checks afterwards: the task completed on chain with exactly one contribution and one reveal of
this worker (nonce + 2), the scheduler's record, the worker still running, no container left, and one log
line naming the node and the cause.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from devnet.core.state import TaskStatus
from devnet.images import SLEEP
from devnet.platform import Platform, buy
from tests.support import until
from tests.support.docker import container_exists
from tests.support.e2e import contribute_count, running_worker
from tests.support.node_proxy import Fault, NodeProxy, node_proxy
from worker.compute import container_name
from worker.protocol.status import ChainTaskStatus, ReplicateStatus

pytestmark = pytest.mark.e2e

RS = ReplicateStatus
WINDOW = 12.0  # seconds of fault


async def _through(
    platform: Platform,
    tmp_path: Path,
    index: int,
    inject: Callable[[NodeProxy], Awaitable[None]],
    caplog: pytest.LogCaptureFixture,
) -> NodeProxy:
    """One task on worker ``index`` behind a fault proxy; ``inject`` runs once the app computes."""
    caplog.set_level("INFO")
    wallet = platform.workers[index].address
    w3 = platform.devnet.w3
    nonce_before = await w3.eth.get_transaction_count(w3.to_checksum_address(wallet))
    async with node_proxy(platform.devnet.anvil.rpc_url) as proxy:
        env = {
            "IEXEC_WORKER_OVERRIDE_BLOCKCHAIN_NODE_ADDRESS": proxy.url,
            "IEXEC_WORKER_CHAIN_POLL_PERIOD": "PT1S",
        }
        async with running_worker(platform, index, tmp_path / "worker", env=env) as worker:
            purchase = await buy(platform.info(), image=SLEEP.tag, args="3")
            task_id = purchase.task_ids[0]
            await until(
                lambda: RS.COMPUTING in platform.scheduler.replicate_history(task_id, wallet),
                within=120,
                what="COMPUTING",
            )
            await inject(proxy)
            await until(
                lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
                within=300,
                every=0.5,
                what=f"task {task_id} COMPLETED after the fault",
            )
            assert not worker.task.done(), "the worker stopped"
            container = container_name(worker.name, task_id)
            await until(lambda: _gone(container), within=60, every=0.5, what=f"{container} removed")

    assert (await platform.toolkit.view_task(task_id)).status is ChainTaskStatus.COMPLETED
    assert await contribute_count(platform, task_id, wallet) == 1
    assert await w3.eth.get_transaction_count(w3.to_checksum_address(wallet)) - nonce_before == 2
    history = platform.scheduler.replicate_history(task_id, wallet)
    assert history.count(RS.CONTRIBUTED) == 1
    assert history.count(RS.REVEALED) == 1
    assert history[-1] is RS.COMPLETED
    return proxy


async def _gone(container: str) -> bool:
    return not await container_exists(container)


def _fault_for(fault: Fault, seconds: float = WINDOW) -> Callable[[NodeProxy], Awaitable[None]]:
    async def inject(proxy: NodeProxy) -> None:
        async with proxy.faulty(fault):
            await asyncio.sleep(seconds)  # the fault window itself

    return inject


def _away_for(seconds: float) -> Callable[[NodeProxy], Awaitable[None]]:
    async def inject(proxy: NodeProxy) -> None:
        await proxy.down()
        await asyncio.sleep(seconds)  # the outage itself
        await proxy.up()

    return inject


def _named(caplog: pytest.LogCaptureFixture, proxy: NodeProxy, *causes: str) -> bool:
    """A warning names the node (host and port) and one of the causes."""
    where = f"127.0.0.1:{proxy.port}"
    return any(
        record.levelname == "WARNING"
        and where in record.getMessage()
        and any(cause in record.getMessage() for cause in causes)
        for record in caplog.records
    )


# A node that goes away: a new connection is refused, the kept-alive one is cut or reset.
GONE = ("Cannot connect", "Server disconnected", "Connection reset")


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        (Fault.HTTP_500, "HTTP 500"),
        (Fault.RPC_ERROR, "internal error"),
        (Fault.HANG, "no answer within"),
        (Fault.MALFORMED, "malformed answer"),
    ],
)
async def test_a_node_answering_badly_for_a_while_delays_the_task_but_never_fails_it(
    platform: Platform, tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: Fault, cause: str
) -> None:
    index = list(Fault).index(fault) % len(platform.workers)
    proxy = await _through(platform, tmp_path, index, _fault_for(fault), caplog)
    assert proxy.faulted > 0, "the worker never met the fault"
    assert _named(caplog, proxy, cause), f"no warning names the node and {cause!r}"


async def test_a_node_frozen_at_an_old_head_for_a_while_delays_the_task_but_never_fails_it(
    platform: Platform, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await _through(platform, tmp_path, 1, _fault_for(Fault.FROZEN), caplog)
    assert proxy.faulted > 0, "the worker never met the fault"


async def test_the_only_node_gone_for_15_s_delays_the_task_but_never_fails_it(
    platform: Platform, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The outcome only: the window may fall where the worker needs no node (the minute-long test checks
    # the warning that names the node).
    await _through(platform, tmp_path, 2, _away_for(15), caplog)


@pytest.mark.slow_fault
@pytest.mark.timeout(300)
async def test_the_only_node_gone_for_a_minute_delays_the_task_but_never_fails_it(
    platform: Platform, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await _through(platform, tmp_path, 0, _away_for(60), caplog)
    assert _named(caplog, proxy, *GONE), "no warning names the node and the refused connection"
