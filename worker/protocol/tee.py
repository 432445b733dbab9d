"""The words of trusted execution (TEE): frameworks and deal tags, enclave configurations, the SMS's
wire models, TDX sessions, the enclaves' callbacks to the worker, and the hashes they sign.

Pure: no I/O. Sources: iexec-commons-poco ``TeeUtils``, ``TeeFramework``, ``TeeEnclaveConfiguration`` and
``TeeEnclaveConfigurationValidator``; iexec-sms-library ``TeeServicesProperties``, ``TeeSessionGenerationResponse``,
``TeeSessionGenerationError`` and ``ReservedSecretKeyName``; iexec-sms ``TdxSession``; iexec-common
``WorkflowError`` and ``ExitMessage``; iexec-worker ``ComputeStage`` and ``EnclaveAuthorizationService``.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.protocol.crypto import ZERO_ADDRESS, keccak_hex, recover_eip191, result_hash, result_seal
from worker.protocol.models import WireModel


class TeeFramework(StrEnum):
    SCONE = "SCONE"
    GRAMINE = "GRAMINE"
    TDX = "TDX"

    @property
    def needs_sgx(self) -> bool:
        return self is not TeeFramework.TDX


class SgxDriverMode(StrEnum):
    """How the host exposes SGX (iexec-commons-containers ``SgxDriverMode``): no SGX, the out-of-tree
    driver (``/dev/isgx``), or the in-kernel one (``/dev/sgx/enclave``, ``/dev/sgx/provision``)."""

    NONE = "NONE"
    LEGACY = "LEGACY"
    NATIVE = "NATIVE"

    @property
    def devices(self) -> tuple[str, ...]:
        return _SGX_DEVICES[self]


_SGX_DEVICES = {
    SgxDriverMode.NONE: (),
    SgxDriverMode.LEGACY: ("/dev/isgx",),
    SgxDriverMode.NATIVE: ("/dev/sgx/enclave", "/dev/sgx/provision"),
}
# The names the in-kernel driver gives the same devices when no udev rule links /dev/sgx/*.
SGX_KERNEL_DEVICES = ("/dev/sgx_enclave", "/dev/sgx_provision")
LEGACY_SGX_DRIVER_VERSION = "/sys/module/isgx/version"


def _tag(low_nibble: int) -> str:
    return "0x" + "0" * 63 + format(low_nibble, "x")


TEE_SCONE_ONLY_TAG = _tag(0b0011)
TEE_GRAMINE_ONLY_TAG = _tag(0b0101)
TEE_TDX_ONLY_TAG = _tag(0b1001)
FRAMEWORK_TAGS = {
    TeeFramework.SCONE: TEE_SCONE_ONLY_TAG,
    TeeFramework.GRAMINE: TEE_GRAMINE_ONLY_TAG,
    TeeFramework.TDX: TEE_TDX_ONLY_TAG,
}

# The low nibble of the tag, compared whole: bit 0 says "TEE", one more bit names the framework.
# Higher bits (GPU: bit 8) do not change the framework; 0x…01 alone names none.
_TEE_FRAMEWORK_BITS = {0b0011: TeeFramework.SCONE, 0b0101: TeeFramework.GRAMINE, 0b1001: TeeFramework.TDX}


def tee_framework(tag: str) -> TeeFramework | None:
    """Framework named by a deal tag, None for a standard task or an unknown combination."""
    raw = bytes.fromhex(tag.removeprefix("0x"))
    return _TEE_FRAMEWORK_BITS.get(raw[-1] & 0x0F) if raw else None


def is_tee_tag(tag: str) -> bool:
    raw = bytes.fromhex(tag.removeprefix("0x"))
    return bool(raw) and bool(raw[-1] & 0x01)


# -- the app's enclave configuration (its on-chain ``mrenclave`` bytes, as JSON) ---------------------

_BYTES32 = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


class TeeEnclaveConfiguration(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    framework: TeeFramework | None = Field(default=None, validation_alias="provider")
    version: str = ""
    entrypoint: str = ""
    heap_size: int = Field(default=0, alias="heapSize")
    fingerprint: str = ""

    @classmethod
    def parse(cls, mrenclave: str) -> TeeEnclaveConfiguration | None:
        """The configuration written in the app's ``mrenclave``; None when it is not such JSON."""
        try:
            body: Any = json.loads(mrenclave)
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        if "framework" in body and "provider" not in body:
            body = {**body, "provider": body["framework"]}
        if isinstance(body.get("provider"), str):
            body["provider"] = body["provider"].upper()
        try:
            return cls.model_validate(body)
        except ValidationError:
            return None

    def problems(self) -> list[str]:
        """What the reference validator refuses; empty when valid."""
        found = []
        if self.framework is not TeeFramework.GRAMINE:
            if not self.entrypoint.strip():
                found.append("entrypoint is empty")
            if self.heap_size <= 0:
                found.append("heapSize is not positive")
        if not _BYTES32.match(self.fingerprint):
            found.append("fingerprint is not 32 bytes of hex")
        return found


