"""Result proxy client against the real development result proxy over HTTP on 127.0.0.1 (unit tests).

The proxy reads a fake chain implementing ``ResultProxyChain``; keys are throwaway local accounts. The
result zip is built by the worker's own standard post-compute.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import cid
import pytest
from aiohttp import web
from eth_account import Account
from eth_account.signers.local import LocalAccount
from yarl import URL

from devnet.resultproxy import create_result_proxy_app
from tests.support import serving_app
from tests.support.proxy_fakes import FakeProxyChain, proved_chain, standard_result
from worker.protocol.crypto import (
    ZERO_ADDRESS,
    authorization_hash,
    chain_task_id,
    recover_eip191,
    result_hash,
    sign_eip191,
)
from worker.protocol.models import ResultModel, Signature, WorkerpoolAuthorization
from worker.protocol.status import ReplicateStatusCause
from worker.protocol.targets import TargetPolicy
from worker.replicate.causes import cause_of
from worker.replicate.ports import Stage
from worker.result import (
    ResultNotUploaded,
    get_ipfs_hash,
    get_token,
    run_standard_post_compute,
    upload,
    upload_result,
)
from worker.result.upload import UPLOAD_SLICE_BYTES

DEAL_ID = "0x" + "44" * 32
TASK_ID = chain_task_id(DEAL_ID, 0)
UNREACHABLE = "http://127.0.0.1:1"


@dataclass
class Setup:
    url: str
    chain: FakeProxyChain
    storage: Path
    worker: LocalAccount
    authorization: WorkerpoolAuthorization
    http: aiohttp.ClientSession
    zip_path: Path
    digest: str
    headers: list[tuple[str, str, str]]
    """(method, path, Authorization header) of every request the proxy received."""

    def expected_cid(self) -> str:
        return str(
            cid.make_cid(0, "dag-pb", b"\x12\x20" + hashlib.sha256(self.zip_path.read_bytes()).digest())
        )

    async def upload_result(self, **overrides: object) -> str:
        arguments: dict[str, object] = {
            "task_id": TASK_ID,
            "authorization": self.authorization,
            "account": self.worker,
            "zip_path": self.zip_path,
            "result_digest": self.digest,
            "callback": None,
            "storage_proxy": None,
            "result_repository_url": self.url,
            "storage_provider": "ipfs",
            "attempts": 2,
            "retry_delay": 0.0,
        }
        arguments.update(overrides)
        return await upload_result(self.http, **arguments)  # type: ignore[arg-type]


def _stored(storage: Path) -> list[str]:
    return sorted(entry.name for entry in (storage / "ipfs").iterdir())


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    worker: LocalAccount = Account.create()
    owner: LocalAccount = Account.create()
    zip_path, digest = standard_result(tmp_path / "output")
    chain = proved_chain(TASK_ID, DEAL_ID, worker, owner, result_hash(TASK_ID, digest))
    authorization = WorkerpoolAuthorization(
        chain_task_id=TASK_ID,
        deal_id=DEAL_ID,
        task_index=0,
        worker_wallet=worker.address,
        enclave_challenge=ZERO_ADDRESS,
        signature=Signature(
            value=sign_eip191(authorization_hash(worker.address, TASK_ID, ZERO_ADDRESS), owner.key)
        ),
    )
    headers: list[tuple[str, str, str]] = []

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        headers.append((request.method, request.path, request.headers.get("Authorization", "")))
        return await handler(request)

    storage = tmp_path / "proxy"
    app = create_result_proxy_app(chain, storage)
    app.middlewares.insert(0, record)
    async with serving_app(app, access_log=None) as url, aiohttp.ClientSession() as http:
        yield Setup(url, chain, storage, worker, authorization, http, zip_path, digest, headers)


async def test_upload_result_gives_the_exact_ipfs_link(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        link = await setup.upload_result()

    expected_cid = setup.expected_cid()
    assert link == '{ "storage": "ipfs", "location": "/ipfs/' + expected_cid + '" }'
    assert _stored(setup.storage) == [expected_cid]
    assert (setup.storage / "ipfs" / expected_cid).read_bytes() == setup.zip_path.read_bytes()
    token = await get_token(setup.http, setup.url, setup.authorization, setup.worker)
    assert all(token not in record.getMessage() for record in caplog.records)


async def test_wire_format_of_token_and_upload(setup: Setup) -> None:
    token = await get_token(setup.http, setup.url, setup.authorization, setup.worker)
    assert await get_ipfs_hash(setup.http, setup.url, TASK_ID) is None

    answer = await upload(setup.http, setup.url, token, TASK_ID, setup.zip_path, setup.digest)

    assert answer == f"/ipfs/{setup.expected_cid()}"
    assert await get_ipfs_hash(setup.http, setup.url, TASK_ID) == setup.expected_cid()
    sent = {(method, path): value for method, path, value in setup.headers}
    signature = sent[("POST", "/v1/results/token")]
    auth_hash = authorization_hash(setup.worker.address, TASK_ID, ZERO_ADDRESS)
    assert recover_eip191(auth_hash, signature) == setup.worker.address.lower()
    assert len(signature) == 2 + 130
    assert sent[("POST", "/v1/results")] == token  # raw, no "Bearer "


async def test_a_wrong_digest_is_refused_and_no_link_is_given(setup: Setup) -> None:
    key = (TASK_ID, setup.worker.address.lower())
    other = result_hash(TASK_ID, "0x" + hashlib.sha256(b"another result").hexdigest())
    setup.chain.contributions[key] = replace(setup.chain.contributions[key], result_hash=other)

    with pytest.raises(ResultNotUploaded) as caught:
        await setup.upload_result()

    assert cause_of(Stage.UPLOAD, caught.value) is ReplicateStatusCause.RESULT_LINK_MISSING
    assert "HTTP 401" in str(caught.value)
    assert "does not match the result hash" in str(caught.value)
    assert _stored(setup.storage) == []


async def test_an_upload_already_stored_gives_the_same_link(setup: Setup) -> None:
    first = await setup.upload_result()
    assert await setup.upload_result() == first
    assert len([h for h in setup.headers if h[:2] == ("POST", "/v1/results")]) == 2


async def test_callback_task_is_not_uploaded(setup: Setup) -> None:
    callback = "0x" + "Cb" * 20
    link = await setup.upload_result(callback=callback, result_repository_url=UNREACHABLE)
    assert link == '{ "storage": "ethereum", "location": "' + callback.lower() + '" }'
    assert setup.headers == []


async def test_the_deal_proxy_wins_over_the_scheduler_one(setup: Setup) -> None:
    link = await setup.upload_result(
        storage_proxy=setup.url,
        result_repository_url=UNREACHABLE,
        targets=TargetPolicy.allowing("127.0.0.0/8"),
    )
    assert setup.expected_cid() in link


@pytest.mark.parametrize(
    "proxy", ["http://127.0.0.1:{port}", "http://localhost:{port}", "http://169.254.169.254"]
)
async def test_a_deal_proxy_on_a_private_address_gets_nothing(setup: Setup, proxy: str) -> None:
    """The requester names the result proxy: the worker would send it a signature and the result."""
    port = URL(setup.url).port
    with pytest.raises(ResultNotUploaded, match=r"refused: .*(loopback|link-local) address"):
        await setup.upload_result(storage_proxy=proxy.format(port=port), result_repository_url=UNREACHABLE)
    assert setup.headers == []


async def test_a_failing_proxy_is_retried_then_gives_up(setup: Setup) -> None:
    setup.chain.broken = True
    with pytest.raises(ResultNotUploaded) as caught:
        await setup.upload_result(attempts=2)
    assert cause_of(Stage.UPLOAD, caught.value) is ReplicateStatusCause.RESULT_LINK_MISSING
    assert "HTTP 503" in str(caught.value)
    assert [h[:2] for h in setup.headers] == [("POST", "/v1/results/token")] * 2


async def test_an_unreachable_proxy_gives_no_link(setup: Setup) -> None:
    with pytest.raises(ResultNotUploaded, match=r"cannot connect to 127\.0\.0\.1:1") as caught:
        await setup.upload_result(result_repository_url=UNREACHABLE)
    assert cause_of(Stage.UPLOAD, caught.value) is ReplicateStatusCause.RESULT_LINK_MISSING


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"storage_provider": "dropbox"}, "'dropbox' is not supported"),
        ({"result_repository_url": "", "storage_proxy": " "}, "not an http(s) URL"),
    ],
)
async def test_no_link_without_a_usable_destination(
    setup: Setup, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ResultNotUploaded) as caught:
        await setup.upload_result(**overrides)
    assert cause_of(Stage.UPLOAD, caught.value) is ReplicateStatusCause.RESULT_LINK_MISSING
    assert message in str(caught.value)
    assert setup.headers == []


async def test_an_authorization_for_another_wallet_is_not_sent(setup: Setup) -> None:
    stranger: LocalAccount = Account.create()
    with pytest.raises(ResultNotUploaded, match="not for this worker") as caught:
        await setup.upload_result(account=stranger)
    assert cause_of(Stage.UPLOAD, caught.value) is ReplicateStatusCause.RESULT_LINK_MISSING
    assert setup.headers == []


def _large_result(output: Path) -> Path:
    """A zip of several upload slices whose size is not a multiple of 3 (incompressible bytes)."""
    for extra in range(3):
        folder = output / str(extra)
        (folder / "iexec_out").mkdir(parents=True)
        (folder / "iexec_out" / "result.bin").write_bytes(os.urandom(3 * UPLOAD_SLICE_BYTES + extra))
        (folder / "iexec_out" / "computed.json").write_text('{"deterministic-output-path": "/iexec_out"}')
        zip_path = run_standard_post_compute(folder).zip_path
        if zip_path.stat().st_size % 3:
            return zip_path
    raise AssertionError("three sizes in a row gave zips of a multiple of 3 bytes")


async def test_a_large_zip_is_sent_as_the_same_json_and_the_same_bytes(tmp_path: Path) -> None:
    """The streamed body is byte for byte the ResultModel JSON with the whole zip in Base64 (a recording server)."""
    zip_path = _large_result(tmp_path / "output")
    received: list[tuple[bytes, str | None, str | None]] = []

    async def record(request: web.Request) -> web.Response:
        received.append(
            (
                await request.read(),
                request.headers.get("Content-Length"),
                request.headers.get("Transfer-Encoding"),
            )
        )
        return web.Response(text="/ipfs/QmStored")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/results", record)
    digest = "0x" + "ab" * 32
    async with serving_app(app, access_log=None) as url, aiohttp.ClientSession() as http:
        assert await upload(http, url, "token", TASK_ID, zip_path, digest) == "/ipfs/QmStored"

    [(body, length, chunked)] = received
    zip_bytes = zip_path.read_bytes()
    expected = ResultModel(
        chain_task_id=TASK_ID, zip=base64.b64encode(zip_bytes).decode(), determinist_hash=digest
    ).to_json()
    assert body == expected.encode()
    assert (length, chunked) == (str(len(body)), None)
    sent_zip = base64.b64decode(ResultModel.model_validate_json(body).zip, validate=True)
    assert hashlib.sha256(sent_zip).hexdigest() == hashlib.sha256(zip_bytes).hexdigest()


async def test_a_missing_zip_is_not_uploaded(setup: Setup) -> None:
    setup.zip_path.unlink()
    with pytest.raises(ResultNotUploaded, match="cannot read the result zip"):
        await setup.upload_result()
    assert await get_ipfs_hash(setup.http, setup.url, TASK_ID) is None
