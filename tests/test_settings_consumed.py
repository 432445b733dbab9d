"""No setting is accepted and then ignored: every key of ``worker/config.py`` has a consumer, checked here.

``CONSUMERS`` names, for every environment key the worker reads, what happens to it:
- ``Reads(function)``: that function of the worker reads the field (checked on its source), and when it
  is a property or a helper of ``worker.config`` (``via``), the value it produces is itself read outside
  ``worker.config``;
A key added to the settings without an entry here fails ``test_every_setting_has_a_consumer``; an entry
whose consumer stops reading the field fails ``test_each_consumer_reads_its_field``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from worker.config import known_keys

ROOT = Path(__file__).resolve().parent.parent
POOL = "0xC0FFEE0000000000000000000000000000000001"


@dataclass(frozen=True)
class Reads:
    consumer: str
    """``module:qualified.name`` of the function or property that reads the field."""
    via: str | None = None
    """The attribute a ``worker.config`` consumer produces, which code outside ``worker.config`` must read."""


APP = "worker.app:_membership"
WORK = "worker.config:Settings.work_settings"
SANDBOX = "worker.config:Settings.app_sandbox"
TEE = "worker.tee_wiring:open_tee"
DETECT = "worker.tee_wiring:tee_capabilities"
CONSUMERS: dict[str, Reads] = {
    "IEXEC_CORE_URL": Reads(APP),
    "POOL_ADDRESS": Reads(APP),
    "IEXEC_WORKER_MISSED_NEWS_PERIOD": Reads(APP),
    "IEXEC_WORKER_NAME": Reads(APP),
    "IEXEC_WORKER_BASE_DIR": Reads("worker.app:run_worker"),
    "IEXEC_WORKER_BASE_DIR_MIN_FREE_BYTES": Reads(APP),
    "IEXEC_WORKER_DB_PATH": Reads("worker.config:NodeSettings.state_db", via="state_db"),
    "IEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT": Reads(
        "worker.config:load_settings", via="available_cpu_count"
    ),
    "IEXEC_WORKER_GPU_ENABLED": Reads(APP),
    "IEXEC_WORKER_HTTP_HOST": Reads("worker.app:run_worker"),
    "IEXEC_WORKER_PORT": Reads("worker.app:run_worker"),
    "IEXEC_WORKER_METRICS_WINDOW_SIZE": Reads("worker.app:run_worker"),
    "IEXEC_WORKER_PROTOCOL_VERSION": Reads(APP),
    "IEXEC_GAS_PRICE_MULTIPLIER": Reads(APP),
    "IEXEC_GAS_PRICE_CAP": Reads(APP),
    "IEXEC_WORKER_OVERRIDE_BLOCKCHAIN_NODE_ADDRESS": Reads(
        "worker.config:ChainSettings.node_urls", via="node_urls"
    ),
    "IEXEC_WORKER_BLOCKCHAIN_NODE_ADDRESSES": Reads("worker.config:ChainSettings.node_urls", via="node_urls"),
    "IEXEC_WORKER_MAX_BLOCK_LAG": Reads(APP),
    "IEXEC_WORKER_TX_REPLACE_AFTER": Reads(APP),
    "IEXEC_WORKER_TX_CONFIRMATIONS": Reads(APP),
    "IEXEC_WORKER_CHAIN_REQUEST_TIMEOUT": Reads(APP),
    "IEXEC_WORKER_CHAIN_POLL_PERIOD": Reads(APP),
    "IEXEC_WORKER_WALLET_PATH": Reads("worker.config:_wallet_path", via="wallet_path"),
    "IEXEC_WORKER_WALLET_PASSWORD": Reads("worker.config:_wallet_password", via="wallet_password"),
    "IEXEC_WORKER_WALLET_PASSWORD_FILE": Reads("worker.config:_wallet_password", via="wallet_password"),
    "IEXEC_WORKER_DOCKER_NETWORK_NAME": Reads(APP),
    "WORKER_DOCKER_EXTRA_HOSTS": Reads(TEE),
    "IEXEC_WORKER_DOCKER_REGISTRY_USERNAME_0": Reads(
        "worker.config:DockerSettings.registries", via="registries"
    ),
    "IEXEC_WORKER_DOCKER_REGISTRY_PASSWORD_0": Reads(
        "worker.config:DockerSettings.registries", via="registries"
    ),
    "IEXEC_WORKER_DOCKER_REGISTRY_ADDRESS_1": Reads(
        "worker.config:DockerSettings.registries", via="registries"
    ),
    "IEXEC_WORKER_DOCKER_REGISTRY_USERNAME_1": Reads(
        "worker.config:DockerSettings.registries", via="registries"
    ),
    "IEXEC_WORKER_DOCKER_REGISTRY_PASSWORD_1": Reads(
        "worker.config:DockerSettings.registries", via="registries"
    ),
    "IEXEC_WORKER_DOCKER_IMAGE_MIN_PULL_TIMEOUT": Reads(WORK, via="work_settings"),
    "IEXEC_WORKER_DOCKER_IMAGE_MAX_PULL_TIMEOUT": Reads(WORK, via="work_settings"),
    "IEXEC_WORKER_CONTAINER_MEMORY_LIMIT": Reads(SANDBOX, via="work_settings"),
    "IEXEC_WORKER_CONTAINER_PIDS_LIMIT": Reads(SANDBOX, via="work_settings"),
    "IEXEC_WORKER_CONTAINER_CPU_LIMIT": Reads(SANDBOX, via="work_settings"),
    "IEXEC_WORKER_DATA_MAX_BYTES": Reads(WORK, via="work_settings"),
    "IEXEC_WORKER_DATA_DOWNLOAD_TIMEOUT": Reads(WORK, via="work_settings"),
    "IEXEC_WORKER_DATA_STALL_TIMEOUT": Reads(WORK, via="work_settings"),
    "IEXEC_WORKER_DATA_MAX_REDIRECTS": Reads(WORK, via="work_settings"),
    "IEXEC_WORKER_IPFS_GATEWAYS": Reads(WORK, via="work_settings"),
    "IEXEC_WORKER_RESULT_MAX_BYTES": Reads(WORK, via="work_settings"),
    "IEXEC_WORKER_RESULT_UPLOAD_TIMEOUT": Reads(WORK, via="work_settings"),
    "IEXEC_WORKER_RESULT_UPLOAD_ATTEMPTS": Reads(WORK, via="work_settings"),
    "IEXEC_WORKER_SANDBOX_PROFILE": Reads(APP),
    "IEXEC_WORKER_NETWORK_ALLOWLIST": Reads(APP),
    "IEXEC_WORKER_FIREWALL_IMAGE": Reads(APP),
    "IEXEC_WORKER_CONTAINER_OUTPUT_MAX_BYTES": Reads(SANDBOX, via="work_settings"),
    "IEXEC_WORKER_SGX_DRIVER_MODE": Reads(DETECT),
    "IEXEC_WORKER_SGX_DEVICES": Reads(DETECT),
    "IEXEC_WORKER_SGX_CHECK_IMAGE": Reads(DETECT),
    "IEXEC_WORKER_TDX_ENABLED": Reads(DETECT),
    "IEXEC_WORKER_TEE_COMPUTE_MAX_HEAP_SIZE_GB": Reads(TEE),
    "IEXEC_SCONE_SHOW_VERSION": Reads(TEE),
    "IEXEC_SCONE_LOG_LEVEL": Reads(TEE),
    "IEXEC_WORKER_SCONTAIN_REGISTRY_NAME": Reads(TEE),
    "IEXEC_WORKER_SCONTAIN_REGISTRY_USERNAME": Reads(TEE),
    "IEXEC_WORKER_SCONTAIN_REGISTRY_PASSWORD": Reads(TEE),
    "IEXEC_LAS_PORT": Reads(TEE),
    "IEXEC_WORKER_ENCLAVE_NETWORK_NAME": Reads(TEE),
    "IEXEC_WORKER_ENCLAVE_ENDPOINT_HOST": Reads(TEE),
    "TEE_TDX_SECRET_PROVIDER_AGENT": Reads("worker.config:TeeSettings.agent_path", via="agent_path"),
    "TEE_TDX_SECRETPROVIDERAGENT": Reads("worker.config:TeeSettings.agent_path", via="agent_path"),
    "IEXEC_LOG_LEVEL": Reads("worker.cli:cmd_run"),
    "IEXEC_WORKER_LOG_JSON": Reads("worker.cli:cmd_run"),
    "IEXEC_DEVELOPER_LOGGER_ENABLED": Reads(WORK, via="work_settings"),
    "IEXEC_HTTP_PROXY_HOST": Reads("worker.config:ProxySettings.routes", via="routes"),
    "IEXEC_HTTP_PROXY_PORT": Reads("worker.config:ProxySettings.routes", via="routes"),
    "IEXEC_HTTPS_PROXY_HOST": Reads("worker.config:ProxySettings.routes", via="routes"),
    "IEXEC_HTTPS_PROXY_PORT": Reads("worker.config:ProxySettings.routes", via="routes"),
    "IEXEC_WORKER_NON_PROXY_HOSTS": Reads("worker.config:ProxySettings.routes", via="routes"),
}


def _function(path: str) -> ast.AST:
    module_name, qualified = path.split(":")
    target: object = importlib.import_module(module_name)
    for part in qualified.split("."):
        target = getattr(target, part)
    if isinstance(target, property):
        assert target.fget is not None
        target = target.fget
    source = textwrap.dedent(inspect.getsource(target))  # type: ignore[arg-type]
    return ast.parse(source)


def _attributes_read(tree: ast.AST) -> set[str]:
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}


def _read_outside_config() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "worker").rglob("*.py"):
        if path.name == "config.py" and path.parent.name == "worker":
            continue
        found |= _attributes_read(ast.parse(path.read_text()))
    return found


def test_every_setting_has_a_consumer() -> None:
    missing = sorted(set(known_keys()) - set(CONSUMERS))
    stale = sorted(set(CONSUMERS) - set(known_keys()))
    assert not missing, (
        f"settings without a consumer in CONSUMERS (read them, or refuse them at start): {missing}"
    )
    assert not stale, f"CONSUMERS names keys the worker does not read: {stale}"


@pytest.mark.parametrize("key", sorted(CONSUMERS))
def test_each_consumer_reads_its_field(key: str) -> None:
    entry = CONSUMERS[key]
    _, field = known_keys()[key]
    assert field in _attributes_read(_function(entry.consumer)), (
        f"{entry.consumer} does not read .{field} ({key})"
    )
    if entry.via is not None:
        assert entry.via in _read_outside_config(), (
            f"{entry.via} (from {key}) is never read outside worker.config"
        )
    else:
        assert not entry.consumer.startswith("worker.config:"), f"{key}: a worker.config consumer needs a via"
