"""Development result proxy over real HTTP on 127.0.0.1 with a fake chain (unit tests).

The fake implements ``ResultProxyChain``; keys are throwaway local accounts. Zips are built by the
worker's own standard post-compute, as a worker would upload them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import cid
import jwt
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from devnet.resultproxy import ResultProxy
from tests.support.proxy_fakes import FakeProxyChain, proved_chain, standard_result
from worker.protocol.crypto import ZERO_ADDRESS, authorization_hash, chain_task_id, result_hash, sign_eip191
from worker.protocol.models import ResultModel, Signature, WorkerpoolAuthorization
from worker.protocol.status import ChainContributionStatus, ChainTaskStatus

DEAL_ID = "0x" + "33" * 32
TASK_ID = chain_task_id(DEAL_ID, 0)
OTHER_TASK_ID = chain_task_id(DEAL_ID, 1)
TEE_TAG = "0x" + "00" * 31 + "01"


@dataclass
class Setup:
    url: str
    chain: FakeProxyChain
    storage: Path
    worker: LocalAccount
    owner: LocalAccount
    http: aiohttp.ClientSession
    zip_bytes: bytes
    digest: str

    def authorization(
        self, task_id: str = TASK_ID, signer: LocalAccount | None = None
    ) -> WorkerpoolAuthorization:
        auth_hash = authorization_hash(self.worker.address, task_id, ZERO_ADDRESS)
        return WorkerpoolAuthorization(
            chain_task_id=task_id,
            deal_id=DEAL_ID,
            task_index=0,
            worker_wallet=self.worker.address,
            enclave_challenge=ZERO_ADDRESS,
            signature=Signature(value=sign_eip191(auth_hash, (signer or self.owner).key)),
        )

    async def ask_token(
        self, auth: WorkerpoolAuthorization | None = None, signer: LocalAccount | None = None
    ) -> tuple[int, str]:
        auth = auth or self.authorization()
        auth_hash = authorization_hash(auth.worker_wallet, auth.chain_task_id, auth.enclave_challenge)
        headers = {"Authorization": sign_eip191(auth_hash, (signer or self.worker).key)}
        async with self.http.post(f"{self.url}/v1/results/token", data=auth.to_json(), headers=headers) as r:
            return r.status, await r.text()

    async def upload(self, token: str, body: str | None = None) -> tuple[int, str]:
        if body is None:
            body = ResultModel(
                chain_task_id=TASK_ID,
                zip=base64.b64encode(self.zip_bytes).decode(),
                determinist_hash=self.digest,
            ).to_json()
        async with self.http.post(f"{self.url}/v1/results", data=body, headers={"Authorization": token}) as r:
            return r.status, await r.text()

    async def ipfs_hash(self, task_id: str = TASK_ID) -> tuple[int, str]:
        async with self.http.get(f"{self.url}/v1/results/{task_id}/ipfshash") as r:
            return r.status, await r.text()

    async def head(self, token: str, task_id: str = TASK_ID) -> int:
        async with self.http.head(f"{self.url}/v1/results/{task_id}", headers={"Authorization": token}) as r:
            return r.status


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    worker: LocalAccount = Account.create()
    owner: LocalAccount = Account.create()
    zip_path, digest = standard_result(tmp_path / "worker-output")
    zip_bytes = zip_path.read_bytes()
    chain = proved_chain(TASK_ID, DEAL_ID, worker, owner, result_hash(TASK_ID, digest))
    storage = tmp_path / "proxy"
    proxy = ResultProxy(chain, storage)
    url = await proxy.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Setup(url, chain, storage, worker, owner, http, zip_bytes, digest)
    finally:
        await proxy.stop()


async def test_token_is_a_jwt_for_the_wallet_and_is_stable(setup: Setup) -> None:
    status, token = await setup.ask_token()
    assert status == 200
    claims = jwt.decode(token, options={"verify_signature": False})
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert claims["aud"] == setup.worker.address.lower()
    assert claims["sub"]
    assert "exp" not in claims
    assert await setup.ask_token() == (200, token)


async def test_token_refusals(setup: Setup) -> None:
    stranger: LocalAccount = Account.create()
    # The worker's signature is from someone else.
    assert (await setup.ask_token(signer=stranger))[0] == 401
    # The authorization is not signed by the workerpool owner.
    assert (await setup.ask_token(setup.authorization(signer=stranger)))[0] == 401
    # Unknown task.
    assert (await setup.ask_token(setup.authorization(task_id=OTHER_TASK_ID)))[0] == 401
    # A TEE deal needs an enclave challenge.
    setup.chain.deals[DEAL_ID] = replace(setup.chain.deals[DEAL_ID], tag=TEE_TAG)
    status, message = await setup.ask_token()
    assert (status, "enclaveChallenge" in message) == (401, True)
    setup.chain.deals[DEAL_ID] = replace(setup.chain.deals[DEAL_ID], tag="0x" + "00" * 32)
    # Past the final deadline.
    setup.chain.block_time = setup.chain.tasks[TASK_ID].final_deadline + 1
    status, message = await setup.ask_token()
    assert (status, "final deadline" in message) == (401, True)


async def test_token_malformed_requests(setup: Setup) -> None:
    url = f"{setup.url}/v1/results/token"
    async with setup.http.post(url, data="{}") as r:
        assert r.status == 401  # no signature header
    async with setup.http.post(url, data="not json", headers={"Authorization": "0x00"}) as r:
        assert r.status == 400
        assert "WorkerpoolAuthorization" in await r.text()
    bad = setup.authorization().model_copy(update={"chain_task_id": "0x1234"})
    status, message = await setup.ask_token(bad)
    assert (status, "chainTaskId" in message) == (400, True)
    async with setup.http.post(
        url, data=setup.authorization().to_json(), headers={"Authorization": "0xzz"}
    ) as r:
        assert r.status == 401


async def test_upload_is_stored_under_its_content_id(setup: Setup) -> None:
    _, token = await setup.ask_token()
    assert await setup.head(token) == 404
    assert (await setup.ipfs_hash())[0] == 404

    status, link = await setup.upload(token)

    expected_cid = str(cid.make_cid(0, "dag-pb", b"\x12\x20" + hashlib.sha256(setup.zip_bytes).digest()))
    assert (status, link) == (200, f"/ipfs/{expected_cid}")
    assert expected_cid.startswith("Qm")
    assert (setup.storage / "ipfs" / expected_cid).read_bytes() == setup.zip_bytes
    assert await setup.ipfs_hash() == (200, expected_cid)
    assert await setup.head(token) == 204
    assert await setup.head(token, OTHER_TASK_ID) == 404
    assert await setup.head("not-a-token") == 401

    restarted = ResultProxy(setup.chain, setup.storage)
    try:
        await restarted.start()
        async with setup.http.get(f"{restarted.url}/v1/results/{TASK_ID}/ipfshash") as r:
            assert (r.status, await r.text()) == (200, expected_cid)
    finally:
        await restarted.stop()


async def test_double_upload_is_refused(setup: Setup) -> None:
    _, token = await setup.ask_token()
    assert (await setup.upload(token))[0] == 200
    status, message = await setup.upload(token)
    assert (status, "already stored" in message) == (401, True)


async def test_wrong_digest_is_refused_and_nothing_stored(setup: Setup) -> None:
    key = (TASK_ID, setup.worker.address.lower())
    other = result_hash(TASK_ID, "0x" + hashlib.sha256(b"another result").hexdigest())
    setup.chain.contributions[key] = replace(setup.chain.contributions[key], result_hash=other)
    _, token = await setup.ask_token()
    status, message = await setup.upload(token)
    assert (status, "does not match" in message) == (401, True)
    assert (await setup.ipfs_hash())[0] == 404
    assert list((setup.storage / "ipfs").iterdir()) == []


async def test_upload_needs_revealing_task_and_proved_contribution(setup: Setup) -> None:
    _, token = await setup.ask_token()
    setup.chain.tasks[TASK_ID] = replace(setup.chain.tasks[TASK_ID], status=ChainTaskStatus.ACTIVE)
    status, message = await setup.upload(token)
    assert (status, "not REVEALING" in message) == (401, True)
    setup.chain.tasks[TASK_ID] = replace(setup.chain.tasks[TASK_ID], status=ChainTaskStatus.REVEALING)
    key = (TASK_ID, setup.worker.address.lower())
    setup.chain.contributions[key] = replace(
        setup.chain.contributions[key], status=ChainContributionStatus.CONTRIBUTED
    )
    status, message = await setup.upload(token)
    assert (status, "not PROVED" in message) == (401, True)


async def test_bad_token_is_401(setup: Setup) -> None:
    forged = jwt.encode(
        {"aud": setup.worker.address.lower(), "sub": "x", "iat": 1}, b"k" * 64, algorithm="HS256"
    )
    for token in ("", "garbage", forged):
        assert (await setup.upload(token))[0] == 401


def _zip_with(entries: dict[str, bytes]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{", "ResultModel"),
        ('{"chainTaskId": "' + TASK_ID + '"}', "ResultModel"),
        ('{"chainTaskId": "' + TASK_ID + '", "zip": "%%%"}', "Base64"),
        ('{"chainTaskId": "0xnope", "zip": ""}', "chainTaskId"),
        (
            '{"chainTaskId": "' + TASK_ID + '", "zip": "' + base64.b64encode(b"not a zip").decode() + '"}',
            "zip",
        ),
        ('{"chainTaskId": "' + TASK_ID + '", "zip": "' + _zip_with({"../evil.txt": b"x"}) + '"}', "outside"),
        ('{"chainTaskId": "' + TASK_ID + '", "zip": "' + _zip_with({"/abs.txt": b"x"}) + '"}', "outside"),
    ],
)
async def test_malformed_upload_is_400(setup: Setup, body: str, message: str) -> None:
    _, token = await setup.ask_token()
    status, text = await setup.upload(token, body)
    assert status == 400
    assert message in text
    assert not (setup.storage.parent / "evil.txt").exists()


async def test_oversized_and_zip_bomb_uploads_are_refused(tmp_path: Path) -> None:
    worker: LocalAccount = Account.create()
    owner: LocalAccount = Account.create()
    chain = proved_chain(TASK_ID, DEAL_ID, worker, owner, "0x" + "11" * 32)
    proxy = ResultProxy(chain, tmp_path / "proxy", max_result_bytes=50_000)
    await proxy.start()
    try:
        async with aiohttp.ClientSession() as http:
            s = Setup(proxy.url, chain, tmp_path / "proxy", worker, owner, http, b"", "")
            _, token = await s.ask_token()
            # 1 MB of zeros compresses to about 1 kB: small on the wire, too big once expanded.
            body = ResultModel(chain_task_id=TASK_ID, zip=_zip_with({"zeros": b"\0" * 1_000_000})).to_json()
            status, message = await s.upload(token, body)
            assert (status, "expands to more than 50000 bytes" in message) == (400, True)
            too_big = ResultModel(
                chain_task_id=TASK_ID, zip=base64.b64encode(b"\1" * 60_000).decode()
            ).to_json()
            status, message = await s.upload(token, too_big)
            assert (status, "larger than" in message) == (400, True)
    finally:
        await proxy.stop()


async def test_chain_failure_is_503(setup: Setup) -> None:
    setup.chain.broken = True
    status, message = await setup.ask_token()
    assert (status, "retry later" in message) == (503, True)


async def test_tasks_with_the_same_result_uploaded_at_once_are_all_stored(setup: Setup) -> None:
    """Identical results (one content id) of many tasks arrive together, as from a worker running a deal's tasks."""
    task_ids = [chain_task_id(DEAL_ID, index) for index in range(2, 18)]
    proved = setup.chain.tasks[TASK_ID]
    for task_id in task_ids:
        setup.chain.tasks[task_id] = proved
        setup.chain.contributions[(task_id, setup.worker.address.lower())] = replace(
            setup.chain.contributions[(TASK_ID, setup.worker.address.lower())],
            result_hash=result_hash(task_id, setup.digest),
        )
    _, token = await setup.ask_token()

    def body(task_id: str) -> str:
        zip_b64 = base64.b64encode(setup.zip_bytes).decode()
        return ResultModel(chain_task_id=task_id, zip=zip_b64, determinist_hash=setup.digest).to_json()

    answers = await asyncio.gather(*(setup.upload(token, body(task_id)) for task_id in task_ids))

    assert {status for status, _ in answers} == {200}
    assert len({text for _, text in answers}) == 1
    assert [entry.name for entry in (setup.storage / "ipfs").iterdir()] == [
        answers[0][1].removeprefix("/ipfs/")
    ]
