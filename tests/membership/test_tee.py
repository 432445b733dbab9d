"""Unit tests of the TEE detection policy, with a fake SGX probe and agent files in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.compute import SgxDevices, SgxUnavailable
from worker.membership.tee import detect_tee
from worker.protocol.errors import ConfigurationError
from worker.protocol.tee import SgxDriverMode

DEVICES = SgxDevices(SgxDriverMode.NATIVE, ("/dev/sgx/enclave", "/dev/sgx/provision"))
NO_SGX = SgxDevices(SgxDriverMode.NONE, ())


def probe(result: SgxDevices | Exception):  # type: ignore[no-untyped-def]
    async def run() -> SgxDevices:
        if isinstance(result, Exception):
            raise result
        return result

    return run


@pytest.fixture
def agent(tmp_path: Path) -> Path:
    path = tmp_path / "secret_provider_agent"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


async def test_sgx_found_is_registered_and_logged(agent: Path) -> None:
    found = await detect_tee(
        probe(DEVICES), sgx_mode=SgxDriverMode.NATIVE, tdx_mode="auto", tdx_agent=agent, tdx_guest=False
    )
    assert found.sgx.enabled
    assert not found.tdx
    assert "SGX NATIVE: /dev/sgx/enclave, /dev/sgx/provision" in found.lines()[0]
    assert found.lines()[1].startswith("TDX: off")


async def test_sgx_configured_but_missing_refuses_to_start(agent: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"SGX required but not supported.*/dev/isgx"):
        await detect_tee(
            probe(SgxUnavailable("/dev/isgx is not a character device")),
            sgx_mode=SgxDriverMode.LEGACY, tdx_mode="false", tdx_agent=agent,
        )  # fmt: skip


async def test_tdx_is_on_in_a_td_guest_with_an_executable_agent(agent: Path, tmp_path: Path) -> None:
    on = await detect_tee(
        probe(NO_SGX), sgx_mode=SgxDriverMode.NONE, tdx_mode="auto", tdx_agent=agent, tdx_guest=True
    )
    assert on.tdx
    assert on.any
    not_guest = await detect_tee(
        probe(NO_SGX), sgx_mode=SgxDriverMode.NONE, tdx_mode="auto", tdx_agent=agent, tdx_guest=False
    )
    assert not not_guest.any
    no_agent = await detect_tee(
        probe(NO_SGX),
        sgx_mode=SgxDriverMode.NONE,
        tdx_mode="auto",
        tdx_agent=tmp_path / "absent",
        tdx_guest=True,
    )
    assert not no_agent.tdx
    off = await detect_tee(
        probe(NO_SGX), sgx_mode=SgxDriverMode.NONE, tdx_mode="false", tdx_agent=agent, tdx_guest=True
    )
    assert not off.tdx


async def test_tdx_forced_on_needs_the_agent(agent: Path, tmp_path: Path) -> None:
    forced = await detect_tee(
        probe(NO_SGX), sgx_mode=SgxDriverMode.NONE, tdx_mode="true", tdx_agent=agent, tdx_guest=False
    )
    assert forced.tdx
    with pytest.raises(ConfigurationError, match="TEE_TDX_SECRET_PROVIDER_AGENT"):
        await detect_tee(
            probe(NO_SGX), sgx_mode=SgxDriverMode.NONE, tdx_mode="true", tdx_agent=tmp_path / "absent"
        )
