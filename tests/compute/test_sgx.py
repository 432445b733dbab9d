"""Unit tests of the host side of SGX detection (no container: the Docker check is in the TEE e2e tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.compute import SgxUnavailable, host_devices
from worker.protocol.tee import SgxDriverMode


def test_no_sgx_means_no_device() -> None:
    assert host_devices(SgxDriverMode.NONE, ["/dev/whatever"]) == ()


def test_character_devices_named_by_the_setting_are_taken() -> None:
    # /dev/null is a character device, as the SGX ones are: the host check accepts it.
    assert host_devices(SgxDriverMode.NATIVE, ["/dev/null"]) == ("/dev/null",)


def test_missing_or_regular_files_are_refused_with_their_path(tmp_path: Path) -> None:
    regular = tmp_path / "sgx_enclave"
    regular.write_text("")
    with pytest.raises(SgxUnavailable, match=f"{regular}.*IEXEC_WORKER_SGX_DRIVER_MODE=NONE"):
        host_devices(SgxDriverMode.NATIVE, [str(regular), "/dev/null"])
    with pytest.raises(SgxUnavailable, match="/nowhere/isgx"):
        host_devices(SgxDriverMode.LEGACY, ["/nowhere/isgx"])
