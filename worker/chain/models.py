"""What the worker reads from and writes to the PoCo contracts, as typed immutable values.

Times are whole seconds (Unix time for instants, a duration for ``max_execution_time``), as the
contracts store them; the Java stack multiplies them by 1000, we do not. ``ChainClient`` gives
addresses checksummed (the devnet toolkit fills the deal and contribution types lowercase), bytes32
values ``0x``-prefixed lowercase hex. Sources: PoCo ``IexecPocoAccessors`` and ``IexecLibCore_v5``,
iexec-commons-poco ``ChainTask``, ``ChainDeal`` and ``TaskDescription``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from worker.protocol.crypto import ZERO_ADDRESS, ZERO_BYTES32
from worker.protocol.status import ChainContributionStatus, ChainTaskStatus
from worker.protocol.tee import TeeFramework, is_tee_tag


@dataclass(frozen=True, slots=True)
class ChainTask:
    """The whole ``viewTask`` struct, addresses lowercase; shared by the worker and the devnet.

    The worker reads the legacy view (``viewTaskABILegacy``), which stops at ``results``: the last
    three fields then keep their defaults.
    """

    task_id: str
    status: ChainTaskStatus
    deal_id: str
    index: int
    timeref: int
    contribution_deadline: int
    reveal_deadline: int
    final_deadline: int
    consensus_value: str = ZERO_BYTES32
    reveal_counter: int = 0
    winner_counter: int = 0
    contributors: tuple[str, ...] = ()
    results: bytes = b""
    result_digest: str = ZERO_BYTES32
    results_timestamp: int = 0
    results_callback: bytes = b""

    def has_contributor(self, wallet: str) -> bool:
        return wallet.lower() in self.contributors


@dataclass(frozen=True, slots=True)
class ChainContribution:
    status: ChainContributionStatus
    result_hash: str
    result_seal: str
    enclave_challenge: str
    weight: int


class ChainAccount(NamedTuple):
    """A hub account in nRLC: ``stake`` is the free deposit, ``locked`` is frozen by contributions."""

    stake: int
    locked: int


@dataclass(frozen=True, slots=True)
class DealAsset:
    pointer: str
    owner: str
    price: int


@dataclass(frozen=True, slots=True)
class ChainDeal:
    deal_id: str
    app: DealAsset
    dataset: DealAsset
    workerpool: DealAsset
    trust: int
    category: int
    tag: str
    requester: str
    beneficiary: str
    callback: str
    params: str
    start_time: int
    bot_first: int
    bot_size: int
    worker_stake: int
    scheduler_reward_ratio: int
    sponsor: str


@dataclass(frozen=True, slots=True)
class ChainCategory:
    category_id: int
    name: str
    description: str
    work_clock_time_ref: int


@dataclass(frozen=True, slots=True)
class ChainApp:
    address: str
    owner: str
    name: str
    app_type: str
    multiaddr: bytes
    checksum: str
    mrenclave: bytes


@dataclass(frozen=True, slots=True)
class ChainDataset:
    address: str
    owner: str
    name: str
    multiaddr: bytes
    checksum: str


@dataclass(frozen=True, slots=True)
class ChainBlock:
    number: int
    timestamp: int
    base_fee_per_gas: int | None  # None before London / on chains without EIP-1559


@dataclass(frozen=True, slots=True)
class TaskViews:
    """What a worker transaction's pre-checks read of one task, all at once (see ``ChainClient.task_views``).

    ``account`` and ``balance`` are None when not asked for; ``priority_fee`` is the node's
    ``eth_maxPriorityFeePerGas`` on a chain whose blocks carry a base fee, ``gas_price`` its
    ``eth_gasPrice`` on a legacy one (None when not asked for or not given).
    """

    task: ChainTask
    contribution: ChainContribution
    block: ChainBlock
    account: ChainAccount | None = None
    balance: int | None = None
    priority_fee: int | None = None
    gas_price: int | None = None


@dataclass(frozen=True, slots=True)
class TxReceipt:
    """Where a worker transaction landed: the block and hash of its task event log."""

    block_number: int
    tx_hash: str


class TxKind(StrEnum):
    CONTRIBUTE = "CONTRIBUTE"
    REVEAL = "REVEAL"
    CONTRIBUTE_AND_FINALIZE = "CONTRIBUTE_AND_FINALIZE"


@dataclass(frozen=True, slots=True)
class SentTx:
    """A signed transaction as recorded before broadcast; ``raw_tx`` can be broadcast again as is."""

    task_id: str
    kind: TxKind
    tx_hash: str
    nonce: int
    raw_tx: str


class _JsonNumber(str):
    """A JSON number kept as its source text: Jackson gives a text field the number as it was written."""

    __slots__ = ()


class _NotDealParams(Exception):
    pass


_DEAL_PARAM_KEYS = frozenset({
    "iexec_args", "iexec_input_files", "iexec_result_encryption", "iexec_result_storage_provider",
    "iexec_result_storage_proxy", "iexec_secrets", "bulk_cid",
})  # fmt: skip
_JSON_BLANK = " \t\r\n"


def _reject_constant(name: str) -> Any:
    raise _NotDealParams(name)  # NaN and Infinity are not JSON for Jackson


def _text(value: Any) -> str | None:
    """A text field as Jackson fills it: strings as is, scalars as their JSON text, null as null."""
    if value is None or isinstance(value, str):
        return None if value is None else str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    raise _NotDealParams


def _flag(value: Any) -> bool:
    """A boolean field as Jackson fills it, with its default coercions of text, integers and null."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, _JsonNumber):
        if any(c in value for c in ".eE"):
            raise _NotDealParams
        return int(value) != 0
    if isinstance(value, str):
        if value in ("true", "True", "TRUE"):
            return True
        if value in ("false", "False", "FALSE", ""):
            return False
    raise _NotDealParams


