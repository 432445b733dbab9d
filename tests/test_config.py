"""Unit tests of worker.config: environment and .env parsing, reference defaults, refusals."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from worker.config import Settings, host_cpu_count, known_keys, load_settings
from worker.protocol.errors import ConfigurationError

ROOT = Path(__file__).resolve().parent.parent
POOL = "0xC0FFEE0000000000000000000000000000000001"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Settings come from the process environment: start every test from none of ours, in a folder without .env.
    for key in list(os.environ):
        if key.startswith("IEXEC_") or key in known_keys():
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def wallet_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    keystore = tmp_path / "wallet.json"
    keystore.write_text("{}")
    keystore.chmod(0o600)
    monkeypatch.setenv("POOL_ADDRESS", POOL)
    monkeypatch.setenv("IEXEC_WORKER_WALLET_PATH", str(keystore))
    monkeypatch.setenv("IEXEC_WORKER_WALLET_PASSWORD", "s3cret-password")
    return keystore


def test_defaults_are_those_of_the_reference_worker(wallet_env: Path) -> None:
    settings = load_settings(host_cpus=4)

    assert settings.scheduler.core_url == "http://localhost:13000"
    assert settings.scheduler.pool_address == POOL.lower()
    assert settings.node.name == "worker"
    assert settings.node.base_dir == Path("/tmp/iexec-worker")
    assert settings.node.port == 13100
    assert settings.node.http_host == "127.0.0.1"  # unauthenticated endpoints: loopback unless asked
    assert settings.node.gpu_enabled is False
    assert settings.node.metrics_window_size == 1000
    assert settings.node.protocol_version == "9.2.0"
    assert settings.proxy.routes().enabled is False
    assert settings.proxy.non_proxy_hosts == "localhost|127.*|[::1]|0.0.0.0|[::0]"
    assert settings.chain.gas_price_multiplier == 1.3
    assert settings.chain.gas_price_cap == 22_000_000_000
    assert settings.chain.override_blockchain_node_address is None
    assert settings.log.developer_logger_enabled is False
    assert settings.log.level == "INFO"
    assert settings.docker.network_name == "iexec-worker-net"
    assert settings.docker.min_pull_timeout == timedelta(minutes=5)
    assert settings.docker.max_pull_timeout == timedelta(minutes=30)
    assert settings.docker.registries == []
    assert settings.tee.las_port == 18766
    assert settings.tee.compute_max_heap_size_gb == 8
    assert settings.available_cpu_count == 3  # max(nproc - 1, 1)
    assert settings.node.state_db == Path("/tmp/iexec-worker/worker.sqlite3")
    assert settings.wallet_path == wallet_env
    assert settings.wallet_password.get_secret_value() == "s3cret-password"


def test_environment_values_are_parsed(
    monkeypatch: pytest.MonkeyPatch, wallet_env: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("IEXEC_CORE_URL", "http://127.0.0.1:13000/")
    monkeypatch.setenv("IEXEC_WORKER_NAME", "w1")
    monkeypatch.setenv("IEXEC_WORKER_BASE_DIR", str(tmp_path / "base"))
    monkeypatch.setenv("IEXEC_WORKER_GPU_ENABLED", "true")
    monkeypatch.setenv("IEXEC_GAS_PRICE_MULTIPLIER", "2.5")
    monkeypatch.setenv("IEXEC_WORKER_DOCKER_IMAGE_MAX_PULL_TIMEOUT", "PT1H")
    monkeypatch.setenv("IEXEC_WORKER_CONTAINER_MEMORY_LIMIT", "512m")
    monkeypatch.setenv("IEXEC_WORKER_DOCKER_REGISTRY_USERNAME_0", "alice")
    monkeypatch.setenv("IEXEC_WORKER_DOCKER_REGISTRY_PASSWORD_0", "hub-token")
    monkeypatch.setenv("IEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT", "")  # empty means default, as in Spring

    settings = load_settings(host_cpus=8)

    assert settings.scheduler.core_url == "http://127.0.0.1:13000"
    assert settings.node.task_root == tmp_path / "base" / "w1"
    assert settings.node.state_db == tmp_path / "base" / "w1.sqlite3"
    assert settings.node.gpu_enabled is True
    assert settings.chain.gas_price_multiplier == 2.5
    assert settings.docker.max_pull_timeout == timedelta(hours=1)
    assert settings.docker.container_memory_limit == 512 * 1024 * 1024
    [registry] = settings.docker.registries
    assert (registry.address, registry.username) == ("docker.io", "alice")
    assert "hub-token" not in repr(settings)
    assert settings.available_cpu_count == 7


def test_env_file_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, wallet_env: Path, tmp_path: Path
) -> None:
    env_file = tmp_path / "worker.env"
    env_file.write_text("IEXEC_WORKER_NAME=from-file\nIEXEC_WORKER_PORT=14000\n")
    monkeypatch.setenv("IEXEC_WORKER_PORT", "15000")

    settings = load_settings(env_file, host_cpus=2)

    assert settings.node.name == "from-file"
    assert settings.node.port == 15000


def test_settings_are_frozen(wallet_env: Path) -> None:
    settings = load_settings(host_cpus=2)
    with pytest.raises(ValueError, match="frozen"):
        settings.node.port = 1  # type: ignore[misc]


def test_unknown_iexec_key_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch, wallet_env: Path
) -> None:
    monkeypatch.setenv("IEXEC_WORKER_WALLETPATH", "/x")
    with pytest.raises(
        ConfigurationError,
        match="IEXEC_WORKER_WALLETPATH: unknown setting; did you mean IEXEC_WORKER_WALLET_PATH",
    ):
        load_settings(host_cpus=2)


def test_development_network_keys_are_not_ours_to_refuse(
    monkeypatch: pytest.MonkeyPatch, wallet_env: Path
) -> None:
    monkeypatch.setenv("IEXEC_DEVNET_CACHE", "/tmp/cache")
    assert load_settings(host_cpus=2).node.name == "worker"


def test_unknown_iexec_key_in_env_file_is_refused(wallet_env: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "worker.env"
    env_file.write_text("IEXEC_NOT_A_SETTING=1\n")
    with pytest.raises(ConfigurationError, match="IEXEC_NOT_A_SETTING"):
        load_settings(env_file, host_cpus=2)


def test_explicit_env_file_must_exist(wallet_env: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"missing\.env: no such file"):
        load_settings(tmp_path / "missing.env", host_cpus=2)


def test_missing_wallet_path_names_the_variable(monkeypatch: pytest.MonkeyPatch, wallet_env: Path) -> None:
    monkeypatch.delenv("IEXEC_WORKER_WALLET_PATH")
    with pytest.raises(
        ConfigurationError, match=r"IEXEC_WORKER_WALLET_PATH is not set.*iexec-worker wallet create"
    ):
        load_settings(host_cpus=2)


def test_wallet_file_must_exist(monkeypatch: pytest.MonkeyPatch, wallet_env: Path, tmp_path: Path) -> None:
    monkeypatch.setenv("IEXEC_WORKER_WALLET_PATH", str(tmp_path / "nope.json"))
    with pytest.raises(ConfigurationError, match=r"IEXEC_WORKER_WALLET_PATH=.*nope\.json: no such file"):
        load_settings(host_cpus=2)


def test_missing_password_names_the_variables(monkeypatch: pytest.MonkeyPatch, wallet_env: Path) -> None:
    monkeypatch.delenv("IEXEC_WORKER_WALLET_PASSWORD")
    with pytest.raises(ConfigurationError, match="no wallet password: set IEXEC_WORKER_WALLET_PASSWORD_FILE"):
        load_settings(host_cpus=2)


def test_password_from_file(monkeypatch: pytest.MonkeyPatch, wallet_env: Path, tmp_path: Path) -> None:
    monkeypatch.delenv("IEXEC_WORKER_WALLET_PASSWORD")
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    secret.chmod(0o600)
    monkeypatch.setenv("IEXEC_WORKER_WALLET_PASSWORD_FILE", str(secret))

    assert load_settings(host_cpus=2).wallet_password.get_secret_value() == "from-a-file"

    monkeypatch.setenv("IEXEC_WORKER_WALLET_PASSWORD", "too")
    with pytest.raises(ConfigurationError, match="both set; keep only one"):
        load_settings(host_cpus=2)


def test_pool_address_is_required(monkeypatch: pytest.MonkeyPatch, wallet_env: Path) -> None:
    monkeypatch.setenv("POOL_ADDRESS", "0x0")
    with pytest.raises(ConfigurationError, match="POOL_ADDRESS: is not set"):
        load_settings(host_cpus=2)
    monkeypatch.setenv("POOL_ADDRESS", "0x1234")
    with pytest.raises(ConfigurationError, match=r"POOL_ADDRESS: '0x1234' is not an address.*40 hex"):
        load_settings(host_cpus=2)


def test_all_bad_values_are_reported_together_without_secrets(
    monkeypatch: pytest.MonkeyPatch, wallet_env: Path
) -> None:
    monkeypatch.setenv("IEXEC_GAS_PRICE_CAP", "cheap")
    monkeypatch.setenv("IEXEC_WORKER_PORT", "99999")
    monkeypatch.setenv("IEXEC_CORE_URL", "localhost")
    monkeypatch.setenv("IEXEC_WORKER_SGX_DRIVER_MODE", "SGX2")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(host_cpus=2)
    message = str(caught.value)
    for key in (
        "IEXEC_GAS_PRICE_CAP='cheap'",
        "IEXEC_WORKER_PORT",
        "IEXEC_CORE_URL",
        "IEXEC_WORKER_SGX_DRIVER_MODE",
    ):
        assert key in message
    assert "s3cret-password" not in message


def test_registry_username_needs_a_password(monkeypatch: pytest.MonkeyPatch, wallet_env: Path) -> None:
    monkeypatch.setenv("IEXEC_WORKER_DOCKER_REGISTRY_ADDRESS_1", "registry.local:5000")
    monkeypatch.setenv("IEXEC_WORKER_DOCKER_REGISTRY_USERNAME_1", "bob")
    with pytest.raises(ConfigurationError, match="set IEXEC_WORKER_DOCKER_REGISTRY_PASSWORD_1"):
        load_settings(host_cpus=2)


def test_fewer_than_two_cpus_is_refused_unless_overridden(
    monkeypatch: pytest.MonkeyPatch, wallet_env: Path
) -> None:
    with pytest.raises(ConfigurationError, match=r"at least 2.*IEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT"):
        load_settings(host_cpus=1)

    monkeypatch.setenv("IEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT", "1")
    assert load_settings(host_cpus=1).available_cpu_count == 1

    monkeypatch.setenv("IEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT", "0")
    with pytest.raises(ConfigurationError, match="IEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT"):
        load_settings(host_cpus=4)


def test_host_cpu_count_is_positive() -> None:
    assert host_cpu_count() >= 1


def _example() -> list[tuple[str, str, str]]:
    """(key, value, comment just above) for every assignment in .env.example."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    found = []
    for index, line in enumerate(lines):
        match = re.match(r"^([A-Z0-9_]+)=(.*)$", line)
        if match:
            above = lines[index - 1] if index else ""
            found.append((match[1], match[2], above))
    return found


