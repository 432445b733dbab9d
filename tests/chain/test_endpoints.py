"""Several RPC endpoints on real anvil nodes: failover on a dead node, a lagging node set aside, no secret in labels.

The lagging node is a second anvil started from an older state dump of the first: same chain, same hub,
fewer blocks, and without the task created after the dump.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devnet.anvil import Anvil
from devnet.contracts import Devnet
from devnet.toolkit import Toolkit
from tests.support import free_port
from tests.support.chain import RecordingObserver, new_tasks
from worker.chain.client import ChainClient
from worker.chain.errors import TaskNotFound
from worker.protocol.redact import display_origin

pytestmark = pytest.mark.e2e


async def test_a_dead_first_node_fails_over_to_the_next(net: Devnet) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    seen = RecordingObserver()
    async with await ChainClient.connect([dead, net.rpc_url], net.deployment.hub, observer=seen) as chain:
        assert await chain.latest_block_number() == await net.w3.eth.block_number
        assert seen.rpc_errors.get("0", 0) >= 1
        assert "1" not in seen.rpc_errors
        assert chain.rpc_url == net.rpc_url  # the failed node is tried after the others for a while


async def test_a_node_lagging_behind_the_others_is_not_used(net: Devnet, tmp_path: Path) -> None:
    toolkit = Toolkit(net.w3, net.deployment)
    dump = tmp_path / "older.json"
    await net.anvil.dump_state(dump)
    async with await Anvil.start(load_state=dump) as behind:
        (task_id,) = await new_tasks(net, toolkit, 1)  # only on the up-to-date node
        await net.anvil.mine(10)
        seen = RecordingObserver()
        async with await ChainClient.connect(
            [behind.rpc_url, net.rpc_url], net.deployment.hub, max_block_lag=3, observer=seen
        ) as chain:
            best = await chain.refresh_heads()

            assert chain.endpoints[0].lagging
            assert not chain.endpoints[1].lagging
            assert seen.heads["1"] == best
            assert seen.heads["0"] < best - 3
            description = await chain.task_description(task_id)
            assert description.task_id == task_id
            assert chain.rpc_url == net.rpc_url
        # The same read on the lagging node alone is the false answer the lag check avoids.
        async with await ChainClient.connect(behind.rpc_url, net.deployment.hub) as only_behind:
            with pytest.raises(TaskNotFound):
                await only_behind.task_description(task_id)


def test_endpoint_names_never_carry_a_secret() -> None:
    assert (
        display_origin("https://user:pw@rpc.example.com/v3/0123456789abcdef?key=x")
        == "https://rpc.example.com"
    )
    assert display_origin("http://127.0.0.1:8545/secret") == "http://127.0.0.1:8545"
