"""``GET /tasks/{id}``, the scheduler's public view of a task, as the client reads it (a local aiohttp server)."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from eth_account.signers.local import LocalAccount

from tests.support import serving_app
from worker.protocol.errors import SchedulerError
from worker.scheduler.client import SchedulerClient

TASK = "0x" + "ab" * 32


def _core(answers: dict[str, web.Response]) -> web.Application:
    async def task(request: web.Request) -> web.Response:
        return answers[request.match_info["id"]]

    app = web.Application()
    app.router.add_get("/tasks/{id}", task)
    return app


async def test_the_task_status_is_read_without_logging_in(
    session: aiohttp.ClientSession, account: LocalAccount
) -> None:
    answers = {
        TASK: web.json_response(
            {"chainTaskId": TASK, "currentStatus": "CONSENSUS_REACHED", "replicates": []}
        ),
        "0x00": web.Response(status=404),
    }
    async with serving_app(_core(answers)) as url:
        client = SchedulerClient(session, url, account)
        assert await client.get_task_status(TASK) == "CONSENSUS_REACHED"
        assert await client.get_task_status("0x00") is None


async def test_a_broken_answer_is_a_scheduler_error(
    session: aiohttp.ClientSession, account: LocalAccount
) -> None:
    answers = {TASK: web.Response(status=500, text="oops"), "0x01": web.Response(text="not json")}
    async with serving_app(_core(answers)) as url:
        client = SchedulerClient(session, url, account)
        with pytest.raises(SchedulerError, match="HTTP 500"):
            await client.get_task_status(TASK)
        with pytest.raises(SchedulerError, match="not JSON"):
            await client.get_task_status("0x01")
