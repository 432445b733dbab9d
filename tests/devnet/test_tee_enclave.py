"""The emulated enclave's own crypto (devnet/tee/enclave.py, standard library and pycryptodome only)
gives the same bytes as the worker's: signatures, addresses, result digests."""

from __future__ import annotations

import os
from pathlib import Path

from devnet.tee import enclave
from worker.protocol.crypto import keccak_hex, sign_eip191
from worker.result import compute_result_digest
from worker.result.computed import ComputedFile


def test_signatures_and_addresses_are_those_of_eth_account() -> None:
    for _ in range(5):
        key, message = "0x" + os.urandom(32).hex(), "0x" + os.urandom(32).hex()
        assert enclave.sign_eip191(message, key) == sign_eip191(message, key)
    key = "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356"
    assert enclave.address_of(key) == "0x14dc79964da2c08b23698b3d3cc7ca32193d9955"
    assert enclave.keccak_hex("0x01", "0x02") == keccak_hex("0x01", "0x02")


def test_result_digests_are_those_of_the_worker(tmp_path: Path) -> None:
    out = tmp_path / "iexec_out"
    (out / "folder").mkdir(parents=True)
    (out / "result.txt").write_text("hello\n")
    (out / "folder" / "b.txt").write_text("b")
    (out / "folder" / "a.txt").write_text("a")
    for path in ("/iexec_out/result.txt", "/iexec_out/folder"):
        computed = ComputedFile(deterministic_output_path=path)
        expected = compute_result_digest(tmp_path, computed, callback=False)
        target = out / path.removeprefix("/iexec_out/")
        assert enclave.result_digest(out, {"deterministic-output-path": str(target)}, False) == expected
    assert enclave.result_digest(out, {"callback-data": "0x1234"}, True) == keccak_hex("0x1234")