def test_env_example_documents_exactly_the_settings() -> None:
    example = _example()
    keys = [key for key, _, _ in example]
    assert len(keys) == len(set(keys)), "a key is written twice in .env.example"
    assert set(keys) == set(known_keys())
    for key, _, comment in example:
        assert comment.startswith("# "), f"{key} has no comment line just above it in .env.example"
        assert len(comment) > 10, f"{key} has an empty comment in .env.example"


def test_env_example_values_are_the_defaults() -> None:
    keys = known_keys()
    # POOL_ADDRESS has no usable default: the reference placeholder 0x0 is refused on purpose.
    required = {"POOL_ADDRESS": POOL}
    for key, value, _ in _example():
        if not value or key in required:
            continue
        model, name = keys[key]
        written = getattr(model.model_validate({**required, key: value}), name)
        default = getattr(model.model_validate(required), name)
        assert written == default, f"{key}={value} in .env.example is not the default {default!r}"


def test_every_field_is_described() -> None:
    models: list[type[BaseModel]] = [Settings, *Settings.SUBSYSTEMS]
    for model in models:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_data_and_result_settings(monkeypatch: pytest.MonkeyPatch, wallet_env: Path) -> None:
    defaults = load_settings(host_cpus=2)
    assert defaults.data.max_bytes == 10 * 1024**3
    assert defaults.data.download_timeout == timedelta(minutes=30)
    assert defaults.data.stall_timeout == timedelta(seconds=60)
    assert defaults.data.max_redirects == 5
    assert defaults.data.ipfs_gateways == [
        "https://ipfs-gateway.v8-bellecour.iex.ec",
        "https://gateway.ipfs.io",
        "https://gateway.pinata.cloud",
    ]
    assert defaults.result.upload_timeout == timedelta(minutes=5)
    assert defaults.result.upload_attempts == 3
    assert defaults.result.max_bytes == 256 * 1024**2

    monkeypatch.setenv("IEXEC_WORKER_DATA_MAX_BYTES", "2g")
    monkeypatch.setenv("IEXEC_WORKER_IPFS_GATEWAYS", " http://127.0.0.1:8080/ ,https://ipfs.example")
    monkeypatch.setenv("IEXEC_WORKER_RESULT_MAX_BYTES", "64k")
    monkeypatch.setenv("IEXEC_WORKER_DATA_STALL_TIMEOUT", "PT5S")
    settings = load_settings(host_cpus=2)
    assert settings.data.max_bytes == 2 * 1024**3
    assert settings.data.ipfs_gateways == ["http://127.0.0.1:8080", "https://ipfs.example"]
    assert settings.data.stall_timeout == timedelta(seconds=5)
    assert settings.result.max_bytes == 64 * 1024

    monkeypatch.setenv("IEXEC_WORKER_IPFS_GATEWAYS", "ipfs.io")
    monkeypatch.setenv("IEXEC_WORKER_DATA_DOWNLOAD_TIMEOUT", "PT0S")
    with pytest.raises(ConfigurationError) as refused:
        load_settings(host_cpus=2)
    assert "IEXEC_WORKER_IPFS_GATEWAYS" in str(refused.value)
    assert "IEXEC_WORKER_DATA_DOWNLOAD_TIMEOUT" in str(refused.value)


