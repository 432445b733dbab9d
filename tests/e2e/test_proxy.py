"""End to end: with IEXEC_HTTP_PROXY_HOST/PORT set, every outbound HTTP call of the worker takes the proxy.

A whole task runs (real anvil + PoCo, Docker, the development scheduler and result proxy, a dataset
from an IPFS gateway and an input file, all on 127.0.0.1) while the worker knows every service only
by a port on which nothing listens; the test's proxy alone maps those ports to the real services. A
call that bypassed the proxy would be refused, so the task completing proves every call went through
it, and the proxy's log shows each kind of call. This module mutates the URLs its platform's scheduler
hands out, so it has a platform of its own (tests/e2e/conftest.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
from aiohttp import web
from yarl import URL

from devnet.core.state import TaskStatus
from devnet.images import SHELL
from devnet.platform import Platform, buy
from tests.support import free_port, serving_app, until
from tests.support.e2e import running_worker
from tests.support.http_proxy import http_proxy

pytestmark = pytest.mark.e2e

CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
DATASET = b"a dataset pinned on IPFS\n"
INPUT = b"an input file\n"
APP = (
    "'set -e\n"
    'cat "$IEXEC_IN/$IEXEC_DATASET_FILENAME" "$IEXEC_IN/$IEXEC_INPUT_FILE_NAME_1" > /iexec_out/both.txt\n'
    'printf "{\\"deterministic-output-path\\":\\"/iexec_out/both.txt\\"}" > /iexec_out/computed.json\n'
    "'"
)


def _files_app() -> web.Application:
    async def gateway(request: web.Request) -> web.Response:
        if request.match_info["cid"] != CID:
            raise web.HTTPNotFound()
        return web.Response(body=DATASET)

    async def input_file(_: web.Request) -> web.Response:
        return web.Response(body=INPUT)

    app = web.Application()
    app.router.add_get("/ipfs/{cid}", gateway)
    app.router.add_get("/input.txt", input_file)
    return app


async def test_every_outbound_call_goes_through_the_proxy(platform: Platform, tmp_path: Path) -> None:
    info = platform.info()
    real = {
        "scheduler": URL(info.scheduler_url).port,
        "node": URL(info.rpc_url).port,
        "results": URL(info.result_proxy_url).port,
    }
    async with serving_app(_files_app()) as files_url:
        real["files"] = URL(files_url).port
        hidden = {name: free_port() for name in real}
        url = {name: f"http://127.0.0.1:{port}" for name, port in hidden.items()}
        ports = {hidden[name]: port for name, port in real.items() if port is not None}
        api = platform.scheduler.api
        original = (api.base_url, api.settings)
        # The scheduler hands out its config server URL and the result proxy's: the proxy-only ones too.
        api.base_url = url["scheduler"]
        api.settings = dataclasses.replace(api.settings, result_proxy_url=url["results"])
        env = {
            "IEXEC_CORE_URL": url["scheduler"],
            "IEXEC_WORKER_OVERRIDE_BLOCKCHAIN_NODE_ADDRESS": url["node"],
            "IEXEC_WORKER_IPFS_GATEWAYS": url["files"],
            "IEXEC_HTTP_PROXY_HOST": "127.0.0.1",
            "IEXEC_WORKER_NON_PROXY_HOSTS": "",  # loopback too: everything here is on 127.0.0.1
        }
        try:
            async with http_proxy(ports) as proxy:
                env["IEXEC_HTTP_PROXY_PORT"] = str(proxy.port)
                async with running_worker(platform, 0, tmp_path / "worker", env=env) as worker:
                    purchase = await buy(
                        info,
                        image=SHELL.tag,
                        args=APP,
                        dataset_url=f"/ipfs/{CID}",
                        dataset_sha256="0x" + hashlib.sha256(DATASET).hexdigest(),
                        input_files=[f"{url['files']}/input.txt"],
                        # No proxy in the deal: the worker takes the scheduler's resultRepositoryURL (the
                        # hidden one), while the scheduler checks the upload at its own, real, URL.
                        extra_params={"iexec_result_storage_proxy": ""},
                    )
                    task_id = purchase.task_ids[0]
                    await until(
                        lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED,
                        within=120,
                        what=f"task {task_id} COMPLETED through the proxy",
                    )
                    assert await worker.shutdown() == 0
        finally:
            api.base_url, api.settings = original

    chain_task = await platform.toolkit.view_task(task_id)
    assert chain_task.result_digest == "0x" + hashlib.sha256(DATASET + INPUT).hexdigest()
    expected = [
        f"GET {url['scheduler']}/workers/config",  # scheduler REST
        f"GET {url['scheduler']}/config/chain",  # config server
        f"POST {url['scheduler']}/workers/login",
        f"POST {url['scheduler']}/workers/register",
        f"GET {url['scheduler']}/replicates/available",
        f"POST {url['scheduler']}/replicates/{task_id}/updateStatus",
        f"{url['scheduler']}/connect/",  # the push channel (SockJS)
        f"POST {url['node']}",  # JSON-RPC
        f"GET {url['files']}/ipfs/{CID}",  # IPFS gateway
        f"GET {url['files']}/input.txt",  # input file
        f"POST {url['results']}/v1/results/token",  # result proxy
        f"POST {url['results']}/v1/results",
    ]
    missing = [call for call in expected if not proxy.lines(call)]
    assert not missing, f"calls not seen by the proxy: {missing}\nproxy log: {proxy.log[:40]}"
    # Nothing else was ever called, through the proxy or not: only the hidden ports exist for the worker.
    assert all(line.split(" ", 1)[1].startswith(tuple(url.values())) for line in proxy.log)
