"""Unit tests of SchedulerClient against a fake iexec-core served by aiohttp on 127.0.0.1 (conftest.py).

The fake checks the login signature exactly as the real scheduler does; the end-to-end tests
against the development scheduler live with the devnet.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from datetime import timedelta

import aiohttp
import pytest
import rlp  # type: ignore[import-untyped]
from eth_account._utils.legacy_transactions import serializable_unsigned_transaction_from_dict
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr

from tests.support.scheduler_fake import PUBLIC_CONFIGURATION, FakeCore
from worker.protocol.crypto import NotALoginChallenge, is_login_challenge, login_hash, sign_login_challenge
from worker.protocol.errors import SchedulerError
from worker.protocol.models import (
    ChainReceipt,
    ReplicateStatusDetails,
    ReplicateStatusUpdate,
    WorkerModel,
)
from worker.protocol.status import (
    ReplicateStatus,
    ReplicateStatusCause,
    TaskAbortCause,
    TaskNotificationType,
)
from worker.scheduler.client import SchedulerClient, UpdateKind

TASK = "0x" + "7a" * 32
STARTING = ReplicateStatusUpdate(status=ReplicateStatus.STARTING)


def summary(worker: str) -> str:
    return json.dumps(
        {
            "workerpoolAuthorization": {
                "chainTaskId": TASK,
                "dealId": "0x" + "de" * 32,
                "taskIndex": 0,
                "workerWallet": worker,
                "enclaveChallenge": "0x" + "00" * 20,
                "signature": {"value": "0x" + "11" * 65},
            },
            "smsUrl": None,
        }
    )


async def test_public_endpoints_answer_raw_text_and_json(client: SchedulerClient, core: FakeCore) -> None:
    assert await client.get_version() == "9.3.0"
    assert await client.get_public_configuration() == PUBLIC_CONFIGURATION
    chain = await client.get_chain_config(core.url + "/config-server/")
    assert chain.chain_id == 65535
    assert chain.block_time == timedelta(seconds=5)
    assert core.missing_content_type == 0


async def test_login_signs_the_challenge_the_way_the_scheduler_checks_it(
    client: SchedulerClient, core: FakeCore, account: LocalAccount, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.login()

    assert core.logins == 1
    [(token, wallet)] = core.tokens.items()
    assert wallet == account.address.lower()
    assert token not in caplog.text
    assert token not in repr(client)


async def test_authenticated_call_logs_in_first(client: SchedulerClient, core: FakeCore) -> None:
    assert await client.ping() == core.ping_answer
    assert core.logins == 1
    assert core.count("POST /workers/ping") == 1
    assert core.missing_content_type == 0


async def test_refused_token_means_one_new_login_and_a_retry(client: SchedulerClient, core: FakeCore) -> None:
    await client.ping()
    core.restart()

    assert await client.get_computing_tasks() == []

    assert core.logins == 2
    assert core.count("GET /workers/computing") == 2


async def test_concurrent_401s_share_one_login(client: SchedulerClient, core: FakeCore) -> None:

    await client.login()
    core.restart()
    await asyncio.gather(client.ping(), client.get_computing_tasks(), client.get_interrupted(1))
    assert core.logins == 2


async def test_wallet_not_whitelisted_is_a_clear_error(client: SchedulerClient, core: FakeCore) -> None:
    core.whitelist = {"0x" + "99" * 20}
    with pytest.raises(SchedulerError, match=r"not allowed by the scheduler.*whitelist") as caught:
        await client.ping()
    assert caught.value.status == 401


async def test_empty_ping_answer_is_none(client: SchedulerClient, core: FakeCore) -> None:
    core.ping_answer = ""
    assert await client.ping() is None


async def test_register_sends_the_lowercase_wallet(
    client: SchedulerClient, core: FakeCore, account: LocalAccount
) -> None:
    model = WorkerModel(
        name="w1", wallet_address=account.address, os="Linux", cpu="amd64", cpu_nb=3, memory_size=7
    )
    await client.register(model)
    [body] = core.bodies
    assert body == {**model.to_wire(), "walletAddress": account.address.lower()}


async def test_no_work_is_none_and_work_is_a_summary(client: SchedulerClient, core: FakeCore) -> None:
    assert await client.ask_for_replicate(12) is None

    core.available = (200, summary(client.address))
    got = await client.ask_for_replicate(12)
    assert got is not None
    assert got.workerpool_authorization.chain_task_id == TASK
    assert got.workerpool_authorization.worker_wallet == client.address


async def test_scheduler_chain_down_is_an_error_with_status(client: SchedulerClient, core: FakeCore) -> None:
    core.available = (503, "")
    with pytest.raises(SchedulerError, match="out of service") as caught:
        await client.ask_for_replicate(12)
    assert caught.value.status == 503


async def test_interrupted_notifications_tolerate_extra_fields(
    client: SchedulerClient, core: FakeCore
) -> None:
    core.interrupted = json.dumps(
        [
            {
                "chainTaskId": TASK,
                "workersAddress": [client.address],
                "taskNotificationType": "PLEASE_ABORT",
                "taskNotificationExtra": {"blockNumber": 0, "taskAbortCause": "CONSENSUS_REACHED"},
                "taskAbortCause": "CONSENSUS_REACHED",
            }
        ]
    )
    [notification] = await client.get_interrupted(5)
    assert notification.task_notification_type is TaskNotificationType.PLEASE_ABORT
    assert notification.task_abort_cause is TaskAbortCause.CONSENSUS_REACHED
    assert notification.concerns(client.address)


@pytest.mark.parametrize(
    ("answer", "kind", "action", "recorded"),
    [
        (
            (200, '"PLEASE_DOWNLOAD_APP"'),
            UpdateKind.NEXT_ACTION,
            TaskNotificationType.PLEASE_DOWNLOAD_APP,
            True,
        ),
        ((200, ""), UpdateKind.ACCEPTED, None, True),
        ((208, '"PLEASE_WAIT"'), UpdateKind.ALREADY_REPORTED, TaskNotificationType.PLEASE_WAIT, True),
        ((202, '"PLEASE_ABORT"'), UpdateKind.ABORT, TaskNotificationType.PLEASE_ABORT, False),
    ],
)
async def test_update_outcomes(
    client: SchedulerClient,
    core: FakeCore,
    answer: tuple[int, str],
    kind: UpdateKind,
    action: TaskNotificationType | None,
    recorded: bool,
) -> None:
    core.update_answers = [answer]
    outcome = await client.update_status(TASK, STARTING)
    assert (outcome.kind, outcome.action, outcome.recorded) == (kind, action, recorded)
    assert core.count(f"POST /replicates/{TASK}/updateStatus") == 1


async def test_update_body_is_the_java_json(client: SchedulerClient, core: FakeCore) -> None:
    update = ReplicateStatusUpdate(
        status=ReplicateStatus.CONTRIBUTED,
        details=ReplicateStatusDetails(chain_receipt=ChainReceipt(block_number=42, tx_hash="0x" + "ab" * 32)),
    )
    await client.update_status(TASK, update)
    [body] = core.bodies
    assert body == update.to_wire()
    assert body["details"]["chainReceipt"] == {"blockNumber": 42, "txHash": "0x" + "ab" * 32}


async def test_update_retries_5xx_with_growing_backoff(
    client: SchedulerClient, core: FakeCore, delays: list[float]
) -> None:
    core.update_answers = [(503, ""), (500, ""), (503, ""), (503, ""), (200, '"PLEASE_COMPUTE"')]
    outcome = await client.update_status(TASK, STARTING)

    assert outcome.action is TaskNotificationType.PLEASE_COMPUTE
    assert core.count(f"POST /replicates/{TASK}/updateStatus") == 5
    assert delays == [0.5, 1.0, 2.0, 2.0]  # doubles, capped by backoff_max


async def test_update_retries_401_after_a_new_login(client: SchedulerClient, core: FakeCore) -> None:
    await client.login()
    core.restart()
    outcome = await client.update_status(TASK, STARTING)
    assert outcome.kind is UpdateKind.NEXT_ACTION
    assert core.logins == 2


async def test_update_gives_up_at_the_deadline(
    session: aiohttp.ClientSession, core: FakeCore, account: LocalAccount
) -> None:
    now = [1_000.0]

    async def advance(seconds: float) -> None:
        now[0] += seconds

    client = SchedulerClient(
        session, core.url, account, backoff_initial=4, backoff_max=8, sleep=advance, clock=lambda: now[0]
    )
    core.update_answers = [(500, "")] * 10
    with pytest.raises(
        SchedulerError, match="gave up at the deadline after 3 attempts; last error: HTTP 500"
    ) as caught:
        await client.update_status(TASK, STARTING, deadline=1_010.0)
    assert caught.value.status == 500
    # Slept 4 then 6, not 8: the last attempt happens at the deadline, none after it.
    assert now[0] == 1_010.0
    assert core.count(f"POST /replicates/{TASK}/updateStatus") == 3


@pytest.mark.parametrize("status", [400, 403, 404, 409, 429])
async def test_update_client_error_is_retried_as_the_reference_does(
    client: SchedulerClient, core: FakeCore, delays: list[float], status: int
) -> None:
    core.update_answers = [(status, ""), (200, '"PLEASE_DOWNLOAD_APP"')]
    outcome = await client.update_status(TASK, STARTING)
    assert outcome.action is TaskNotificationType.PLEASE_DOWNLOAD_APP
    assert core.count(f"POST /replicates/{TASK}/updateStatus") == 2
    assert delays == [0.5]


async def test_update_client_error_gives_up_at_the_deadline_naming_it(
    session: aiohttp.ClientSession, core: FakeCore, account: LocalAccount
) -> None:
    now = [0.0]

    async def advance(seconds: float) -> None:
        now[0] += seconds

    client = SchedulerClient(
        session, core.url, account, backoff_initial=1, sleep=advance, clock=lambda: now[0]
    )
    core.update_answers = [(400, "")] * 10
    with pytest.raises(SchedulerError, match=r"gave up at the deadline.*HTTP 400") as caught:
        await client.update_status(TASK, STARTING, deadline=3.0)
    assert caught.value.status == 400


async def test_unreachable_scheduler_is_a_scheduler_error(
    session: aiohttp.ClientSession, account: LocalAccount, delays: list[float]
) -> None:
    # Port 9 (discard) on loopback: nothing listens there, the connection is refused at once.
    client = SchedulerClient(session, "http://127.0.0.1:9", account)
    with pytest.raises(SchedulerError, match="is up and reachable") as caught:
        await client.get_version()
    assert caught.value.status is None


async def test_unreachable_scheduler_update_is_retried_until_the_deadline(
    session: aiohttp.ClientSession, account: LocalAccount
) -> None:
    now = [0.0]

    async def advance(seconds: float) -> None:
        now[0] += seconds

    client = SchedulerClient(
        session, "http://127.0.0.1:9", account, backoff_initial=1, sleep=advance, clock=lambda: now[0]
    )
    update = ReplicateStatusUpdate(
        status=ReplicateStatus.COMPUTE_FAILED,
        details=ReplicateStatusDetails(cause=ReplicateStatusCause.APP_COMPUTE_FAILED),
    )
    with pytest.raises(SchedulerError, match="gave up at the deadline") as caught:
        await client.update_status(TASK, update, deadline=10.0)
    assert caught.value.status is None


def _unsigned_transfer() -> tuple[str, str]:
    """RLP of an unsigned EIP-155 transfer, as hex text, and the hash a wallet signs to send it."""
    tx = serializable_unsigned_transaction_from_dict(
        {"nonce": 0, "gasPrice": 10**9, "gas": 21000, "to": HexStr("0x" + "66" * 20), "value": 10**18, "data": b"",
         "chainId": 134}
    )  # fmt: skip
    return "0x" + rlp.encode(tx).hex(), "0x" + tx.hash().hex()


@pytest.mark.parametrize(
    "challenge",
    ["transaction", "0x" + "ab" * 32, "k3J+Zq9/AbCdEfGh0123456789xyzXYZ+/abcdefghJ=", "A" * 44, ""],
)
async def test_login_refuses_to_sign_what_is_not_a_challenge(
    client: SchedulerClient, core: FakeCore, challenge: str
) -> None:
    if challenge == "transaction":
        challenge, tx_hash = _unsigned_transfer()
        # Without the shape check the worker's raw login signature would sign this transfer.
        assert login_hash(challenge) == tx_hash
    core.challenge_text = challenge

    with pytest.raises(SchedulerError, match=r"not a login challenge .* nothing was signed"):
        await client.login()

    assert core.count("POST /workers/login") == 0
    assert not client.logged_in


def test_the_challenge_shape_is_what_the_scheduler_issues() -> None:
    for _ in range(50):
        assert is_login_challenge(base64.b64encode(secrets.token_bytes(32)).decode())
    with pytest.raises(NotALoginChallenge):
        sign_login_challenge("0x" + "ab" * 32, "0x" + "11" * 32)


async def test_an_offer_with_a_malformed_task_id_is_a_scheduler_error_not_a_crash(
    client: SchedulerClient, core: FakeCore, account: LocalAccount
) -> None:
    body = json.loads(summary(account.address.lower()))
    body["workerpoolAuthorization"]["chainTaskId"] = "0x" + "zz" * 32
    core.available = (200, json.dumps(body))

    with pytest.raises(SchedulerError, match="chainTaskId"):
        await client.ask_for_replicate(1)


async def test_task_ids_are_normalised_once_where_they_are_read(
    client: SchedulerClient, core: FakeCore, account: LocalAccount
) -> None:
    body = json.loads(summary(account.address.lower()))
    body["workerpoolAuthorization"]["chainTaskId"] = TASK.upper().replace("0X", "0x")
    core.available = (200, json.dumps(body))
    core.computing = json.dumps([TASK.upper().replace("0X", "0x")])

    offer = await client.ask_for_replicate(1)

    assert offer is not None
    assert offer.workerpool_authorization.chain_task_id == TASK
    assert await client.get_computing_tasks() == [TASK]


async def test_one_malformed_interrupted_notification_does_not_hide_the_others(
    client: SchedulerClient, core: FakeCore, caplog: pytest.LogCaptureFixture
) -> None:
    good = {"chainTaskId": TASK, "workersAddress": [], "taskNotificationType": "PLEASE_CONTINUE"}
    core.interrupted = json.dumps(
        [{**good, "chainTaskId": "not-a-task"}, {**good, "taskNotificationType": "PLEASE_EXPLODE"}, good]
    )

    notifications = await client.get_interrupted(1)

    assert [n.chain_task_id for n in notifications] == [TASK]
    assert caplog.text.count("unreadable notification skipped") == 2


async def test_an_endless_answer_is_cut_at_the_limit(client: SchedulerClient, core: FakeCore) -> None:
    core.computing = json.dumps(["0x" + "00" * 32] * 80_000)  # about 5.5 MB, above the 4 MiB bound

    with pytest.raises(SchedulerError, match="larger than"):
        await client.get_computing_tasks()
