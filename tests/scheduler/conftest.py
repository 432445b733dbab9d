"""Fixtures of the scheduler client's tests: the fake iexec-core of tests/support/scheduler_fake.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from tests.support import serving_app
from tests.support.scheduler_fake import WORKER_KEY, FakeCore
from worker.scheduler.client import SchedulerClient


@pytest.fixture
def account() -> LocalAccount:
    worker: LocalAccount = Account.from_key(WORKER_KEY)
    return worker


@pytest.fixture
async def core() -> AsyncIterator[FakeCore]:
    fake = FakeCore()
    async with serving_app(fake.app()) as url:
        fake.url = url
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def delays() -> list[float]:
    return []


@pytest.fixture
def client(
    core: FakeCore, session: aiohttp.ClientSession, account: LocalAccount, delays: list[float]
) -> SchedulerClient:
    async def record_sleep(seconds: float) -> None:
        # Backoff pauses are recorded, not waited: the retry tests stay fast and deterministic.
        delays.append(seconds)

    return SchedulerClient(
        session, core.url, account, backoff_initial=0.5, backoff_max=2.0, sleep=record_sleep
    )