# -- the SMS's API ---------------------------------------------------------------------------------


class ComputeServiceProperties(WireModel):
    """Image and enclave of the pre-compute or post-compute stage (SMS ``PreComputeProperties``…)."""

    image: str = ""
    fingerprint: str = ""
    entrypoint: str | None = None
    heap_size_in_bytes: int = 0


class TeeServicesProperties(WireModel):
    """``GET /tee/properties/{framework}/{version}``; ``lasImage`` for SCONE only."""

    tee_framework: TeeFramework
    tee_framework_version: str = ""
    pre_compute_properties: ComputeServiceProperties = Field(default_factory=ComputeServiceProperties)
    post_compute_properties: ComputeServiceProperties = Field(default_factory=ComputeServiceProperties)
    las_image: str | None = None


class TeeSession(WireModel):
    """``data`` of ``POST /tee/sessions``: the session and where enclaves fetch their secrets."""

    session_id: str
    secret_provisioning_url: str


class TeeSessionGenerationError(StrEnum):
    INVALID_AUTHORIZATION = "INVALID_AUTHORIZATION"
    EXECUTION_NOT_AUTHORIZED_EMPTY_PARAMS_UNAUTHORIZED = "EXECUTION_NOT_AUTHORIZED_EMPTY_PARAMS_UNAUTHORIZED"
    EXECUTION_NOT_AUTHORIZED_NO_MATCH_ONCHAIN_TYPE = "EXECUTION_NOT_AUTHORIZED_NO_MATCH_ONCHAIN_TYPE"
    EXECUTION_NOT_AUTHORIZED_GET_CHAIN_TASK_FAILED = "EXECUTION_NOT_AUTHORIZED_GET_CHAIN_TASK_FAILED"
    EXECUTION_NOT_AUTHORIZED_TASK_NOT_ACTIVE = "EXECUTION_NOT_AUTHORIZED_TASK_NOT_ACTIVE"
    EXECUTION_NOT_AUTHORIZED_GET_CHAIN_DEAL_FAILED = "EXECUTION_NOT_AUTHORIZED_GET_CHAIN_DEAL_FAILED"
    EXECUTION_NOT_AUTHORIZED_INVALID_SIGNATURE = "EXECUTION_NOT_AUTHORIZED_INVALID_SIGNATURE"
    GET_SIGNATURE_TOKENS_FAILED_EMPTY_WORKER_ADDRESS = "GET_SIGNATURE_TOKENS_FAILED_EMPTY_WORKER_ADDRESS"
    GET_SIGNATURE_TOKENS_FAILED_EMPTY_PUBLIC_ENCLAVE_CHALLENGE = (
        "GET_SIGNATURE_TOKENS_FAILED_EMPTY_PUBLIC_ENCLAVE_CHALLENGE"
    )
    GET_SIGNATURE_TOKENS_FAILED_EMPTY_TEE_CHALLENGE = "GET_SIGNATURE_TOKENS_FAILED_EMPTY_TEE_CHALLENGE"
    GET_SIGNATURE_TOKENS_FAILED_EMPTY_TEE_CREDENTIALS = "GET_SIGNATURE_TOKENS_FAILED_EMPTY_TEE_CREDENTIALS"
    PRE_COMPUTE_GET_DATASET_SECRET_FAILED = "PRE_COMPUTE_GET_DATASET_SECRET_FAILED"
    APP_COMPUTE_NO_ENCLAVE_CONFIG = "APP_COMPUTE_NO_ENCLAVE_CONFIG"
    APP_COMPUTE_INVALID_ENCLAVE_CONFIG = "APP_COMPUTE_INVALID_ENCLAVE_CONFIG"
    POST_COMPUTE_GET_ENCRYPTION_TOKENS_FAILED_EMPTY_BENEFICIARY_KEY = (
        "POST_COMPUTE_GET_ENCRYPTION_TOKENS_FAILED_EMPTY_BENEFICIARY_KEY"
    )
    POST_COMPUTE_GET_STORAGE_TOKENS_FAILED = "POST_COMPUTE_GET_STORAGE_TOKENS_FAILED"
    SECURE_SESSION_STORAGE_CALL_FAILED = "SECURE_SESSION_STORAGE_CALL_FAILED"
    SECURE_SESSION_GENERATION_FAILED = "SECURE_SESSION_GENERATION_FAILED"
    SECURE_SESSION_NO_TEE_FRAMEWORK = "SECURE_SESSION_NO_TEE_FRAMEWORK"
    GET_TASK_DESCRIPTION_FAILED = "GET_TASK_DESCRIPTION_FAILED"
    NO_SESSION_REQUEST = "NO_SESSION_REQUEST"
    NO_TASK_DESCRIPTION = "NO_TASK_DESCRIPTION"
    UNKNOWN_ISSUE = "UNKNOWN_ISSUE"


