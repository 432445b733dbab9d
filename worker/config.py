"""Worker settings, read from the environment and an optional ``.env`` file.

Variable names and defaults are those of the reference Java worker (iexec-worker
``application.yml``), so an existing deployment's environment keeps working. Keys added by this
worker are marked "(this worker)" in ``.env.example``. One frozen model per subsystem;
:func:`load_settings` builds them all, rejects unknown ``IEXEC_`` keys and turns every problem into
a :class:`ConfigurationError` that names the variable and the fix.
"""

from __future__ import annotations

import difflib
import os
import re
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError
from yarl import URL

from worker import PROTOCOL_VERSION
from worker.compute import RegistryAuth, Sandbox, SandboxProfile, machine_memory_bytes, sandbox_for
from worker.data import DEFAULT_IPFS_GATEWAYS, DownloadLimits
from worker.protocol.errors import ConfigurationError
from worker.protocol.redact import display_origin, redact, register_secret, register_url_secrets
from worker.protocol.targets import TargetPolicy, parse_networks
from worker.protocol.tee import SgxDriverMode
from worker.proxy import DEFAULT_NON_PROXY_HOSTS, ProxyRoutes
from worker.replicate.work import WorkSettings
from worker.wallet import check_private_file, read_password

DEFAULT_ENV_FILE = Path(".env")
MIN_HOST_CPUS = 2
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


class _Subsystem(BaseSettings):
    # Case-sensitive, like the Java names; empty values mean "use the default", like Spring's `${X:}`.
    model_config = SettingsConfigDict(
        case_sensitive=True,
        extra="ignore",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        env_ignore_empty=True,
    )


def _http_url(value: str, key: str) -> str:
    url = URL(value.strip())
    if url.scheme not in ("http", "https") or not url.host:
        # The origin only: a node URL's path or query may hold an API key.
        raise ValueError(
            f"{display_origin(value)!r} is not an http(s) URL; set {key} like http://localhost:13000"
        )
    return str(url).rstrip("/")


