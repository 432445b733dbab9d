"""The push channel (STOMP over SockJS) cut for the whole life of a task: the development scheduler
refuses its ``/connect`` endpoint (devnet/core/faults.py) from before the worker starts until the task
is over. PLEASE_REVEAL comes from the chain watcher, PLEASE_UPLOAD and PLEASE_COMPLETE from the
worker's poll for missed news (worker/membership/missed.py); the task completes with one contribute
and one reveal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from devnet.core import FaultRule
from devnet.platform import Platform
from tests.faults.process_checks import (
    assert_completed_once,
    buy_sleep,
    log_text,
    nonce,
    until_completed,
    worker_folder,
)
from tests.support.e2e import worker_process

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest_asyncio.fixture(loop_scope="session")
async def push_refused(platform: Platform) -> AsyncIterator[FaultRule]:
    rule = platform.scheduler.faults.add(FaultRule(status=404, prefix="/connect"))
    await platform.scheduler.broker.drop_sessions()  # nobody keeps a session opened before the cut
    try:
        yield rule
    finally:
        platform.scheduler.faults.remove(rule)


async def test_push_channel_cut_for_the_whole_task_polling_carries_it_to_completed(
    platform: Platform, push_refused: FaultRule, tmp_path: Path
) -> None:
    folder = worker_folder(platform, tmp_path, IEXEC_WORKER_MISSED_NEWS_PERIOD="PT3S")
    before = await nonce(platform, folder.wallet)
    log = tmp_path / "worker.log"
    async with worker_process(folder.env_file, log) as worker:
        await worker.until(lambda: "joined scheduler" in log_text(log), within=90, every=0.2, what="joined")
        task_id = await buy_sleep(platform, 0)
        await until_completed(platform, worker, folder, task_id)
        await worker.stop()
    text = log_text(log)
    assert push_refused.hits > 0  # the worker kept trying the channel, never got it
    assert "PLEASE_COMPLETE found by polling while the push channel is down" in text
    await assert_completed_once(platform, folder, task_id, before)