# Web2 secrets the SMS reserves (iexec-sms-library ``ReservedSecretKeyName``).
RESULT_ENCRYPTION_PUBLIC_KEY = "iexec-result-encryption-public-key"
RESULT_DROPBOX_TOKEN = "iexec-result-dropbox-token"
RESULT_IPFS_TOKEN = "iexec-result-iexec-ipfs-token"
RESULT_PROXY_URL = "iexec-result-iexec-result-proxy-url"

SMS_DOMAIN = "IEXEC_SMS_DOMAIN"


def _text_hash(text: str) -> str:
    return keccak_hex(text.encode().hex())


def web2_secret_hash(owner: str, name: str, value: str) -> str:
    """What the owner signs (EIP-191) to push a web2 secret: H(keccak(domain) ‖ owner ‖ keccak(name) ‖ keccak(value))."""
    return keccak_hex(_text_hash(SMS_DOMAIN), owner, _text_hash(name), _text_hash(value))


def challenge_request_hash(task_id: str) -> str:
    """What the workerpool owner signs to ask the SMS for a task's enclave challenge: H(taskId)."""
    return keccak_hex(task_id)


# -- TDX sessions (the file the secret provider agent writes) -----------------------------------------

PRE_COMPUTE = "pre-compute"
APP = "app"
POST_COMPUTE = "post-compute"


class TdxService(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    image_name: str = ""
    fingerprint: str = ""
    environment: dict[str, str] = Field(default_factory=dict)


class TdxSession(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = ""
    version: str = ""
    services: list[TdxService] = Field(default_factory=list)

    def service(self, name: str) -> TdxService | None:
        return next((s for s in self.services if s.name == name), None)


# -- what the enclaves send to the worker ------------------------------------------------------------


class ComputeStage(StrEnum):
    PRE = "pre"
    POST = "post"

    @classmethod
    def parse(cls, text: str) -> ComputeStage | None:
        """Case-insensitive, as the reference's converter."""
        try:
            return cls(text.lower())
        except ValueError:
            return None


class WorkflowError(BaseModel):
    """One cause an enclave reports, ``{"cause": "...", "message": "..."}``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    cause: str
    message: str | None = None


def enclave_challenge_hash(task_id: str, worker: str) -> str:
    """What an enclave signs with the task's challenge key to call the worker: H(taskId ‖ worker)."""
    return keccak_hex(task_id, worker)


def enclave_message(task_id: str, worker: str, result_digest: str) -> str:
    """What the enclave signs for a result: H(resultHash ‖ resultSeal)."""
    return keccak_hex(result_hash(task_id, result_digest), result_seal(worker, task_id, result_digest))


def enclave_signature_problem(
    task_id: str, worker: str, result_digest: str, signature: str | None, enclave_challenge: str
) -> str | None:
    """Why ``signature`` is not the task enclave's signature of this worker's result; None when it is.

    The worker recomputes resultHash and resultSeal with its own wallet, so a result sealed for
    another worker, another task or another digest fails as surely as a forged one.
    """
    raw_signature = (signature or "").removeprefix("0x")
    if len(raw_signature) != 130 or int(raw_signature or "0", 16) == 0:
        return "the enclave signature is not 65 non-zero bytes"
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", enclave_challenge) or enclave_challenge.lower() == ZERO_ADDRESS:
        return f"enclave challenge {enclave_challenge!r} is not an address"
    if not _BYTES32.match(result_digest) or int(result_digest, 16) == 0:
        return "the result digest is not a non-zero bytes32"
    try:
        signer = recover_eip191(enclave_message(task_id, worker, result_digest), "0x" + raw_signature)
    except ValueError as exc:
        return f"the enclave signature cannot be recovered ({exc})"
    if signer != enclave_challenge.lower():
        return f"the result is signed by {signer}, not by the task's enclave challenge {enclave_challenge.lower()}"
    return None


def signed_by_enclave(task_id: str, worker: str, signature: str, enclave_challenge: str) -> bool:
    """An enclave's call to the worker: EIP-191 of H(taskId ‖ worker) by the enclave challenge."""
    try:
        signer = recover_eip191(enclave_challenge_hash(task_id, worker), signature)
    except ValueError:
        return False
    return enclave_challenge.lower() != ZERO_ADDRESS and signer == enclave_challenge.lower()