def test_tee_settings(monkeypatch: pytest.MonkeyPatch, wallet_env: Path) -> None:
    monkeypatch.setenv("WORKER_DOCKER_EXTRA_HOSTS", "chain:10.0.0.2, sms:10.0.0.3")
    monkeypatch.setenv("IEXEC_WORKER_SGX_DRIVER_MODE", "NATIVE")
    monkeypatch.setenv("IEXEC_WORKER_SGX_DEVICES", "/tmp/sgx_enclave,/tmp/sgx_provision")
    monkeypatch.setenv("TEE_TDX_SECRETPROVIDERAGENT", "/opt/agent")
    settings = load_settings(host_cpus=2)
    assert settings.docker.extra_hosts == ["chain:10.0.0.2", "sms:10.0.0.3"]
    assert settings.tee.sgx_driver_mode.devices == ("/dev/sgx/enclave", "/dev/sgx/provision")
    assert settings.tee.sgx_devices == ["/tmp/sgx_enclave", "/tmp/sgx_provision"]
    assert settings.tee.agent_path == "/opt/agent"  # the relaxed spelling, when the documented one is unset
    monkeypatch.setenv("TEE_TDX_SECRET_PROVIDER_AGENT", "/usr/bin/agent")
    assert load_settings(host_cpus=2).tee.agent_path == "/usr/bin/agent"
    monkeypatch.setenv("IEXEC_WORKER_ENCLAVE_NETWORK_NAME", "host")
    with pytest.raises(ConfigurationError, match="IEXEC_WORKER_ENCLAVE_NETWORK_NAME"):
        load_settings(host_cpus=2)


