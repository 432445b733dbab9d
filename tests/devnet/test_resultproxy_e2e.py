"""End-to-end: the development result proxy on real HTTP reads the real PoCo contracts on the shared devnet.

The test plays requester, scheduler and worker with the toolkit, then uploads as a worker would: a zip whose
recomputed digest differs from the revealed one is refused, the revealed one is accepted.
"""

from __future__ import annotations

import base64
from pathlib import Path

import aiohttp
import pytest

from devnet.accounts import Role, account
from devnet.contracts import DEVNET_CATEGORY, Devnet
from devnet.resultproxy import ResultProxy, ToolkitResultProxyChain
from devnet.toolkit import Toolkit
from worker.protocol import crypto
from worker.protocol.models import ResultModel, Signature, WorkerpoolAuthorization
from worker.protocol.status import ChainContributionStatus
from worker.result import compute_result_digest, read_computed_file, run_standard_post_compute

pytestmark = pytest.mark.e2e


def _result(output: Path, text: str) -> tuple[bytes, str]:
    (output / "iexec_out").mkdir(parents=True)
    (output / "iexec_out" / "result.txt").write_text(text)
    (output / "iexec_out" / "computed.json").write_text(
        '{"deterministic-output-path": "/iexec_out/result.txt"}'
    )
    done = run_standard_post_compute(output)
    digest = compute_result_digest(output, read_computed_file(done.computed_path), callback=False)
    return done.zip_path.read_bytes(), digest


async def test_proxy_accepts_only_the_revealed_result(
    devnet: Devnet, toolkit: Toolkit, tmp_path: Path
) -> None:
    requester, scheduler, app_owner = (
        account(Role.REQUESTER),
        account(Role.SCHEDULER),
        account(Role.APP_PROVIDER),
    )
    worker = account(Role.WORKER2)
    wallet = worker.address.lower()
    app = await toolkit.create_app(
        app_owner, "resultproxy-e2e", "docker.io/library/busybox:latest", "0x" + "44" * 32
    )
    workerpool = await toolkit.create_workerpool(scheduler, "devnet-workerpool")
    deal = await toolkit.buy(
        requester=requester,
        app=app,
        app_owner=app_owner,
        workerpool=workerpool,
        workerpool_owner=scheduler,
        category=devnet.deployment.categories[DEVNET_CATEGORY],
        params={"iexec_result_storage_provider": "ipfs"},
    )
    task_id = await toolkit.initialize(deal.deal_id, 0, scheduler)

    good_zip, good_digest = _result(tmp_path / "good", "the revealed result")
    bad_zip, _ = _result(tmp_path / "bad", "something else")
    auth_hash = crypto.authorization_hash(wallet, task_id)
    pool_signature = crypto.sign_eip191(auth_hash, scheduler.key)
    await toolkit.contribute(task_id, good_digest, worker, pool_signature)
    await toolkit.reveal(task_id, good_digest, worker)
    assert (await toolkit.view_contribution(task_id, wallet)).status is ChainContributionStatus.PROVED

    authorization = WorkerpoolAuthorization(
        chain_task_id=task_id,
        deal_id=deal.deal_id,
        task_index=0,
        worker_wallet=wallet,
        signature=Signature(value=pool_signature),
    )
    async with (
        ResultProxy(ToolkitResultProxyChain(toolkit), tmp_path / "proxy") as proxy,
        aiohttp.ClientSession() as http,
    ):
        headers = {"Authorization": crypto.sign_eip191(auth_hash, worker.key)}
        async with http.post(
            f"{proxy.url}/v1/results/token", data=authorization.to_json(), headers=headers
        ) as r:
            assert r.status == 200, await r.text()
            token = await r.text()

        async def upload(zip_bytes: bytes) -> tuple[int, str]:
            body = ResultModel(chain_task_id=task_id, zip=base64.b64encode(zip_bytes).decode()).to_json()
            async with http.post(f"{proxy.url}/v1/results", data=body, headers={"Authorization": token}) as r:
                return r.status, await r.text()

        status, message = await upload(bad_zip)
        assert (status, "does not match" in message) == (401, True)

        status, link = await upload(good_zip)
        assert status == 200, link
        async with http.get(f"{proxy.url}/v1/results/{task_id}/ipfshash") as r:
            assert (r.status, f"/ipfs/{await r.text()}") == (200, link)
