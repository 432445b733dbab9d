"""Secrets stay out of logs, errors and ``/health``: a node URL with an API key that answers 401 (a real
HTTP server on 127.0.0.1), the password taken out of the environment, configuration errors.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from web3 import AsyncHTTPProvider, AsyncWeb3

from tests.support import serving_app
from worker.chain import ChainClient
from worker.config import known_keys, load_settings, scrub_environment
from worker.http import create_http_app
from worker.logs import setup_logging
from worker.membership import FundsWatch, Health
from worker.metrics import Metrics
from worker.protocol.errors import ChainError, ConfigurationError
from worker.protocol.redact import forget_secrets, redact, register_url_secrets

API_KEY = "k3y-0f-the-0perator-9f8e7d6c"
QUERY_KEY = "qu3ry-s3cret-1a2b3c"
HUB = "0x" + "12" * 20


@pytest.fixture(autouse=True)
def _fresh_secrets() -> Iterator[None]:
    forget_secrets()
    yield
    forget_secrets()


def refusing_node() -> web.Application:
    async def refuse(_: web.Request) -> web.Response:
        return web.Response(status=401, text="invalid project id")

    app = web.Application()
    app.router.add_post("/{tail:.*}", refuse)
    return app


async def test_a_node_url_with_a_key_that_answers_401_leaks_nowhere(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    async with serving_app(refusing_node()) as base:
        node_url = f"{base}/v3/{API_KEY}?apikey={QUERY_KEY}"
        with pytest.raises(ChainError) as refused:
            await ChainClient.connect(node_url, HUB)
        error = str(refused.value)
        assert "401" in error
        # A library that logs the whole URL, and the worker's own log of the error, through the real formatter.
        setup_logging("INFO")
        logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("aiohttp.client").warning("POST %s failed", node_url)
        logging.getLogger("iexec.worker").error("chain: %s", refused.value, exc_info=refused.value)
        # /health, served by the worker's HTTP app, after the funds watch met the same node.
        health = Health()
        async with ChainClient([(AsyncWeb3(AsyncHTTPProvider(node_url)), node_url)], HUB) as chain:
            watch = FundsWatch(chain, health, Metrics(), wallet="0x" + "aa" * 20, gas_price_cap=1, sidechain=True,
                               period=1)  # fmt: skip
            await watch.check()
        async with (
            serving_app(create_http_app(Metrics(), health)) as worker_http,
            aiohttp.ClientSession() as session,
            session.get(f"{worker_http}/health") as answer,
        ):
            body = await answer.text()
    logging.getLogger().handlers.clear()
    assert "node unreachable" in body
    for text in (error, stream.getvalue(), body):
        assert API_KEY not in text
        assert QUERY_KEY not in text
    assert "127.0.0.1" in error  # the node is still named, by its origin


def test_redact_masks_registered_secrets_and_url_credentials() -> None:
    register_url_secrets(f"https://rpc.example.com/v3/{API_KEY}")
    text = f"ClientResponseError: 401, url='https://user:pw@rpc.example.com/v3/{API_KEY}?token=abc'"
    shown = redact(text)
    assert API_KEY not in shown
    assert "pw" not in shown
    assert "token=abc" not in shown
    assert "rpc.example.com" in shown


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(os.environ):
        if key.startswith("IEXEC_") or key in known_keys():
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    keystore = tmp_path / "wallet.json"
    keystore.write_text("{}")
    keystore.chmod(0o600)
    monkeypatch.setenv("POOL_ADDRESS", "0x" + "ab" * 20)
    monkeypatch.setenv("IEXEC_WORKER_WALLET_PATH", str(keystore))
    return keystore


def test_the_password_leaves_the_environment_once_read(
    monkeypatch: pytest.MonkeyPatch, worker_env: Path
) -> None:
    monkeypatch.setenv("IEXEC_WORKER_WALLET_PASSWORD", "p4ssw0rd-in-env")
    monkeypatch.setenv("IEXEC_WORKER_DOCKER_REGISTRY_USERNAME_0", "alice")
    monkeypatch.setenv("IEXEC_WORKER_DOCKER_REGISTRY_PASSWORD_0", "hub-t0ken-secret")

    settings = load_settings(host_cpus=2)
    removed = scrub_environment()

    assert settings.wallet_password.get_secret_value() == "p4ssw0rd-in-env"
    assert set(removed) == {"IEXEC_WORKER_WALLET_PASSWORD", "IEXEC_WORKER_DOCKER_REGISTRY_PASSWORD_0"}
    assert "IEXEC_WORKER_WALLET_PASSWORD" not in os.environ
    assert "p4ssw0rd-in-env" not in redact("login failed with p4ssw0rd-in-env")


def test_configuration_errors_do_not_quote_a_node_key(
    monkeypatch: pytest.MonkeyPatch, worker_env: Path
) -> None:
    monkeypatch.setenv("IEXEC_WORKER_WALLET_PASSWORD", "p4ssw0rd-in-env")
    monkeypatch.setenv("IEXEC_WORKER_OVERRIDE_BLOCKCHAIN_NODE_ADDRESS", f"ftp://rpc.example.com/v3/{API_KEY}")

    with pytest.raises(ConfigurationError) as refused:
        load_settings(host_cpus=2)

    assert "IEXEC_WORKER_OVERRIDE_BLOCKCHAIN_NODE_ADDRESS" in str(refused.value)
    assert API_KEY not in str(refused.value)