@pytest.mark.parametrize(
    ("key", "other"),
    [
        ("IEXEC_HTTP_PROXY_HOST", "IEXEC_HTTP_PROXY_PORT"),
        ("IEXEC_HTTPS_PROXY_PORT", "IEXEC_HTTPS_PROXY_HOST"),
    ],
)
def test_a_proxy_needs_its_host_and_its_port(
    monkeypatch: pytest.MonkeyPatch, wallet_env: Path, key: str, other: str
) -> None:
    monkeypatch.setenv(key, "3128" if key.endswith("PORT") else "proxy.example")
    with pytest.raises(ConfigurationError, match=f"{other.rsplit('_', 1)[0]}_HOST and .* go together"):
        load_settings(host_cpus=2)


def test_proxies_route_by_scheme_and_keep_loopback_direct(
    monkeypatch: pytest.MonkeyPatch, wallet_env: Path
) -> None:
    monkeypatch.setenv("IEXEC_HTTP_PROXY_HOST", "proxy.example")
    monkeypatch.setenv("IEXEC_HTTP_PROXY_PORT", "3128")
    monkeypatch.setenv("IEXEC_HTTPS_PROXY_HOST", "tls-proxy.example")
    monkeypatch.setenv("IEXEC_HTTPS_PROXY_PORT", "3129")
    routes = load_settings(host_cpus=2).proxy.routes()
    assert routes.for_url("http://core.example:13000/ping") == "http://proxy.example:3128"
    assert routes.for_url("https://bellecour.iex.ec") == "http://tls-proxy.example:3129"
    assert routes.for_url("http://127.0.0.1:8545") is None
    assert routes.for_url("http://localhost:13000") is None
    assert routes.for_url("http://[::1]:13000") is None

    # As the JVM: a list of one's own keeps the loopback defaults, an empty list exempts nothing.
    monkeypatch.setenv("IEXEC_WORKER_NON_PROXY_HOSTS", "*.internal|10.*")
    routes = load_settings(host_cpus=2).proxy.routes()
    assert routes.for_url("http://127.0.0.1:8545") is None
    assert routes.for_url("http://node.internal:8545") is None
    assert routes.for_url("http://10.1.2.3:8545") is None
    assert routes.for_url("http://internal.example:8545") == "http://proxy.example:3128"
    monkeypatch.setenv("IEXEC_WORKER_NON_PROXY_HOSTS", "")
    routes = load_settings(host_cpus=2).proxy.routes()
    assert routes.for_url("http://127.0.0.1:8545") == "http://proxy.example:3128"
    assert routes.for_url("http://localhost:13000") == "http://proxy.example:3128"


def test_empty_proxy_lines_of_an_env_file_mean_no_proxy(
    monkeypatch: pytest.MonkeyPatch, wallet_env: Path
) -> None:
    monkeypatch.setenv("IEXEC_HTTP_PROXY_HOST", "")
    monkeypatch.setenv("IEXEC_HTTP_PROXY_PORT", "")
    settings = load_settings(host_cpus=2)
    assert settings.proxy.routes().enabled is False
    assert settings.proxy.non_proxy_hosts == "localhost|127.*|[::1]|0.0.0.0|[::0]"


def test_log_levels_of_the_reference_are_accepted(monkeypatch: pytest.MonkeyPatch, wallet_env: Path) -> None:
    monkeypatch.setenv("IEXEC_LOG_LEVEL", "TRACE")
    assert load_settings(host_cpus=2).log.level == "DEBUG"
