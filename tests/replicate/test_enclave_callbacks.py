"""The enclave endpoint (worker/enclave_api.py over EnclaveCallbacks), served on loopback.

A real replicate store (SQLite in a temporary folder) holds the authorization; the chain is a fake of
the two views the endpoint reads. The enclave's key is the devnet's enclave account.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from eth_account import Account

from tests.support import serving_app
from worker.chain import ChainDeal, ChainTask, DealAsset
from worker.enclave_api import create_enclave_app
from worker.protocol.crypto import ZERO_ADDRESS, sign_eip191
from worker.protocol.models import Signature, WorkerpoolAuthorization
from worker.protocol.status import ChainTaskStatus
from worker.protocol.tee import TEE_TDX_ONLY_TAG, ComputeStage, enclave_challenge_hash
from worker.replicate.enclave_callbacks import EnclaveCallbacks
from worker.replicate.store import ReplicateStore

TASK = "0x" + "ab" * 32
WORKER = "0x" + "11" * 20
ENCLAVE = Account.from_key("0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356")


@dataclass
class FakeChain:
    status: ChainTaskStatus = ChainTaskStatus.ACTIVE
    tag: str = TEE_TDX_ONLY_TAG
    calls: list[str] = field(default_factory=list)

    async def task(self, task_id: str) -> ChainTask:
        return ChainTask(task_id, self.status, "0x" + "cd" * 32, 0, 100, 2000, 2100, 3000)

    async def deal(self, deal_id: str) -> ChainDeal:
        asset = DealAsset(ZERO_ADDRESS, ZERO_ADDRESS, 0)
        return ChainDeal(
            deal_id,
            asset,
            asset,
            asset,
            1,
            0,
            self.tag,
            WORKER,
            WORKER,
            ZERO_ADDRESS,
            "",
            1,
            0,
            1,
            0,
            0,
            WORKER,
        )


def signed(key: bytes | str = ENCLAVE.key) -> dict[str, str]:
    return {"Authorization": sign_eip191(enclave_challenge_hash(TASK, WORKER), key)}


def computed(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "deterministic-output-path": "/iexec_out/result.txt", "task-id": TASK,
        "result-digest": "0x" + "ee" * 32, "enclave-signature": "0x" + "12" * 65,
    }  # fmt: skip
    body.update(changes)
    return body


@pytest.fixture
async def store(tmp_path: Path) -> ReplicateStore:
    s = await ReplicateStore.open(tmp_path / "worker.db")
    auth = WorkerpoolAuthorization(
        chain_task_id=TASK, deal_id="0x" + "cd" * 32, task_index=0, worker_wallet=WORKER,
        enclave_challenge=ENCLAVE.address.lower(), signature=Signature(value="0x" + "22" * 65),
    )  # fmt: skip
    await s.add(TASK, auth.to_wire(), sms_url="http://sms")
    return s


async def test_exit_causes_are_taken_once_and_only_from_the_enclave(
    store: ReplicateStore, tmp_path: Path
) -> None:
    callbacks = EnclaveCallbacks(store, FakeChain(), WORKER, tmp_path)
    causes = [{"cause": "POST_COMPUTE_IPFS_UPLOAD_FAILED", "message": "proxy down"}]
    async with serving_app(create_enclave_app(callbacks)) as url, aiohttp.ClientSession() as http:
        path = f"{url}/compute/post/{TASK}/exit-causes"
        async with http.post(path, json=causes, headers=signed(Account.create().key)) as answer:
            assert answer.status == 401
        async with http.post(
            f"{url}/compute/post/{'0x' + '99' * 32}/exit-causes", json=causes, headers=signed()
        ) as answer:
            assert answer.status == 404
        async with http.post(path, json=[], headers=signed()) as answer:
            assert answer.status == 400
        async with http.post(path, json=causes, headers=signed()) as answer:
            assert answer.status == 200
        async with http.post(path, json=causes, headers=signed()) as answer:
            assert answer.status == 208
        async with http.post(
            f"{url}/compute/PRE/{TASK}/exit",
            json={"cause": "PRE_COMPUTE_FAILED_UNKNOWN_ISSUE"},
            headers=signed(),
        ) as answer:
            assert answer.status == 200
    assert [c.cause for c in callbacks.take_causes(ComputeStage.POST, TASK)] == [
        "POST_COMPUTE_IPFS_UPLOAD_FAILED"
    ]
    assert callbacks.take_causes(ComputeStage.POST, TASK) == []
    assert [c.cause for c in callbacks.take_causes(ComputeStage.PRE, TASK)] == [
        "PRE_COMPUTE_FAILED_UNKNOWN_ISSUE"
    ]


async def test_the_computed_file_is_written_once_for_an_active_tee_task(
    store: ReplicateStore, tmp_path: Path
) -> None:
    chain = FakeChain()
    callbacks = EnclaveCallbacks(store, chain, WORKER, tmp_path)
    written = tmp_path / TASK / "output" / "computed.json"
    async with serving_app(create_enclave_app(callbacks)) as url, aiohttp.ClientSession() as http:
        path = f"{url}/compute/post/{TASK}/computed"
        async with http.post(path, json=computed(), headers=signed(Account.create().key)) as answer:
            assert answer.status == 401  # a forged call: nothing written
        assert not written.exists()
        async with http.post(
            path, json=computed(**{"task-id": "0x" + "99" * 32}), headers=signed()
        ) as answer:
            assert answer.status == 400
        async with http.post(
            path, json=computed(**{"result-digest": "0x" + "00" * 32}), headers=signed()
        ) as answer:
            assert answer.status == 401
        async with http.post(
            path, json=computed(**{"enclave-signature": "0x12"}), headers=signed()
        ) as answer:
            assert answer.status == 401
        chain.status = ChainTaskStatus.COMPLETED
        async with http.post(path, json=computed(), headers=signed()) as answer:
            assert answer.status == 401
        chain.status = ChainTaskStatus.ACTIVE
        async with http.post(f"{url}/iexec_out/{TASK}/computed", json=computed(), headers=signed()) as answer:
            assert answer.status == 200
            assert await answer.text() == TASK
        async with http.post(
            path, json=computed(**{"result-digest": "0x" + "ff" * 32}), headers=signed()
        ) as answer:
            assert answer.status == 401  # already written: the first one stays
    assert json.loads(written.read_text())["result-digest"] == "0x" + "ee" * 32
