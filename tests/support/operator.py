"""Helpers of the operator's commands end to end: the ``iexec-worker`` command as a process, and funding
a wallet on the devnet the way an operator would (ETH sent to it, RLC transferred to it)."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from devnet.accounts import Role, account
from devnet.contracts import send_transaction
from devnet.platform import Platform

ETH = 10**18
RLC = 10**9


@dataclass(frozen=True)
class Finished:
    code: int
    stdout: str
    stderr: str


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an operator's shell: no IEXEC_ setting leaks in from the test's own."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IEXEC_")}
    return {**clean, "PYTHONUNBUFFERED": "1", **(extra or {})}


async def iexec_worker(*args: str, stdin: str = "", within: float = 120) -> Finished:
    """``iexec-worker ARGS`` to completion."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=cli_env(),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), within)
    assert proc.returncode is not None
    return Finished(proc.returncode, out.decode(), err.decode())


async def send_eth(platform: Platform, to: str, wei: int) -> None:
    w3 = platform.devnet.w3
    tx = {"to": w3.to_checksum_address(to), "value": wei}
    await send_transaction(w3, tx, account(Role.ANYONE), label=f"{wei} wei to {to}")  # type: ignore[arg-type]


async def send_rlc(platform: Platform, to: str, nrlc: int) -> None:
    """RLC tokens into the wallet itself (not deposited), as a transfer from an exchange would."""
    toolkit = platform.toolkit
    await toolkit.send(
        toolkit.rlc.functions.transfer(toolkit.w3.to_checksum_address(to), nrlc), account(Role.ADMIN)
    )


async def rlc_in_wallet(platform: Platform, address: str) -> int:
    toolkit = platform.toolkit
    return int(await toolkit.rlc.functions.balanceOf(toolkit.w3.to_checksum_address(address)).call())


def env_lines(path: Path) -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    return {key: value for key, value in pairs}
