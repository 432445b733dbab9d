"""Joining the pool, driven by fakes (unit tests: no service)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from tests.membership.fakes import WALLET, FakeChain
from worker.membership import FundsWatch, Health, join_pool
from worker.membership.join import Joined, StopRequested, retry_until_stopped
from worker.metrics import Metrics
from worker.protocol.errors import ConfigurationError, SchedulerError
from worker.protocol.models import PublicChainConfig, PublicConfiguration, WorkerModel

PUBLIC = PublicConfiguration(
    worker_pool_address="0x" + "ab" * 20, scheduler_public_address="0x" + "cd" * 20,
    config_server_url="http://127.0.0.1:1", result_repository_url="http://127.0.0.1:2",
    ask_for_replicate_period=5000,
)  # fmt: skip
CHAIN = PublicChainConfig(
    chain_id=65535, chain_node_url="http://127.0.0.1:8545", iexec_hub_contract_address="0x" + "12" * 20
)
MODEL = WorkerModel(name="w", wallet_address=WALLET, os="Linux", cpu="x86_64", cpu_nb=3, memory_size=8)


@dataclass
class JoiningScheduler:
    public: PublicConfiguration = PUBLIC
    failures_before_answer: int = 0
    calls: list[str] = field(default_factory=list)

    async def get_public_configuration(self) -> PublicConfiguration:
        self.calls.append("config")
        if self.failures_before_answer:
            self.failures_before_answer -= 1
            raise SchedulerError("connection refused")
        return self.public

    async def get_chain_config(self, config_server_url: str) -> PublicChainConfig:
        self.calls.append(f"chain-config:{config_server_url}")
        return CHAIN

    async def login(self) -> None:
        self.calls.append("login")

    async def get_version(self) -> str:
        self.calls.append("version")
        return "9.3.0"

    async def register(self, model: WorkerModel) -> None:
        self.calls.append(f"register:{model.cpu_nb}")


class JoiningChain(FakeChain):
    node_chain_id: int = 65535

    @property
    def rpc_url(self) -> str:
        return "http://127.0.0.1:8545"

    async def chain_id(self) -> int:
        return self.node_chain_id


async def join(
    scheduler: JoiningScheduler, chain: JoiningChain, health: Health, metrics: Metrics
) -> Joined[JoiningChain]:
    async def connect(_: PublicChainConfig) -> JoiningChain:
        return chain

    def funds(c: JoiningChain, config: PublicChainConfig) -> FundsWatch:
        return FundsWatch(
            c, health, metrics, wallet=WALLET, gas_price_cap=1, sidechain=config.sidechain, period=1
        )

    return await join_pool(
        scheduler, connect, MODEL, funds, health, metrics, asyncio.Event(), worker_version="1.0"
    )


async def test_joining_follows_the_reference_order_and_declares_the_slots() -> None:
    scheduler, health, metrics = JoiningScheduler(), Health(), Metrics()
    joined = await join(scheduler, JoiningChain(balances={WALLET: 10**6}), health, metrics)
    # The version is read while the worker logs in and registers: only login before register is ordered.
    assert scheduler.calls[:2] == ["config", "chain-config:http://127.0.0.1:1"]
    assert sorted(scheduler.calls[2:]) == ["login", "register:3", "version"]
    assert scheduler.calls.index("login") < scheduler.calls.index("register:3")
    assert health.joined
    assert not health.out_of_gas
    assert metrics.registry.get_sample_value("iexec_worker_slots") == 3
    assert joined.core_version == "9.3.0"


async def test_a_node_on_another_chain_stops_the_start_naming_the_setting() -> None:
    chain = JoiningChain()
    chain.node_chain_id = 1
    with pytest.raises(ConfigurationError, match="IEXEC_WORKER_OVERRIDE_BLOCKCHAIN_NODE_ADDRESS"):
        await join(JoiningScheduler(), chain, Health(), Metrics())


async def test_a_required_worker_version_other_than_ours_stops_the_start() -> None:
    scheduler = JoiningScheduler(public=PUBLIC.model_copy(update={"required_worker_version": "9.2.0"}))
    with pytest.raises(ConfigurationError, match=r"requires worker version 9\.2\.0"):
        await join(scheduler, JoiningChain(), Health(), Metrics())


async def test_an_empty_wallet_joins_but_is_out_of_gas() -> None:
    health = Health()
    await join(JoiningScheduler(), JoiningChain(), health, Metrics())
    assert health.joined
    assert health.out_of_gas


async def test_a_scheduler_down_at_start_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler = JoiningScheduler(failures_before_answer=2)
    monkeypatch.setattr("worker.membership.join.FIRST_RETRY_DELAY", 0.001)
    answer = await retry_until_stopped("read", scheduler.get_public_configuration, asyncio.Event())
    assert answer == PUBLIC
    assert scheduler.calls == ["config"] * 3


async def test_a_stop_during_the_wait_ends_the_retries() -> None:
    scheduler = JoiningScheduler(failures_before_answer=100)
    stop = asyncio.Event()
    stop.set()
    with pytest.raises(StopRequested):
        await retry_until_stopped("read", scheduler.get_public_configuration, stop)
    assert scheduler.calls == []


async def test_a_stop_while_the_scheduler_is_down_ends_the_wait() -> None:
    scheduler = JoiningScheduler(failures_before_answer=100)
    stop = asyncio.Event()
    waiting = asyncio.create_task(retry_until_stopped("read", scheduler.get_public_configuration, stop))
    await asyncio.sleep(0.05)
    stop.set()
    with pytest.raises(StopRequested):
        await asyncio.wait_for(waiting, 5)
    assert scheduler.calls == ["config"]


@dataclass
class FlakyScheduler(JoiningScheduler):
    """Fails each call of the sign-in a number of times first, as a scheduler still starting does."""

    failing: dict[str, int] = field(default_factory=dict)

    def _maybe_fail(self, name: str) -> None:
        if self.failing.get(name, 0) > 0:
            self.failing[name] -= 1
            self.calls.append(f"{name}-failed")
            raise SchedulerError(f"POST /{name} failed; check that the scheduler is up", status=503)

    async def login(self) -> None:
        self._maybe_fail("login")
        await super().login()

    async def get_version(self) -> str:
        self._maybe_fail("version")
        return await super().get_version()

    async def register(self, model: WorkerModel) -> None:
        self._maybe_fail("register")
        await super().register(model)


async def test_login_version_and_register_are_retried(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("worker.membership.join.FIRST_RETRY_DELAY", 0.001)
    scheduler = FlakyScheduler(failing={"login": 2, "version": 1, "register": 1})
    health = Health()
    joined = await join(scheduler, JoiningChain(), health, Metrics())
    assert joined.core_version == "9.3.0"
    assert health.joined
    assert scheduler.calls.count("login-failed") == 2
    assert scheduler.calls.count("register-failed") == 1
    assert "cannot log in yet, attempt 2" in caplog.text
    assert "check that the scheduler is up and that IEXEC_CORE_URL points to it" in caplog.text
