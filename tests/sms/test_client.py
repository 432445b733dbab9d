"""The SMS client against a fake SMS served on loopback, which checks the signatures as iexec-sms does."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from eth_account import Account

from tests.support import serving_app
from worker.protocol.crypto import authorization_hash, recover_eip191
from worker.protocol.models import Signature, WorkerpoolAuthorization
from worker.protocol.tee import RESULT_IPFS_TOKEN, TeeFramework, TeeSessionGenerationError, web2_secret_hash
from worker.sms import SmsClient, SmsError, SmsSessionRefused

WORKER = Account.create()
TASK = "0x" + "ab" * 32
AUTH = WorkerpoolAuthorization(
    chain_task_id=TASK, deal_id="0x" + "cd" * 32, task_index=0, worker_wallet=WORKER.address.lower(),
    enclave_challenge="0x" + "33" * 20, signature=Signature(value="0x" + "22" * 65),
)  # fmt: skip


def fake_sms(secrets: dict[tuple[str, str], str], refuse: str | None = None) -> web.Application:
    async def framework(_: web.Request) -> web.Response:
        return web.json_response("TDX")

    async def properties(request: web.Request) -> web.Response:
        if request.match_info["version"] != "v1":
            return web.Response(status=404)
        return web.json_response({
            "teeFramework": "TDX", "preComputeProperties": {"image": "pre:1"}, "postComputeProperties": {"image": "post:1"},
        })  # fmt: skip

    async def session(request: web.Request) -> web.Response:
        auth = WorkerpoolAuthorization.model_validate_json(await request.read())
        signer = recover_eip191(
            authorization_hash(auth.worker_wallet, auth.chain_task_id, auth.enclave_challenge),
            request.headers["Authorization"],
        )
        if signer != auth.worker_wallet:
            return web.json_response({"error": "INVALID_AUTHORIZATION"}, status=401)
        if refuse:
            return web.json_response({"error": refuse}, status=500)
        return web.json_response(
            {"data": {"sessionId": "abc0000" + TASK, "secretProvisioningUrl": "http://sp"}}
        )

    async def head(request: web.Request) -> web.Response:
        key = (request.query["ownerAddress"].lower(), request.query["secretName"])
        return web.Response(status=204 if key in secrets else 404)

    async def put(request: web.Request) -> web.Response:
        owner, name = request.query["ownerAddress"].lower(), request.query["secretName"]
        value = (await request.read()).decode()
        if recover_eip191(web2_secret_hash(owner, name, value), request.headers["Authorization"]) != owner:
            return web.Response(status=401)
        if (request.method == "POST") == ((owner, name) in secrets):
            return web.Response(status=409 if request.method == "POST" else 404)
        secrets[(owner, name)] = value
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/tee/framework", framework)
    app.router.add_get("/tee/properties/{framework}/{version}", properties)
    app.router.add_post("/tee/sessions", session)
    app.router.add_route("HEAD", "/secrets/web2", head)
    app.router.add_post("/secrets/web2", put)
    app.router.add_put("/secrets/web2", put)
    return app


async def test_framework_properties_session_and_token() -> None:
    secrets: dict[tuple[str, str], str] = {}
    async with serving_app(fake_sms(secrets)) as url, aiohttp.ClientSession() as http:
        sms = SmsClient(http, url, WORKER)
        assert await sms.framework() is TeeFramework.TDX
        properties = await sms.properties(TeeFramework.TDX, "v1")
        assert properties is not None
        assert properties.post_compute_properties.image == "post:1"
        assert await sms.properties(TeeFramework.TDX, "v2") is None
        session = await sms.create_session(AUTH)
        assert session.session_id.endswith(TASK)
        assert session.secret_provisioning_url == "http://sp"
        await sms.push_web2_secret(RESULT_IPFS_TOKEN, "jwt-1")
        await sms.push_web2_secret(RESULT_IPFS_TOKEN, "jwt-2")  # present: replaced with PUT
    assert secrets == {(WORKER.address.lower(), RESULT_IPFS_TOKEN): "jwt-2"}


async def test_a_refused_session_carries_the_sms_error() -> None:
    async with (
        serving_app(fake_sms({}, refuse="POST_COMPUTE_GET_STORAGE_TOKENS_FAILED")) as url,
        aiohttp.ClientSession() as http,
    ):
        with pytest.raises(SmsSessionRefused) as refused:
            await SmsClient(http, url, WORKER).create_session(AUTH)
        assert refused.value.error is TeeSessionGenerationError.POST_COMPUTE_GET_STORAGE_TOKENS_FAILED
        stranger = SmsClient(
            http, url, Account.create()
        )  # signs for a wallet that is not the authorization's
        with pytest.raises(SmsSessionRefused) as invalid:
            await stranger.create_session(AUTH)
        assert invalid.value.error is TeeSessionGenerationError.INVALID_AUTHORIZATION


async def test_an_unreachable_sms_is_an_sms_error() -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(SmsError, match=r"SMS http://127\.0\.0\.1:9 GET /tee/framework"):
            await SmsClient(http, "http://127.0.0.1:9", WORKER).framework()
