"""Helpers of the deploy tests: commands as an operator types them, the images, the README's steps."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from worker.compute.firewall import FirewallPlan, bridge_name

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
README = ROOT / "README.md"
WORKER_UID = 10001


@dataclass(frozen=True)
class Ran:
    code: int
    output: str  # stdout and stderr, interleaved
    seconds: float


async def run(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    within: float = 600,
    check: bool = True,
    stdin: str | None = None,
) -> Ran:
    """Run a command to completion (``env`` adds to this process's environment); fail with its output."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(stdin.encode() if stdin else None), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{' '.join(args)}: still running after {within} s") from None
    ran = Ran(process.returncode or 0, out.decode(errors="replace"), time.monotonic() - started)
    if check and ran.code != 0:
        raise AssertionError(f"{' '.join(args)} failed ({ran.code}):\n{ran.output[-4000:]}")
    return ran


def readme_command(command: str) -> str:
    """``command`` as the README shows it: the test that runs it keeps the README honest."""
    text = README.read_text()
    assert command in text, f"the README no longer shows `{command}`: update the test or the README"
    return command


async def compose_command() -> list[str]:
    """``docker compose`` (the plugin) where installed, else Debian 12's ``docker-compose`` (v1)."""
    if (await run("docker", "compose", "version", check=False)).code == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise AssertionError("neither `docker compose` nor `docker-compose` is installed: run make bootstrap")


def required_tool(name: str) -> str:
    path = shutil.which(name)
    assert path, (
        f"{name} is not installed: run make bootstrap (it installs the Debian packages the tests use)"
    )
    return path


class AppNetwork:
    """The isolated app network a containerised worker creates (its own bridge and iptables chains).

    The worker, as uid 10001, installs the rules through the firewall image (IEXEC_WORKER_FIREWALL_IMAGE);
    the test checks them on the host, then removes the network and the rules the worker left, since a
    worker keeps both across restarts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.plan = FirewallPlan(bridge_name(name))

    async def rules(self) -> str:
        """The host's rules of this network's forward chain, empty when it does not exist."""
        return (await run("iptables", "-w", "10", "-S", self.plan.forward_chain, check=False)).output

    async def remove(self) -> None:
        await run("/bin/sh", "-c", self.plan.removal_script(), check=False)
        await run("docker", "network", "rm", self.name, check=False)