@dataclass(frozen=True, slots=True)
class DealParams:
    """The requester's ``params`` string of a deal: JSON with the keys below, or plain app arguments.

    Parsed as every Java worker parses it (Jackson with its default settings), since the arguments and
    input files decide the result digest: a string that is not a JSON object of exactly these keys with
    values of the right shape (an unknown key included) is taken whole as ``iexec_args``; text after
    the object is ignored; scalars given for a text field become their JSON text. Absent keys stay
    None / empty.
    """

    iexec_args: str | None = None
    iexec_input_files: tuple[str, ...] = ()
    iexec_result_encryption: bool = False
    iexec_result_storage_provider: str | None = None
    iexec_result_storage_proxy: str | None = None
    iexec_secrets: dict[str, str] = field(default_factory=dict)
    bulk_cid: str | None = None

    @classmethod
    def parse(cls, params: str) -> DealParams:
        decoder = json.JSONDecoder(
            parse_int=_JsonNumber, parse_float=_JsonNumber, parse_constant=_reject_constant
        )
        try:
            data, _end = decoder.raw_decode(params.lstrip(_JSON_BLANK))
            if not isinstance(data, dict):
                raise _NotDealParams
            return cls._from_json(data)
        except (ValueError, _NotDealParams):
            return cls(iexec_args=params)

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> DealParams:
        if not data.keys() <= _DEAL_PARAM_KEYS:
            raise _NotDealParams
        files = data.get("iexec_input_files")
        if files is not None and not isinstance(files, list):
            raise _NotDealParams
        secrets = data.get("iexec_secrets")
        if secrets is not None and not isinstance(secrets, dict):
            raise _NotDealParams
        input_files = tuple(_text(f) for f in files or [])
        secret_values = {str(k): _text(v) for k, v in (secrets or {}).items()}
        # A null inside the list or map would make Java workers fail later; refuse the shape instead.
        if None in input_files or None in secret_values.values():
            raise _NotDealParams
        return cls(
            iexec_args=_text(data.get("iexec_args")),
            iexec_input_files=tuple(f for f in input_files if f is not None),
            iexec_result_encryption=_flag(data.get("iexec_result_encryption")),
            iexec_result_storage_provider=_text(data.get("iexec_result_storage_provider")),
            iexec_result_storage_proxy=_text(data.get("iexec_result_storage_proxy")),
            iexec_secrets={k: v for k, v in secret_values.items() if v is not None},
            bulk_cid=_text(data.get("bulk_cid")),
        )


@dataclass(frozen=True, slots=True)
class TaskDescription:
    """Everything a replicate needs to know about its task, assembled from the hub views as iexec-commons-poco
    ``TaskDescription`` is."""

    task_id: str
    deal_id: str
    bot_index: int
    app_type: str
    app_uri: str
    app_checksum: str
    app_mrenclave: str
    app_address: str
    app_owner: str
    app_price: int
    dataset_address: str
    dataset_owner: str
    dataset_price: int
    dataset_uri: str
    dataset_checksum: str
    workerpool_address: str
    workerpool_owner: str
    workerpool_price: int
    trust: int
    category: int
    tag: str
    requester: str
    beneficiary: str
    callback: str
    deal_params: DealParams
    start_time: int
    bot_first_index: int
    bot_size: int
    worker_stake: int
    tee_framework: TeeFramework | None
    max_execution_time: int
    contribution_deadline: int
    final_deadline: int

    @property
    def is_tee_task(self) -> bool:
        return is_tee_tag(self.tag)

    def contains_callback(self) -> bool:
        return bool(self.callback) and self.callback.lower() != ZERO_ADDRESS

    def contains_dataset(self) -> bool:
        return (
            self.dataset_address.lower() != ZERO_ADDRESS
            and bool(self.dataset_uri.strip())
            and bool(self.dataset_checksum.strip())
        )

    def is_eligible_to_contribute_and_finalize(self) -> bool:
        """Trust 1 and a TEE framework: one ``contributeAndFinalize`` ends the task (commons-poco ``TaskDescription``)."""
        return self.trust == 1 and self.tee_framework is not None

    def requires_pre_compute(self) -> bool:
        """A dataset, input files or a bulk request: the pre-compute enclave fetches them for a TEE task."""
        return (
            self.contains_dataset()
            or bool(self.deal_params.iexec_input_files)
            or bool((self.deal_params.bulk_cid or "").strip())
        )
