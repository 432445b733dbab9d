"""Development scheduler, REST API against iexec-core's ``WorkerController`` and
``ReplicatesController`` (unit tests).

Real HTTP on 127.0.0.1 and the real STOMP broker; the chain is ``FakeChain`` (in memory, same
``SchedulerChain`` Protocol as the toolkit adapter) and the result check a fake. Keys are throwaway.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
from eth_account import Account
from eth_account.signers.local import LocalAccount

from devnet.core import DevScheduler, TaskStatus
from tests.support import until
from tests.support.core_fakes import FAKE_DEPLOYMENT, WORKERPOOL, FakeChain, FakeResults, WorkerClient
from worker.protocol.crypto import (
    authorization_hash,
    chain_task_id,
    keccak_hex,
    recover_eip191,
    sign_login_challenge,
    to_hex,
)
from worker.protocol.models import PublicConfiguration
from worker.protocol.status import ReplicateStatus

DEAL = "0x" + "ab" * 32
TASK = chain_task_id(DEAL, 0)
RS = ReplicateStatus

Starter = Callable[..., Awaitable[DevScheduler]]


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
def scheduler_key() -> LocalAccount:
    key: LocalAccount = Account.create()
    return key


@pytest_asyncio.fixture
async def start(scheduler_key: LocalAccount) -> AsyncIterator[Starter]:
    started: list[DevScheduler] = []

    async def _start(chain: FakeChain, **overrides: Any) -> DevScheduler:
        options: dict[str, Any] = {
            "toolkit": None,
            "deployment": FAKE_DEPLOYMENT,
            "rpc_url": "http://127.0.0.1:8545",
            "workerpool": WORKERPOOL,
            "scheduler_account": scheduler_key,
            "result_proxy_url": "http://127.0.0.1:1",
            "ask_for_replicate_period_ms": 600,
            "poll_interval_s": 0.05,
            "chain": chain,
            "results": FakeResults(),
        }
        options.update(overrides)
        scheduler = await DevScheduler.start(**options)
        started.append(scheduler)
        return scheduler

    yield _start
    for scheduler in started:
        await scheduler.stop()


async def joined(session: aiohttp.ClientSession, scheduler: DevScheduler, cpu_nb: int = 2) -> WorkerClient:
    worker = WorkerClient(session, scheduler.url, Account.create())
    await worker.login()
    assert (await worker.register(cpu_nb)).status == 200
    return worker


async def deal_with_task(chain: FakeChain, scheduler: DevScheduler, **deal: Any) -> None:
    chain.add_deal(DEAL, **deal)
    await until(lambda: scheduler.task_status(TASK) is TaskStatus.INITIALIZED, what="task initialized")


async def replicate_for(worker: WorkerClient) -> dict[str, Any]:
    """Ask until the rate limit lets the demand through and a replicate is handed out."""
    answers: list[int] = []

    async def ask() -> bool:
        answer = await worker.available()
        answers.append(answer.status)
        if answer.status == 200:
            answers.append(answer.json())
        return answer.status == 200

    await until(ask, within=5, every=0.15, what="a replicate")
    body = answers[-1]
    assert isinstance(body, dict)
    return body


# -- public endpoints ---------------------------------------------------------------------------


async def test_version_config_and_chain_config(session: aiohttp.ClientSession, start: Starter) -> None:
    scheduler = await start(FakeChain())
    worker = WorkerClient(session, scheduler.url, Account.create())
    version = await worker.call("GET", "/version", auth=False)
    assert (version.status, version.text) == (200, "9.3.0")

    config = (await worker.call("GET", "/workers/config", auth=False)).json()
    assert list(config) == [
        "workerPoolAddress",
        "schedulerPublicAddress",
        "configServerUrl",
        "resultRepositoryURL",
        "askForReplicatePeriod",
        "requiredWorkerVersion",
    ]
    assert config["workerPoolAddress"] == WORKERPOOL
    assert config["configServerUrl"] == scheduler.url
    assert config["askForReplicatePeriod"] == 600

    chain_config = (await worker.call("GET", "/config/chain", auth=False)).json()
    assert chain_config == {
        "chainId": 31337,
        "sidechain": False,
        "chainNodeUrl": "http://127.0.0.1:8545",
        "iexecHubContractAddress": FAKE_DEPLOYMENT.hub,
        "blockTime": "PT5S",
    }


# -- authentication -----------------------------------------------------------------------------


async def test_challenge_is_base64_and_stable_until_login(
    session: aiohttp.ClientSession, start: Starter
) -> None:
    scheduler = await start(FakeChain())
    worker = WorkerClient(session, scheduler.url, Account.create())
    first = await worker.call("GET", "/workers/challenge", auth=False, walletAddress=worker.wallet)
    again = await worker.call("GET", "/workers/challenge", auth=False, walletAddress=worker.wallet)
    assert first.status == 200
    assert len(first.text) == 44
    assert len(base64.b64decode(first.text)) == 32
    assert again.text == first.text
    await worker.login()
    after = await worker.call("GET", "/workers/challenge", auth=False, walletAddress=worker.wallet)
    assert after.text != first.text


async def test_login_issues_one_cached_jwt(session: aiohttp.ClientSession, start: Starter) -> None:
    scheduler = await start(FakeChain())
    worker = WorkerClient(session, scheduler.url, Account.create())
    token = await worker.login()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == worker.wallet
    assert claims["aud"] == "iExec Scheduler v9.3.0"
    assert claims["exp"] - claims["iat"] == 3600
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert await worker.login() == token


async def test_login_refuses_bad_signature_and_malformed_body(
    session: aiohttp.ClientSession, start: Starter
) -> None:
    scheduler = await start(FakeChain())
    worker = WorkerClient(session, scheduler.url, Account.create())
    impostor = Account.create()
    challenge = await worker.call("GET", "/workers/challenge", auth=False, walletAddress=worker.wallet)
    forged = sign_login_challenge(challenge.text, impostor.key)
    refused = await worker.call(
        "POST", "/workers/login", body={"value": forged}, auth=False, walletAddress=worker.wallet
    )
    assert (refused.status, refused.text) == (401, "")
    not_hex = await worker.call(
        "POST", "/workers/login", body={"value": "0xzz"}, auth=False, walletAddress=worker.wallet
    )
    assert not_hex.status == 401
    malformed = await worker.call(
        "POST", "/workers/login", raw="{not json", auth=False, walletAddress=worker.wallet
    )
    assert malformed.status == 400
    assert "JSON" in malformed.text
    missing = await worker.call("POST", "/workers/login", body={"value": forged}, auth=False)
    assert missing.status == 400


async def test_whitelist_is_exact(session: aiohttp.ClientSession, start: Starter) -> None:
    allowed = Account.create()
    scheduler = await start(FakeChain(), whitelist=[allowed.address.lower()])
    member = WorkerClient(session, scheduler.url, allowed)
    await member.login()
    stranger = WorkerClient(session, scheduler.url, Account.create())
    refused = await stranger.call("GET", "/workers/challenge", auth=False, walletAddress=stranger.wallet)
    assert refused.status == 401
    # Case-sensitive, as in iexec-core: the checksummed spelling is another string.
    checksummed = await member.call("GET", "/workers/challenge", auth=False, walletAddress=allowed.address)
    assert checksummed.status == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/workers/ping"),
        ("POST", "/workers/register"),
        ("GET", "/workers/computing"),
        ("GET", "/replicates/available?blockNumber=1"),
        ("GET", "/replicates/interrupted?blockNumber=1"),
        ("POST", f"/replicates/{TASK}/updateStatus"),
    ],
)
async def test_authenticated_endpoints_need_a_valid_bearer(
    session: aiohttp.ClientSession, start: Starter, method: str, path: str
) -> None:
    scheduler = await start(FakeChain())
    other = await start(FakeChain())
    worker = WorkerClient(session, scheduler.url, Account.create())
    foreign = WorkerClient(session, other.url, worker.account)
    token_elsewhere = await foreign.login()
    for header in (None, f"Bearer {token_elsewhere}", token_elsewhere, "Bearer garbage"):
        headers = {"Authorization": header} if header else {}
        async with session.request(method, scheduler.url + path, headers=headers, json={}) as response:
            assert response.status == 401, header
            assert await response.text() == ""


# -- workers ------------------------------------------------------------------------------------


async def test_ping_answers_the_configuration_fingerprint(
    session: aiohttp.ClientSession, start: Starter
) -> None:
    scheduler = await start(FakeChain())
    worker = WorkerClient(session, scheduler.url, Account.create())
    await worker.login()
    config = PublicConfiguration.model_validate((await worker.call("GET", "/workers/config")).json())
    ping = await worker.call("POST", "/workers/ping")
    assert ping.status == 200
    assert ping.text == keccak_hex(to_hex(config.lombok_string().encode()))
    assert len(ping.text) == 66
    assert scheduler.state.workers[worker.wallet].last_alive is not None


async def test_register_uses_the_jwt_identity(session: aiohttp.ClientSession, start: Starter) -> None:
    scheduler = await start(FakeChain())
    worker = WorkerClient(session, scheduler.url, Account.create())
    await worker.login()
    body = {"name": "w", "walletAddress": "0x" + "99" * 20, "os": "Linux", "cpu": "amd64", "cpuNb": 3,
            "memorySize": 8, "gpuEnabled": False, "teeEnabled": False, "tdxEnabled": False}  # fmt: skip
    answer = await worker.call("POST", "/workers/register", body=body)
    assert answer.status == 200
    registered = answer.json()
    assert registered["walletAddress"] == worker.wallet
    assert registered["maxNbTasks"] == 3
    assert registered["excludedTags"] == ["0x" + "0" * 63 + "9", "0x" + "0" * 63 + "3", "0x" + "0" * 63 + "5"]
    assert registered["computingChainTaskIds"] == []
    bad = await worker.call("POST", "/workers/register", body={"name": "w", "cpuNb": "many"})
    assert bad.status == 400
    assert "WorkerModel" in bad.text
    computing = await worker.call("GET", "/workers/computing")
    assert (computing.status, computing.json()) == (200, [])


# -- replicates/available -----------------------------------------------------------------------


async def test_available_hands_out_a_signed_authorization(
    session: aiohttp.ClientSession, start: Starter, scheduler_key: LocalAccount
) -> None:
    chain = FakeChain()
    scheduler = await start(chain)
    worker = await joined(session, scheduler)
    assert (await worker.available()).status == 204  # no task yet
    await deal_with_task(chain, scheduler)

    summary = await replicate_for(worker)
    assert summary["smsUrl"] is None
    authorization = summary["workerpoolAuthorization"]
    assert authorization["chainTaskId"] == TASK
    assert authorization["dealId"] == DEAL
    assert authorization["taskIndex"] == 0
    assert authorization["workerWallet"] == worker.wallet
    assert authorization["enclaveChallenge"] == "0x" + "00" * 20
    signed = authorization_hash(worker.wallet, TASK)
    assert recover_eip191(signed, authorization["signature"]["value"]) == scheduler_key.address.lower()
    assert scheduler.replicate_history(TASK, worker.wallet) == [RS.CREATED]
    assert (await worker.call("GET", "/workers/computing")).json() == [TASK]

    # trust 1: the first replicate is enough, nobody else gets one.
    second = await joined(session, scheduler)
    await until(lambda: _ask_is(second, 204), within=3, what="204 for a second worker")
    assert list(scheduler.state.tasks[TASK].replicates) == [worker.wallet]


async def _ask_is(worker: WorkerClient, status: int) -> bool:
    return (await worker.available()).status == status


async def test_available_rate_limit_and_preconditions(session: aiohttp.ClientSession, start: Starter) -> None:
    chain = FakeChain()
    scheduler = await start(chain, ask_for_replicate_period_ms=5000)
    worker = await joined(session, scheduler)
    await deal_with_task(chain, scheduler)
    # blockNumber 0 uses up the demand slot and gets nothing; the next ask is too early.
    assert (await worker.available(block_number=0)).status == 204
    assert (await worker.available()).status == 204
    assert scheduler.state.tasks[TASK].replicates == {}
    missing = await worker.call("GET", "/replicates/available")
    assert missing.status == 400
    assert "blockNumber" in missing.text


async def test_available_refuses_poor_or_busy_workers(session: aiohttp.ClientSession, start: Starter) -> None:
    chain = FakeChain()
    scheduler = await start(chain)
    poor = await joined(session, scheduler)
    chain.balances[poor.wallet] = 10**15  # below 1e6 x 22 gwei
    busy = await joined(session, scheduler, cpu_nb=0)
    unregistered = WorkerClient(session, scheduler.url, Account.create())
    await unregistered.login()
    await deal_with_task(chain, scheduler)
    for worker in (poor, busy, unregistered):
        assert (await worker.available()).status == 204
    assert scheduler.state.tasks[TASK].replicates == {}


async def test_available_is_503_while_the_chain_is_down(
    session: aiohttp.ClientSession, start: Starter
) -> None:
    chain = FakeChain()
    scheduler = await start(chain, out_of_service_s=0.3)
    worker = await joined(session, scheduler)
    chain.broken.add("latest_block")
    await until(lambda: _ask_is(worker, 503), within=5, what="503 while the node is down")
    chain.broken.clear()
    await until(lambda: _ask_is(worker, 204), within=5, what="204 once the node is back")


async def test_a_failing_handler_answers_500_and_the_scheduler_goes_on(
    session: aiohttp.ClientSession, start: Starter
) -> None:
    chain = FakeChain()
    scheduler = await start(chain)
    worker = await joined(session, scheduler)
    await deal_with_task(chain, scheduler)
    chain.broken.add("balance")
    assert (await worker.available()).status == 500
    chain.broken.clear()
    assert (await worker.call("GET", "/version")).status == 200
    await replicate_for(worker)


# -- replicates/{id}/updateStatus ---------------------------------------------------------------


async def test_update_status_codes(session: aiohttp.ClientSession, start: Starter) -> None:
    chain = FakeChain()
    scheduler = await start(chain)
    worker = await joined(session, scheduler)
    await deal_with_task(chain, scheduler)
    await replicate_for(worker)

    unknown = await worker.update(chain_task_id(DEAL, 9), "STARTING")
    assert (unknown.status, unknown.json()) == (202, "PLEASE_ABORT")
    illegal = await worker.update(TASK, "COMPUTED")
    assert (illegal.status, illegal.json()) == (202, "PLEASE_ABORT")
    starting = await worker.update(TASK, "STARTING")
    assert (starting.status, starting.json()) == (200, "PLEASE_CONTINUE")
    assert starting.text == '"PLEASE_CONTINUE"'
    twice = await worker.update(TASK, "STARTING")
    assert (twice.status, twice.json()) == (208, "PLEASE_WAIT")
    started = await worker.update(TASK, "STARTED")
    assert started.json() == "PLEASE_DOWNLOAD_APP"
    await until(lambda: scheduler.task_status(TASK) is TaskStatus.RUNNING, what="task RUNNING")

    assert (await worker.call("POST", f"/replicates/{TASK}/updateStatus", raw="nope")).status == 400
    bad_status = await worker.call("POST", f"/replicates/{TASK}/updateStatus", body={"status": "DANCING"})
    assert bad_status.status == 400
    assert "ReplicateStatusUpdate" in bad_status.text

    failed_download = await worker.update(TASK, "APP_DOWNLOADING")
    assert failed_download.json() == "PLEASE_CONTINUE"
    graceful = await worker.update(TASK, "APP_DOWNLOAD_FAILED", {"cause": "APP_IMAGE_DOWNLOAD_FAILED"})
    assert graceful.json() == "PLEASE_CONTRIBUTE"
    assert (await worker.call("GET", "/workers/computing")).json() == []  # slot freed before COMPUTED

    contributing = await worker.update(TASK, "CONTRIBUTING")
    assert contributing.json() == "PLEASE_CONTINUE"
    never = await worker.update(TASK, "CONTRIBUTE_FAILED", {"cause": "CHAIN_RECEIPT_NOT_VALID"})
    assert (never.status, never.json()) == (202, "PLEASE_ABORT")
    # Not on chain: the scheduler cannot confirm the contribution.
    unconfirmed = await worker.update(
        TASK, "CONTRIBUTED", {"chainReceipt": {"blockNumber": 1, "txHash": "0x01"}}
    )
    assert unconfirmed.status == 202
    aborted = await worker.update(TASK, "ABORTED", {"cause": "UNKNOWN"})
    assert (aborted.status, aborted.text) == (200, "")
    assert scheduler.replicate_history(TASK, worker.wallet) == [
        RS.CREATED, RS.STARTING, RS.STARTED, RS.APP_DOWNLOADING, RS.APP_DOWNLOAD_FAILED, RS.CONTRIBUTING, RS.ABORTED,
    ]  # fmt: skip


# -- interrupted (recovery) ---------------------------------------------------------------------


async def test_interrupted_recovers_and_marks_recovering(
    session: aiohttp.ClientSession, start: Starter
) -> None:
    chain = FakeChain()
    scheduler = await start(chain)
    worker = await joined(session, scheduler)
    await deal_with_task(chain, scheduler)
    await replicate_for(worker)
    for status in ("STARTING", "STARTED", "APP_DOWNLOADING", "APP_DOWNLOADED", "DATA_DOWNLOADING",
                   "DATA_DOWNLOADED", "COMPUTING"):  # fmt: skip
        assert (await worker.update(TASK, status)).status == 200

    answer = await worker.call("GET", "/replicates/interrupted", blockNumber=chain.block.number)
    assert answer.status == 200
    [notification] = answer.json()
    assert notification["chainTaskId"] == TASK
    assert notification["workersAddress"] == [worker.wallet]
    assert notification["taskNotificationType"] == "PLEASE_CONTRIBUTE"
    assert notification["taskNotificationExtra"]["workerpoolAuthorization"]["workerWallet"] == worker.wallet
    assert notification["taskAbortCause"] == "UNKNOWN"
    assert scheduler.replicate_history(TASK, worker.wallet)[-1] is RS.RECOVERING
    # RECOVERING → COMPUTED is allowed (only CREATED and STARTING are not).
    assert (await worker.update(TASK, "COMPUTED", {"exitCode": 0})).json() == "PLEASE_CONTRIBUTE"
    nothing = await WorkerClient(session, scheduler.url, Account.create()).call(
        "GET", "/replicates/interrupted", auth=False, blockNumber=1
    )
    assert nothing.status == 401


# -- compute logs, the task view, the required worker version -------------------------------------


async def test_app_logs_are_kept_per_wallet_tailed_and_out_of_the_history(
    session: aiohttp.ClientSession, start: Starter
) -> None:
    chain = FakeChain()
    scheduler = await start(chain)
    worker = await joined(session, scheduler)
    await deal_with_task(chain, scheduler)
    await replicate_for(worker)
    for status in ("STARTING", "STARTED", "APP_DOWNLOADING", "APP_DOWNLOADED", "DATA_DOWNLOADING",
                   "DATA_DOWNLOADED", "COMPUTING"):  # fmt: skip
        assert (await worker.update(TASK, status)).status == 200
    logs = {"walletAddress": "0x" + "00" * 20, "stdout": "x" * 100_005 + "end", "stderr": "oops"}
    computed = await worker.update(TASK, "COMPUTED", {"exitCode": 3, "computeLogs": logs})
    assert computed.json() == "PLEASE_CONTRIBUTE"

    [(wallet, kept)] = scheduler.task_logs(TASK).items()
    assert wallet == worker.wallet
    assert kept.wallet_address == worker.wallet  # the JWT's wallet, not the one in the body
    assert kept.stdout == ("x" * 100_005 + "end")[-100_000:]
    assert kept.stderr == "oops"
    replicate = scheduler.state.replicate(TASK, worker.wallet)
    assert replicate is not None
    details = replicate.history[-1].details
    assert details is not None
    assert details.exit_code == 3
    assert details.compute_logs is None


async def test_the_task_view_is_public(session: aiohttp.ClientSession, start: Starter) -> None:
    chain = FakeChain()
    scheduler = await start(chain)
    await joined(session, scheduler)  # deals are initialized once a worker is there
    await deal_with_task(chain, scheduler)
    anonymous = WorkerClient(session, scheduler.url, Account.create())
    task = await anonymous.call("GET", f"/tasks/{TASK}", auth=False)
    assert task.status == 200
    assert task.json()["chainTaskId"] == TASK
    assert task.json()["currentStatus"] == "INITIALIZED"
    assert (await anonymous.call("GET", f"/tasks/{chain_task_id(DEAL, 9)}", auth=False)).status == 404


async def test_the_required_worker_version_is_in_the_configuration(
    session: aiohttp.ClientSession, start: Starter
) -> None:
    scheduler = await start(FakeChain(), required_worker_version="9.2.0")
    worker = WorkerClient(session, scheduler.url, Account.create())
    assert (await worker.call("GET", "/workers/config", auth=False)).json()[
        "requiredWorkerVersion"
    ] == "9.2.0"
    scheduler.require_worker_version("")
    assert (await worker.call("GET", "/workers/config", auth=False)).json()["requiredWorkerVersion"] == ""