class SchedulerSettings(_Subsystem):
    """Where the scheduler (iexec-core) is and which workerpool this worker serves."""

    core_url: str = Field(
        "http://localhost:13000",
        validation_alias="IEXEC_CORE_URL",
        description="Base URL of the workerpool's scheduler (iexec-core).",
    )
    pool_address: str = Field(
        "0x0",
        validation_alias="POOL_ADDRESS",
        description="Workerpool contract address; its owner must sign every replicate authorization.",
    )
    missed_news_period: timedelta = Field(
        timedelta(seconds=15),
        validation_alias="IEXEC_WORKER_MISSED_NEWS_PERIOD",
        description="(this worker) While the push channel is down, how often a replicate waiting for the "
        "scheduler's next action (upload, completion) asks for it (ISO-8601 duration, e.g. PT15S).",
    )

    @field_validator("missed_news_period")
    @classmethod
    def _positive_period(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration, e.g. PT15S")
        return value

    @field_validator("core_url")
    @classmethod
    def _core_url(cls, value: str) -> str:
        return _http_url(value, "IEXEC_CORE_URL")

    @field_validator("pool_address")
    @classmethod
    def _pool_address(cls, value: str) -> str:
        value = value.strip()
        if value in ("", "0x0") or (_ADDRESS.match(value) and int(value, 16) == 0):
            raise ValueError("is not set; set POOL_ADDRESS to the workerpool contract address (0x + 40 hex)")
        if not _ADDRESS.match(value):
            raise ValueError(f"{value!r} is not an address; set POOL_ADDRESS to 0x followed by 40 hex digits")
        return value.lower()


class NodeSettings(_Subsystem):
    """This machine as a worker: its name, working folder, capacity and HTTP port."""

    name: str = Field(
        "worker",
        validation_alias="IEXEC_WORKER_NAME",
        description="Worker name shown by the scheduler; names the task folder and prefixes container names.",
        min_length=1,
    )
    base_dir: Path = Field(
        Path("/tmp/iexec-worker"),
        validation_alias="IEXEC_WORKER_BASE_DIR",
        description="Folder for task files (<base dir>/<name>/<chain task id>/), state database, locks.",
    )
    base_dir_min_free_bytes: int = Field(
        1 << 30,
        validation_alias="IEXEC_WORKER_BASE_DIR_MIN_FREE_BYTES",
        description="(this worker) Free bytes the file system of the base dir must keep: below it the worker "
        "asks for no replicate (shown by /health and the iexec_worker_disk_low metric) until space is freed; "
        "0 turns the check off.",
        ge=0,
    )
    db_path: Path | None = Field(
        None,
        validation_alias="IEXEC_WORKER_DB_PATH",
        description="(this worker) SQLite file keeping replicate progress across restarts; "
        "default <base dir>/<name>.sqlite3.",
    )
    override_available_cpu_count: int | None = Field(
        None,
        validation_alias="IEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT",
        description="Number of tasks computed at once, announced to the scheduler; default max(CPUs - 1, 1).",
        gt=0,
    )
    gpu_enabled: bool = Field(
        False,
        validation_alias="IEXEC_WORKER_GPU_ENABLED",
        description="Announce a GPU; the scheduler then gives this worker one task at a time.",
    )
    http_host: str = Field(
        "127.0.0.1",
        validation_alias="IEXEC_WORKER_HTTP_HOST",
        description="(this worker) Interface the health and metrics endpoints listen on; they have no "
        "authentication, so loopback by default (the container image sets 0.0.0.0 for Prometheus).",
    )
    port: int = Field(
        13100,
        validation_alias="IEXEC_WORKER_PORT",
        description="Port of the health and metrics endpoints.",
        ge=0,
        le=65535,
    )
    metrics_window_size: int = Field(
        1000,
        validation_alias="IEXEC_WORKER_METRICS_WINDOW_SIZE",
        description="Number of recent app runs kept to compute the duration metrics of GET /metrics/worker.",
        gt=0,
    )
    protocol_version: str = Field(
        PROTOCOL_VERSION,
        validation_alias="IEXEC_WORKER_PROTOCOL_VERSION",
        description="(this worker) The iexec-worker release this worker behaves as: compared, as the Java worker "
        "compares its own version, with the scheduler's requiredWorkerVersion, and served by GET /version.",
        min_length=1,
    )

    @property
    def task_root(self) -> Path:
        return self.base_dir / self.name

    @property
    def state_db(self) -> Path:
        # Beside the task tree rather than inside it: cleaning unused task folders must never touch it.
        return self.db_path or self.base_dir / f"{self.name}.sqlite3"


class ChainSettings(_Subsystem):
    """How this worker talks to the blockchain node and prices its transactions."""

    gas_price_multiplier: float = Field(
        1.3,
        validation_alias="IEXEC_GAS_PRICE_MULTIPLIER",
        description="Factor applied to the node's gas price for every transaction (above 1 is faster).",
        gt=0,
    )
    gas_price_cap: int = Field(
        22_000_000_000,
        validation_alias="IEXEC_GAS_PRICE_CAP",
        description="Highest gas price paid, in wei, after the multiplier.",
        gt=0,
    )
    override_blockchain_node_address: str | None = Field(
        None,
        validation_alias="IEXEC_WORKER_OVERRIDE_BLOCKCHAIN_NODE_ADDRESS",
        description="JSON-RPC URL of the node; default the chainNodeUrl given by the config server.",
    )

    blockchain_node_addresses: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias="IEXEC_WORKER_BLOCKCHAIN_NODE_ADDRESSES",
        description="(this worker) More JSON-RPC URLs of nodes of the same chain, comma separated, tried in "
        "order after IEXEC_WORKER_OVERRIDE_BLOCKCHAIN_NODE_ADDRESS when a node fails or lags.",
    )
    max_block_lag: int = Field(
        5,
        validation_alias="IEXEC_WORKER_MAX_BLOCK_LAG",
        description="(this worker) Blocks a node may be behind the best of the others before it is not used "
        "until it catches up.",
        ge=0,
    )
    request_timeout: timedelta = Field(
        timedelta(seconds=30),
        validation_alias="IEXEC_WORKER_CHAIN_REQUEST_TIMEOUT",
        description="(this worker) Longest wait for one JSON-RPC answer of a node before that call fails "
        "over to the next node or is retried (ISO-8601 duration, e.g. PT30S).",
    )
    tx_replace_after: timedelta = Field(
        timedelta(seconds=30),
        validation_alias="IEXEC_WORKER_TX_REPLACE_AFTER",
        description="(this worker) Time a transaction may stay unmined before it is replaced by the same one "
        "with fees 10 % higher, under IEXEC_GAS_PRICE_CAP (ISO-8601 duration, e.g. PT30S).",
    )
    tx_confirmations: int = Field(
        3,
        validation_alias="IEXEC_WORKER_TX_CONFIRMATIONS",
        description="(this worker) Blocks a transaction's block must be deep, itself counted as the first, "
        "before its receipt counts and the status is reported; the chain watch re-reads as many blocks. 1 "
        "takes the receipt as soon as it is mined. A transaction dropped by a reorganisation meanwhile is "
        "broadcast again, same nonce and signature.",
        ge=1,
        le=64,
    )
    chain_poll_period: timedelta = Field(
        timedelta(seconds=5),
        validation_alias="IEXEC_WORKER_CHAIN_POLL_PERIOD",
        description="(this worker) Period of the chain watch: new blocks, consensus, deadlines, wallet "
        "balance (ISO-8601 duration, e.g. PT5S).",
    )

    @field_validator("override_blockchain_node_address")
    @classmethod
    def _node_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value, "IEXEC_WORKER_OVERRIDE_BLOCKCHAIN_NODE_ADDRESS")

    @field_validator("blockchain_node_addresses", mode="before")
    @classmethod
    def _node_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list):
            return [_http_url(item, "IEXEC_WORKER_BLOCKCHAIN_NODE_ADDRESSES") for item in value]
        return value

    @field_validator("tx_replace_after", "chain_poll_period", "request_timeout")
    @classmethod
    def _positive_period(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration, e.g. PT5S")
        return value

    def node_urls(self, config_server_url: str) -> list[str]:
        """The nodes in order of preference; the config server's chainNodeUrl only when none is set here."""
        urls = [self.override_blockchain_node_address] if self.override_blockchain_node_address else []
        urls += [url for url in self.blockchain_node_addresses if url not in urls]
        return urls or [config_server_url]


class WalletSettings(_Subsystem):
    """The worker's Ethereum wallet: an encrypted V3 keystore and its password."""

    path: Path | None = Field(
        None,
        validation_alias="IEXEC_WORKER_WALLET_PATH",
        description="Encrypted V3 keystore file of the worker wallet (one wallet per worker).",
    )
    password: SecretStr | None = Field(
        None,
        validation_alias="IEXEC_WORKER_WALLET_PASSWORD",
        description="Password of the keystore; prefer IEXEC_WORKER_WALLET_PASSWORD_FILE.",
    )
    password_file: Path | None = Field(
        None,
        validation_alias="IEXEC_WORKER_WALLET_PASSWORD_FILE",
        description="(this worker) File holding the keystore password (trailing newline ignored).",
    )


class DockerRegistry(BaseModel):
    """Credentials for one image registry."""

    model_config = ConfigDict(frozen=True)

    address: str = Field(description="Registry host, e.g. docker.io.")
    username: str | None = Field(None, description="Account name on the registry.")
    password: SecretStr | None = Field(None, description="Password or token of the account.")


class DockerSettings(_Subsystem):
    """The Docker engine side: network, registries, pulls and the limits of task containers."""

    network_name: str = Field(
        "iexec-worker-net",
        validation_alias="IEXEC_WORKER_DOCKER_NETWORK_NAME",
        description="Docker network created for the worker's app containers, isolated; none: no network at all.",
    )
    extra_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias="WORKER_DOCKER_EXTRA_HOSTS",
        description="Extra /etc/hosts entries of the pre/post-compute containers of TDX tasks, comma separated "
        "host:ip pairs (the reference takes one).",
    )
    registry_username_0: str | None = Field(
        None,
        validation_alias="IEXEC_WORKER_DOCKER_REGISTRY_USERNAME_0",
        description="docker.io account used to pull images.",
    )
    registry_password_0: SecretStr | None = Field(
        None,
        validation_alias="IEXEC_WORKER_DOCKER_REGISTRY_PASSWORD_0",
        description="Password or token of the docker.io account.",
    )
    registry_address_1: str | None = Field(
        None,
        validation_alias="IEXEC_WORKER_DOCKER_REGISTRY_ADDRESS_1",
        description="Host of a second registry, e.g. registry.example.com:5000.",
    )
    registry_username_1: str | None = Field(
        None,
        validation_alias="IEXEC_WORKER_DOCKER_REGISTRY_USERNAME_1",
        description="Account on the second registry.",
    )
    registry_password_1: SecretStr | None = Field(
        None,
        validation_alias="IEXEC_WORKER_DOCKER_REGISTRY_PASSWORD_1",
        description="Password or token of the account on the second registry.",
    )
    min_pull_timeout: timedelta = Field(
        timedelta(minutes=5),
        validation_alias="IEXEC_WORKER_DOCKER_IMAGE_MIN_PULL_TIMEOUT",
        description="Shortest time allowed to pull an app image (ISO-8601 duration, e.g. PT5M).",
    )
    max_pull_timeout: timedelta = Field(
        timedelta(minutes=30),
        validation_alias="IEXEC_WORKER_DOCKER_IMAGE_MAX_PULL_TIMEOUT",
        description="Longest time allowed to pull an app image (ISO-8601 duration, e.g. PT30M).",
    )
    container_memory_limit: int | None = Field(
        None,
        validation_alias="IEXEC_WORKER_CONTAINER_MEMORY_LIMIT",
        description="(this worker) Memory limit of a task container in bytes, or with a k/m/g/t suffix; "
        "default from the sandbox profile.",
        gt=0,
    )
    container_pids_limit: int = Field(
        1024,
        validation_alias="IEXEC_WORKER_CONTAINER_PIDS_LIMIT",
        description="(this worker) Most processes a task container may run (fork-bomb guard).",
        gt=0,
    )
    container_cpu_limit: float | None = Field(
        None,
        validation_alias="IEXEC_WORKER_CONTAINER_CPU_LIMIT",
        description="(this worker) CPUs a task container may use, e.g. 1.5; default from the sandbox profile.",
        gt=0,
    )

    @field_validator("extra_hosts", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("container_memory_limit", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return _parse_size(value)

    @model_validator(mode="after")
    def _pull_timeouts(self) -> DockerSettings:
        if self.min_pull_timeout > self.max_pull_timeout:
            raise ValueError(
                "IEXEC_WORKER_DOCKER_IMAGE_MIN_PULL_TIMEOUT is longer than "
                "IEXEC_WORKER_DOCKER_IMAGE_MAX_PULL_TIMEOUT; make the minimum shorter"
            )
        return self

    @property
    def registries(self) -> list[DockerRegistry]:
        """Registries with credentials, docker.io first; checked by :func:`load_settings`."""
        found = []
        if self.registry_username_0:
            found.append(
                DockerRegistry(
                    address="docker.io", username=self.registry_username_0, password=self.registry_password_0
                )
            )
        if self.registry_address_1:
            found.append(
                DockerRegistry(
                    address=self.registry_address_1,
                    username=self.registry_username_1,
                    password=self.registry_password_1,
                )
            )
        return found


def _parse_size(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size; write bytes or a number with k, m, g or t, e.g. 2g")
    return int(match[1]) * 1024 ** " kmgt".index(match[2].lower() or " ")


class DataSettings(_Subsystem):
    """Downloads of datasets and input files: where IPFS is reached and how much a task may fetch."""

    max_bytes: int = Field(
        10 * 1024**3,
        validation_alias="IEXEC_WORKER_DATA_MAX_BYTES",
        description="(this worker) Most bytes one task may download, dataset and input files together, in "
        "bytes or with a k/m/g/t suffix; a larger download fails the task before the disk fills.",
        gt=0,
    )
    download_timeout: timedelta = Field(
        timedelta(minutes=30),
        validation_alias="IEXEC_WORKER_DATA_DOWNLOAD_TIMEOUT",
        description="(this worker) Longest time one file may take to download (ISO-8601 duration, e.g. PT30M).",
    )
    stall_timeout: timedelta = Field(
        timedelta(seconds=60),
        validation_alias="IEXEC_WORKER_DATA_STALL_TIMEOUT",
        description="(this worker) Time without a single byte from the server before a download is given up "
        "(ISO-8601 duration, e.g. PT60S).",
    )
    max_redirects: int = Field(
        5,
        validation_alias="IEXEC_WORKER_DATA_MAX_REDIRECTS",
        description="(this worker) HTTP redirects followed for one file; a redirect loop fails at this count.",
        ge=0,
    )
    ipfs_gateways: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_IPFS_GATEWAYS),
        validation_alias="IEXEC_WORKER_IPFS_GATEWAYS",
        description="(this worker) IPFS gateways tried in order for a dataset registered as /ipfs/<cid>, "
        "comma separated.",
    )

    @field_validator("max_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return _parse_size(value)

    @field_validator("ipfs_gateways", mode="before")
    @classmethod
    def _gateways(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list):
            return [_http_url(item, "IEXEC_WORKER_IPFS_GATEWAYS") for item in value]
        return value

    @field_validator("download_timeout", "stall_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration, e.g. PT60S")
        return value


class ResultSettings(_Subsystem):
    """The result of a task: how large it may be and how it is uploaded to the result proxy."""

    max_bytes: int = Field(
        256 * 1024**2,
        validation_alias="IEXEC_WORKER_RESULT_MAX_BYTES",
        description="(this worker) Largest result zip, in bytes or with a k/m/g/t suffix; a larger output fails "
        "the task. The upload holds the zip in memory, Base64-encoded, so keep it well below the RAM.",
        gt=0,
    )
    upload_timeout: timedelta = Field(
        timedelta(minutes=5),
        validation_alias="IEXEC_WORKER_RESULT_UPLOAD_TIMEOUT",
        description="(this worker) Longest time one upload of a result to the result proxy may take "
        "(ISO-8601 duration, e.g. PT5M).",
    )
    upload_attempts: int = Field(
        3,
        validation_alias="IEXEC_WORKER_RESULT_UPLOAD_ATTEMPTS",
        description="(this worker) Tries of each result proxy call that fails for lack of an answer or a 5xx.",
        gt=0,
    )

    @field_validator("max_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return _parse_size(value)

    @field_validator("upload_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration, e.g. PT5M")
        return value


class SandboxSettings(_Subsystem):
    """How apps are confined: the sandbox profile, the app network and what requesters' URLs may reach."""

    profile: SandboxProfile = Field(
        SandboxProfile.COMPATIBLE,
        validation_alias="IEXEC_WORKER_SANDBOX_PROFILE",
        description="(this worker) compatible: bounds that never break an app the Java worker runs; strict: "
        "read-only root filesystem, bounded /tmp, non-root user, tighter bounds (see docs/security.md).",
    )
    network_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias="IEXEC_WORKER_NETWORK_ALLOWLIST",
        description="(this worker) Networks apps and downloads may reach though not public (loopback, private, "
        "link-local), comma separated CIDRs, e.g. 10.1.0.0/16; empty: the public internet only.",
    )
    firewall_image: str | None = Field(
        None,
        validation_alias="IEXEC_WORKER_FIREWALL_IMAGE",
        description="(this worker) Image holding sh and iptables, run briefly with NET_ADMIN on the host network "
        "to install the app network rules when the worker is not root on the host; empty: iptables directly.",
    )
    output_max_bytes: int | None = Field(
        None,
        validation_alias="IEXEC_WORKER_CONTAINER_OUTPUT_MAX_BYTES",
        description="(this worker) Bytes an app may write to /iexec_out before it is killed, in bytes or with a "
        "k/m/g/t suffix; default 10g (compatible) or 1g (strict).",
        gt=0,
    )

    @field_validator("network_allowlist", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list):
            parse_networks(value)  # refuses what is not a network, naming it
        return value

    @field_validator("output_max_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return _parse_size(value)


class TdxMode(StrEnum):
    AUTO = "auto"
    TRUE = "true"
    FALSE = "false"


class TeeSettings(_Subsystem):
    """Trusted execution (TEE): SGX for SCONE and Gramine tasks, TDX, and the enclaves' network.

    Names and defaults of the reference worker, plus this worker's own (marked) for what the reference
    hard-codes or leaves to the host (docs/tee.md).
    """

    sgx_driver_mode: SgxDriverMode = Field(
        SgxDriverMode.NONE,
        validation_alias="IEXEC_WORKER_SGX_DRIVER_MODE",
        description="SGX driver: NONE (no SGX tasks), LEGACY (/dev/isgx) or NATIVE (/dev/sgx/enclave and "
        "/dev/sgx/provision, or /dev/sgx_enclave and /dev/sgx_provision); checked at start, the worker refuses "
        "to start when the devices are missing.",
    )
    sgx_devices: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias="IEXEC_WORKER_SGX_DEVICES",
        description="(this worker) SGX device paths replacing those of the driver mode, comma separated.",
    )
    sgx_check_image: str = Field(
        "alpine:latest",
        validation_alias="IEXEC_WORKER_SGX_CHECK_IMAGE",
        description="(this worker) Image of the start-up container that checks the SGX devices reach containers; "
        "it needs /bin/sh.",
        min_length=1,
    )
    compute_max_heap_size_gb: int = Field(
        8,
        validation_alias="IEXEC_WORKER_TEE_COMPUTE_MAX_HEAP_SIZE_GB",
        description="Largest enclave heap an SGX app may ask for, in GiB; a larger one fails the task at START.",
        gt=0,
    )
    scone_show_version: bool = Field(
        True,
        validation_alias="IEXEC_SCONE_SHOW_VERSION",
        description="SCONE runtime banner in SCONE enclaves (SCONE_VERSION).",
    )
    scone_log_level: str = Field(
        "debug",
        validation_alias="IEXEC_SCONE_LOG_LEVEL",
        description="SCONE runtime log level in SCONE enclaves (SCONE_LOG).",
    )
    scontain_registry_name: str = Field(
        "registry.scontain.com",
        validation_alias="IEXEC_WORKER_SCONTAIN_REGISTRY_NAME",
        description="Registry of the SCONE images; the LAS image the SMS names must come from it.",
    )
    scontain_registry_username: str | None = Field(
        None,
        validation_alias="IEXEC_WORKER_SCONTAIN_REGISTRY_USERNAME",
        description="Account on the SCONE registry, to pull the LAS and the pre/post-compute images.",
    )
    scontain_registry_password: SecretStr | None = Field(
        None,
        validation_alias="IEXEC_WORKER_SCONTAIN_REGISTRY_PASSWORD",
        description="Password of the SCONE registry account.",
    )
    las_port: int = Field(
        18766, validation_alias="IEXEC_LAS_PORT", description="Port of the SCONE LAS (SCONE_LAS_ADDR)."
    )
    tdx_secret_provider_agent: str = Field(
        "/usr/local/bin/secret_provider_agent",
        validation_alias="TEE_TDX_SECRET_PROVIDER_AGENT",
        description="Path of the TDX secret provider agent, which fetches a TDX task's session.",
    )
    tdx_secret_provider_agent_relaxed: str | None = Field(
        None,
        validation_alias="TEE_TDX_SECRETPROVIDERAGENT",
        description="The same path, as Spring's relaxed binding also reads it; TEE_TDX_SECRET_PROVIDER_AGENT wins.",
    )
    tdx_enabled: TdxMode = Field(
        TdxMode.AUTO,
        validation_alias="IEXEC_WORKER_TDX_ENABLED",
        description="(this worker) Run TDX tasks: auto (when this machine is a TDX guest, /dev/tdx_guest, and the "
        "agent is executable), true or false.",
    )
    enclave_network_name: str = Field(
        "iexec-worker-enclaves",
        validation_alias="IEXEC_WORKER_ENCLAVE_NETWORK_NAME",
        description="(this worker) Docker bridge network of the pre/post-compute enclaves and the SCONE LAS; the "
        "enclave endpoint listens on its gateway. Apps run on IEXEC_WORKER_DOCKER_NETWORK_NAME.",
        min_length=1,
    )
    enclave_endpoint_host: str | None = Field(
        None,
        validation_alias="IEXEC_WORKER_ENCLAVE_ENDPOINT_HOST",
        description="(this worker) Address the enclave endpoint (port 13100) listens on; default the enclave "
        "network's gateway. Set 0.0.0.0 when the worker runs in a container on that network as 'worker'.",
    )

    @field_validator("sgx_devices", mode="before")
    @classmethod
    def _devices(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("enclave_network_name")
    @classmethod
    def _bridge(cls, value: str) -> str:
        if value in ("none", "host"):
            raise ValueError(f"{value!r}: the enclaves need a bridge network to reach this worker")
        return value

    @property
    def agent_path(self) -> str:
        # The reference binds one property from both spellings; the underscored one is its documented form.
        if (
            "tdx_secret_provider_agent" not in self.model_fields_set
            and self.tdx_secret_provider_agent_relaxed
        ):
            return self.tdx_secret_provider_agent_relaxed
        return self.tdx_secret_provider_agent


class LogSettings(_Subsystem):
    """Logging."""

    level: str = Field(
        "info",
        validation_alias="IEXEC_LOG_LEVEL",
        description="Log level of the whole worker: trace (= debug), debug, info, warning or error.",
    )
    json_logs: bool = Field(
        False,
        validation_alias="IEXEC_WORKER_LOG_JSON",
        description="(this worker) One JSON object per log line, for log collectors.",
    )
    developer_logger_enabled: bool = Field(
        False,
        validation_alias="IEXEC_DEVELOPER_LOGGER_ENABLED",
        description="After every app run, log its iexec_in and iexec_out folders and its whole stdout and "
        "stderr, in the reference's DEV MODE block.",
    )

    @field_validator("level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.strip().upper()
        level = {"WARN": "WARNING", "TRACE": "DEBUG"}.get(level, level)
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"{value!r} is not a level; use debug, info, warning or error")
        return level


class ProxySettings(_Subsystem):
    """The HTTP proxies every outbound HTTP call goes through: scheduler, node, result proxy, IPFS, datasets.

    As the JVM proxy properties the reference's entrypoint sets from the same variables: one proxy for
    http:// URLs, one for https:// URLs (reached with CONNECT), and hosts that are never proxied. Unlike
    the other settings, an empty value here is a value: an empty IEXEC_WORKER_NON_PROXY_HOSTS exempts no
    host, as an empty ``http.nonProxyHosts`` does in the JVM.
    """

    model_config = SettingsConfigDict(
        case_sensitive=True,
        extra="ignore",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        env_ignore_empty=False,
    )

    http_proxy_host: str | None = Field(
        None, validation_alias="IEXEC_HTTP_PROXY_HOST", description="Host of the proxy for http:// URLs."
    )
    http_proxy_port: int | None = Field(
        None,
        validation_alias="IEXEC_HTTP_PROXY_PORT",
        description="Port of the proxy for http:// URLs.",
        gt=0,
        le=65535,
    )
    https_proxy_host: str | None = Field(
        None, validation_alias="IEXEC_HTTPS_PROXY_HOST", description="Host of the proxy for https:// URLs."
    )
    https_proxy_port: int | None = Field(
        None,
        validation_alias="IEXEC_HTTPS_PROXY_PORT",
        description="Port of the proxy for https:// URLs.",
        gt=0,
        le=65535,
    )
    non_proxy_hosts: str = Field(
        DEFAULT_NON_PROXY_HOSTS,
        validation_alias="IEXEC_WORKER_NON_PROXY_HOSTS",
        description="(this worker) Hosts reached directly, never through a proxy: |-separated, * at the start or "
        "end of a pattern, the JVM's loopback defaults added (its http.nonProxyHosts); empty: no host is exempt.",
    )

    @field_validator(
        "http_proxy_host", "https_proxy_host", "http_proxy_port", "https_proxy_port", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _pairs(self) -> ProxySettings:
        for scheme, host, port in (
            ("HTTP", self.http_proxy_host, self.http_proxy_port),
            ("HTTPS", self.https_proxy_host, self.https_proxy_port),
        ):
            if bool(host and host.strip()) != (port is not None):
                raise ValueError(
                    f"IEXEC_{scheme}_PROXY_HOST and IEXEC_{scheme}_PROXY_PORT go together: set both or neither"
                )
        return self

    def routes(self) -> ProxyRoutes:
        def url(host: str | None, port: int | None) -> str | None:
            return f"http://{host.strip()}:{port}" if host and host.strip() and port else None

        # The JVM adds its loopback defaults to any list but an empty one (DefaultProxySelector).
        exempt = self.non_proxy_hosts.strip()
        if exempt and exempt != DEFAULT_NON_PROXY_HOSTS:
            exempt = f"{exempt}|{DEFAULT_NON_PROXY_HOSTS}"
        return ProxyRoutes(
            http=url(self.http_proxy_host, self.http_proxy_port),
            https=url(self.https_proxy_host, self.https_proxy_port),
            non_proxy_hosts=exempt,
        )


class Settings(BaseModel):
    """Everything the worker is configured with, one model per subsystem."""

    model_config = ConfigDict(frozen=True)
    SUBSYSTEMS: ClassVar[tuple[type[_Subsystem], ...]] = (
        SchedulerSettings,
        NodeSettings,
        ChainSettings,
        WalletSettings,
        DockerSettings,
        DataSettings,
        ResultSettings,
        SandboxSettings,
        TeeSettings,
        LogSettings,
        ProxySettings,
    )

    scheduler: SchedulerSettings = Field(description="Scheduler URL and workerpool.")
    node: NodeSettings = Field(description="Name, folders, capacity, HTTP port.")
    chain: ChainSettings = Field(description="Blockchain node and gas price.")
    wallet: WalletSettings = Field(description="Keystore and password.")
    docker: DockerSettings = Field(description="Docker network, registries, pulls, container limits.")
    data: DataSettings = Field(description="Dataset and input file downloads, IPFS gateways.")
    result: ResultSettings = Field(description="Result size limit and upload to the result proxy.")
    sandbox: SandboxSettings = Field(description="Sandbox profile, app network, allowlist.")
    tee: TeeSettings = Field(description="SGX and TDX, the enclaves' network and endpoint.")
    log: LogSettings = Field(description="Logging.")
    proxy: ProxySettings = Field(description="HTTP and HTTPS proxies of outbound calls.")
    available_cpu_count: int = Field(
        description="Tasks computed at once: IEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT or max(CPUs - 1, 1)."
    )
    wallet_path: Path = Field(description="IEXEC_WORKER_WALLET_PATH, checked to exist.")
    wallet_password: SecretStr = Field(description="From IEXEC_WORKER_WALLET_PASSWORD or its _FILE variant.")

    def app_sandbox(self, *, cpus: int | None = None, memory: int | None = None) -> Sandbox:
        """The bounds of every app container, from the profile, the machine and the explicit limits."""
        docker = self.docker
        return sandbox_for(
            self.sandbox.profile,
            slots=self.available_cpu_count,
            cpus=cpus or host_cpu_count(),
            memory=memory or machine_memory_bytes(),
            network=docker.network_name,
            memory_limit=docker.container_memory_limit,
            cpu_limit=docker.container_cpu_limit,
            pids_limit=docker.container_pids_limit,
            output_limit=self.sandbox.output_max_bytes,
        )

    def target_policy(self, result_repository_url: str) -> TargetPolicy:
        """What requesters' URLs may reach: public addresses, the allowlist, the operator's own endpoints."""
        routes = self.proxy.routes()
        proxies = [url for url in (routes.http, routes.https) if url]
        return TargetPolicy(allowed=parse_networks(self.sandbox.network_allowlist)).trusting(
            [*self.data.ipfs_gateways, result_repository_url, *proxies]
        )

    def work_settings(self, *, result_repository_url: str, sidechain: bool) -> WorkSettings:
        docker, data = self.docker, self.data
        registries = tuple(
            RegistryAuth(server=r.address, username=r.username, password=r.password.get_secret_value())
            for r in docker.registries
            if r.username and r.password is not None
        )
        download_limits = DownloadLimits(
            max_bytes=data.max_bytes,
            total_timeout=data.download_timeout.total_seconds(),
            stall_timeout=data.stall_timeout.total_seconds(),
            max_redirects=data.max_redirects,
            targets=self.target_policy(result_repository_url),
        )
        return WorkSettings(
            worker_name=self.node.name,
            task_root=self.node.task_root,
            gas_price_cap=self.chain.gas_price_cap,
            limits=self.app_sandbox(),
            download_limits=download_limits,
            result_repository_url=result_repository_url,
            registries=registries,
            min_pull_timeout=docker.min_pull_timeout.total_seconds(),
            max_pull_timeout=docker.max_pull_timeout.total_seconds(),
            max_result_bytes=self.result.max_bytes,
            ipfs_gateways=tuple(data.ipfs_gateways),
            upload_attempts=self.result.upload_attempts,
            upload_timeout=self.result.upload_timeout.total_seconds(),
            sidechain=sidechain,
            developer_logger=self.log.developer_logger_enabled,
        )


def known_keys() -> dict[str, tuple[type[_Subsystem], str]]:
    """Every environment key the worker reads, mapped to (subsystem, field name)."""
    keys: dict[str, tuple[type[_Subsystem], str]] = {}
    for model in Settings.SUBSYSTEMS:
        for name, field in model.model_fields.items():
            assert isinstance(field.validation_alias, str)
            keys[field.validation_alias] = (model, name)
    return keys


def host_cpu_count() -> int:
    # The affinity mask, not the machine: a container or taskset may give this process fewer CPUs.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_settings(
    env_file: Path | None = DEFAULT_ENV_FILE,
    *,
    host_cpus: int | None = None,
) -> Settings:
    """Read and check every setting; raise ConfigurationError naming the variable and the fix.

    Process environment wins over ``env_file``. A missing default ``.env`` is fine; a missing
    file named explicitly is an error.
    """
    file_values: dict[str, str | None] = {}
    if env_file is not None:
        if env_file.is_file():
            file_values = dict(dotenv_values(env_file))
        elif env_file != DEFAULT_ENV_FILE:
            raise ConfigurationError(
                f"env file {env_file}: no such file; create it from .env.example or omit it"
            )
    _reject_unknown_keys([*file_values, *os.environ], env_file)

    parts: dict[str, Any] = {}
    problems: list[str] = []
    for model in Settings.SUBSYSTEMS:
        try:
            parts[model.__name__] = model(_env_file=env_file if file_values else None)
        except ValidationError as exc:
            problems.extend(_describe(exc))
        except SettingsError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigurationError("invalid configuration:\n  " + "\n  ".join(problems))

    scheduler: SchedulerSettings = parts["SchedulerSettings"]
    node: NodeSettings = parts["NodeSettings"]
    wallet: WalletSettings = parts["WalletSettings"]
    docker: DockerSettings = parts["DockerSettings"]
    _check_registries(docker)
    cpus = host_cpus if host_cpus is not None else host_cpu_count()
    if node.override_available_cpu_count is None and cpus < MIN_HOST_CPUS:
        raise ConfigurationError(
            f"this machine gives the worker {cpus} CPU; a worker needs at least {MIN_HOST_CPUS}. "
            "Run it on a bigger machine, or set IEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT to accept it"
        )
    available = node.override_available_cpu_count or max(cpus - 1, 1)
    wallet_path = _wallet_path(wallet)
    password = _wallet_password(wallet)
    _keep_secrets(password, docker, parts["ChainSettings"], parts["TeeSettings"])
    return Settings(
        scheduler=scheduler,
        node=node,
        chain=parts["ChainSettings"],
        wallet=wallet,
        docker=docker,
        data=parts["DataSettings"],
        result=parts["ResultSettings"],
        sandbox=parts["SandboxSettings"],
        tee=parts["TeeSettings"],
        log=parts["LogSettings"],
        proxy=parts["ProxySettings"],
        available_cpu_count=available,
        wallet_path=wallet_path,
        wallet_password=password,
    )


# Read once by load_settings, then taken out of the environment by scrub_environment.
SECRET_KEYS = (
    "IEXEC_WORKER_WALLET_PASSWORD",
    "IEXEC_WORKER_DOCKER_REGISTRY_PASSWORD_0",
    "IEXEC_WORKER_DOCKER_REGISTRY_PASSWORD_1",
    "IEXEC_WORKER_SCONTAIN_REGISTRY_PASSWORD",
)


def _keep_secrets(
    password: SecretStr, docker: DockerSettings, chain: ChainSettings, tee: TeeSettings
) -> None:
    """Register every secret for redaction: no log line, error or /health shows it."""
    register_secret(password.get_secret_value())
    for secret in (docker.registry_password_0, docker.registry_password_1, tee.scontain_registry_password):
        register_secret(secret.get_secret_value() if secret else None)
    for url in [chain.override_blockchain_node_address or "", *chain.blockchain_node_addresses]:
        if url:
            register_url_secrets(url)


def scrub_environment() -> list[str]:
    """Take the secrets read by :func:`load_settings` out of the process environment; returns their keys.

    The worker's child processes (keystore decryption, anything started later) and a reader of
    ``/proc/<pid>/environ`` then never see them.
    """
    removed = [key for key in SECRET_KEYS if os.environ.pop(key, None) is not None]
    return removed


def _reject_unknown_keys(keys: list[str], env_file: Path | None) -> None:
    known = known_keys()
    # IEXEC_DEVNET_* belong to the development network (devnet), which may share the environment.
    unknown = sorted(
        {k for k in keys if k.startswith("IEXEC_") and not k.startswith("IEXEC_DEVNET_") and k not in known}
    )
    if not unknown:
        return
    lines = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]}?" if close else "see .env.example for the keys this worker reads"
        lines.append(f"{key}: unknown setting; {hint}")
    where = f" (environment or {env_file})" if env_file else " (environment)"
    raise ConfigurationError("unknown IEXEC_ keys" + where + ":\n  " + "\n  ".join(lines))


def _describe(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if not key:  # a check across several keys names them in its message
            lines.append(message)
            continue
        secret = any(word in key for word in ("PASSWORD", "NODE_ADDRESS"))
        shown = "" if secret or error["type"] == "value_error" else f"={error['input']!r}"
        lines.append(redact(f"{key}{shown}: {message}"))
    return lines


def _check_registries(docker: DockerSettings) -> None:
    pairs = [
        ("IEXEC_WORKER_DOCKER_REGISTRY_USERNAME_0", docker.registry_username_0, docker.registry_password_0),
        ("IEXEC_WORKER_DOCKER_REGISTRY_USERNAME_1", docker.registry_username_1, docker.registry_password_1),
    ]
    for key, username, password in pairs:
        if username and password is None:
            raise ConfigurationError(
                f"{key} is set without a password; set {key.replace('USERNAME', 'PASSWORD')}"
            )
    if docker.registry_username_1 and not docker.registry_address_1:
        raise ConfigurationError(
            "IEXEC_WORKER_DOCKER_REGISTRY_USERNAME_1 is set without IEXEC_WORKER_DOCKER_REGISTRY_ADDRESS_1; "
            "set the registry host"
        )


def _wallet_path(wallet: WalletSettings) -> Path:
    if wallet.path is None:
        raise ConfigurationError(
            "IEXEC_WORKER_WALLET_PATH is not set; point it to the worker's encrypted keystore "
            "(create one with `iexec-worker wallet create`)"
        )
    if not wallet.path.is_file():
        raise ConfigurationError(
            f"IEXEC_WORKER_WALLET_PATH={wallet.path}: no such file; "
            "create one with `iexec-worker wallet create` or fix the path"
        )
    check_private_file(wallet.path, "IEXEC_WORKER_WALLET_PATH")
    return wallet.path


def _wallet_password(wallet: WalletSettings) -> SecretStr:
    if wallet.password is not None and wallet.password_file is not None:
        raise ConfigurationError(
            "IEXEC_WORKER_WALLET_PASSWORD and IEXEC_WORKER_WALLET_PASSWORD_FILE are both set; keep only one"
        )
    if wallet.password is not None:
        return wallet.password
    if wallet.password_file is None:
        raise ConfigurationError(
            "no wallet password: set IEXEC_WORKER_WALLET_PASSWORD_FILE to a file holding it "
            "(or IEXEC_WORKER_WALLET_PASSWORD)"
        )
    return read_password(password_file=wallet.password_file)
