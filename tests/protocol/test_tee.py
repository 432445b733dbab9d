"""Unit tests of the TEE vocabulary, with the worked vectors of iexec-commons-poco's formulas (docs/tee.md)."""

from __future__ import annotations

import json

import pytest
from eth_account import Account

from worker.protocol.crypto import result_hash, result_seal, sign_eip191
from worker.protocol.tee import (
    ComputeStage,
    TeeEnclaveConfiguration,
    TeeFramework,
    challenge_request_hash,
    enclave_challenge_hash,
    enclave_message,
    enclave_signature_problem,
    signed_by_enclave,
    tee_framework,
    web2_secret_hash,
)

ENCLAVE_KEY = "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356"
ENCLAVE = "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955"
TASK = "0x" + "00" * 31 + "01"
WORKER = "0x1111111111111111111111111111111111111111"
DIGEST = "0x" + "ab" * 32


def test_the_worked_vectors() -> None:
    assert (
        enclave_challenge_hash(TASK, WORKER)
        == "0xf3a32c19d9d554e98004558d3580c44928e7dbe91df1a07d7fc42101acefef8e"
    )
    assert sign_eip191(enclave_challenge_hash(TASK, WORKER), ENCLAVE_KEY) == (
        "0xcf3639b6dc0dad614beaf618dfa63f252b1f6f873f3e1dc3ba8421b10d71585a6b790b70029d7011b02019cdaf2484b939aa84"
        "27925fbdb9c9d026a53659492d1c"
    )
    assert result_hash(TASK, DIGEST) == "0x2a43c3ecb15687fc0db5d102f7326305ecd622ed8f585bd19997f6e36ba72674"
    assert (
        result_seal(WORKER, TASK, DIGEST)
        == "0xd86aa7b84d93e9808315ba1b162f2c269f0d59e9daaae1e5d1fdf574a13b83ed"
    )
    assert (
        enclave_message(TASK, WORKER, DIGEST)
        == "0x4b29c1c216f0a9b25b7bc21f259a13c6f687ae67bfe632b1897fd492c9c25350"
    )
    assert sign_eip191(enclave_message(TASK, WORKER, DIGEST), ENCLAVE_KEY) == (
        "0x8177eb20189ebf74bc3e80bb74d541af7c4638395169089cad022a11ec0889d6275d4cd27048e0edafab602bed584a42632bbc"
        "f741ed68074f8432133938e5661b"
    )
    assert web2_secret_hash(WORKER, "iexec-result-iexec-ipfs-token", "jwt-token") == (
        "0x14e689207a82421155056d227f0a73532bb2914a03a0064454aea7aab9015871"
    )
    assert (
        challenge_request_hash(TASK) == "0xb10e2d527612073b26eecdfd717e6a320cf44b4afac2b0732d9fcbe2b7fa0cf6"
    )


def test_the_enclave_signature_is_accepted_only_for_this_worker_task_and_digest() -> None:
    signature = sign_eip191(enclave_message(TASK, WORKER, DIGEST), ENCLAVE_KEY)
    assert enclave_signature_problem(TASK, WORKER, DIGEST, signature, ENCLAVE) is None
    forged = sign_eip191(enclave_message(TASK, WORKER, DIGEST), Account.create().key)
    assert "not by the task's enclave challenge" in (
        enclave_signature_problem(TASK, WORKER, DIGEST, forged, ENCLAVE) or ""
    )
    other_worker = "0x" + "22" * 20
    assert enclave_signature_problem(TASK, other_worker, DIGEST, signature, ENCLAVE) is not None
    assert enclave_signature_problem(TASK, WORKER, "0x" + "cd" * 32, signature, ENCLAVE) is not None
    assert enclave_signature_problem(TASK, WORKER, DIGEST, "0x" + "00" * 65, ENCLAVE) is not None
    assert enclave_signature_problem(TASK, WORKER, DIGEST, signature[:-2], ENCLAVE) is not None
    assert enclave_signature_problem(TASK, WORKER, DIGEST, signature, "0x" + "00" * 20) is not None


def test_an_enclave_call_is_signed_by_the_challenge_only() -> None:
    signature = sign_eip191(enclave_challenge_hash(TASK, WORKER), ENCLAVE_KEY)
    assert signed_by_enclave(TASK, WORKER, signature, ENCLAVE)
    assert not signed_by_enclave(TASK, WORKER, signature, "0x" + "00" * 20)
    assert not signed_by_enclave(
        TASK, WORKER, sign_eip191(enclave_challenge_hash(TASK, WORKER), Account.create().key), ENCLAVE
    )
    assert not signed_by_enclave(TASK, WORKER, "0xnot-a-signature", ENCLAVE)


@pytest.mark.parametrize(
    ("tag", "framework"),
    [
        ("0x" + "00" * 31 + "03", TeeFramework.SCONE),
        ("0x" + "00" * 31 + "05", TeeFramework.GRAMINE),
        ("0x" + "00" * 31 + "09", TeeFramework.TDX),
        ("0x" + "00" * 30 + "0109", TeeFramework.TDX),  # GPU bit: same framework
        ("0x" + "00" * 31 + "01", None),  # TEE without a framework
        ("0x" + "00" * 31 + "07", None),  # two frameworks
        ("0x" + "00" * 32, None),
    ],
)
def test_framework_from_the_low_nibble_of_the_tag(tag: str, framework: TeeFramework | None) -> None:
    assert tee_framework(tag) is framework


def test_enclave_configuration_of_an_app() -> None:
    good = {"framework": "scone", "version": "v5", "entrypoint": "python /app/app.py", "heapSize": 1073741824,
            "fingerprint": "ab" * 32}  # fmt: skip
    parsed = TeeEnclaveConfiguration.parse(json.dumps(good))
    assert parsed is not None
    assert parsed.framework is TeeFramework.SCONE
    assert parsed.heap_size == 1073741824
    assert parsed.problems() == []
    provider = TeeEnclaveConfiguration.parse(json.dumps({**good, "framework": None, "provider": "GRAMINE"}))
    assert provider is not None
    assert provider.framework is TeeFramework.GRAMINE
    bad = TeeEnclaveConfiguration.parse(
        json.dumps({**good, "entrypoint": "", "heapSize": 0, "fingerprint": "x"})
    )
    assert bad is not None
    assert len(bad.problems()) == 3
    # Gramine needs no entrypoint nor heap, only the fingerprint.
    gramine = TeeEnclaveConfiguration.parse(json.dumps({"framework": "GRAMINE", "fingerprint": "ab" * 32}))
    assert gramine is not None
    assert gramine.problems() == []
    assert TeeEnclaveConfiguration.parse("") is None
    assert TeeEnclaveConfiguration.parse("[1]") is None


def test_compute_stage_is_read_case_insensitively() -> None:
    assert ComputeStage.parse("PRE") is ComputeStage.PRE
    assert ComputeStage.parse("post") is ComputeStage.POST
    assert ComputeStage.parse("app") is None
