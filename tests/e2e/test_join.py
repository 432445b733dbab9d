"""End to end: ``iexec-worker join`` takes a fresh machine to a worker of the devnet pool (anvil + PoCo,
the development scheduler, Docker), the wallet funded by the test while join waits.

Non-interactive (flags only, as a script or a VM's "Launch Worker" button runs it) through to a started
worker that completes a task; and interactive on a pseudo-terminal, answering its questions as a person.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from eth_account import Account

from devnet.core.state import TaskStatus
from devnet.images import HELLO
from devnet.platform import Platform, buy
from tests.support import free_port, until
from tests.support.operator import ETH, RLC, cli_env, env_lines, send_eth, send_rlc
from tests.support.terminal import Terminal
from worker.config import load_settings

pytestmark = pytest.mark.e2e

ADDRESS = re.compile(r"Fund the worker wallet (0x[0-9a-f]{40})")


def devnet_settings(port: int) -> list[str]:
    """What a devnet worker needs beyond the pool: loopback HTTP, one slot, apps off every network, and a
    receipt counted in its own block (anvil mines only for transactions: no block would come on top)."""
    return [
        "--set", "IEXEC_WORKER_HTTP_HOST=127.0.0.1", "--set", f"IEXEC_WORKER_PORT={port}",
        "--set", "IEXEC_WORKER_OVERRIDE_AVAILABLE_CPU_COUNT=1", "--set", "IEXEC_WORKER_DOCKER_NETWORK_NAME=none",
        "--set", "IEXEC_WORKER_TX_CONFIRMATIONS=1",
    ]  # fmt: skip


async def ready(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def test_join_without_questions_waits_for_the_funds_then_starts_a_working_worker(
    platform: Platform, tmp_path: Path
) -> None:
    info, port = platform.info(), free_port()
    env_file = tmp_path / "pool.env"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli", "join", "--non-interactive",
        "--pool", info.workerpool, "--core-url", info.scheduler_url, "--name", f"join-{port}",
        "--base-dir", str(tmp_path / "work"), "--env-file", str(env_file), "--stake", "1", "--deposit", "all",
        "--image", HELLO.tag, "--start", *devnet_settings(port),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=cli_env(),
    )  # fmt: skip
    assert process.stdout is not None
    output: list[str] = []

    async def read_until(pattern: re.Pattern[str]) -> re.Match[str]:
        while True:
            try:
                line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()  # type: ignore[union-attr]
            except TimeoutError:
                raise AssertionError(
                    f"{pattern.pattern!r} not printed in 60 s:\n" + "".join(output)
                ) from None
            assert line, "join ended early:\n" + "".join(output)
            output.append(line)
            if found := pattern.search(line):
                return found

    try:
        address = (await read_until(ADDRESS))[1]
        await read_until(re.compile(r"waiting for .* ETH and 1 RLC deposited"))  # progress while unfunded
        await send_eth(platform, address, 1 * ETH)
        await send_rlc(platform, address, 3 * RLC)  # into the wallet: join deposits it (--deposit all)
        await read_until(re.compile(r"deposited 3 RLC \(tx 0x[0-9a-f]{64}, block \d+\)"))
        await read_until(re.compile(r"(PASS|WARN)\s+stake\s+3 RLC free"))
        await read_until(re.compile(r"starting the worker"))

        await until(
            lambda: ready(f"http://127.0.0.1:{port}/readyz"), within=60, what="the joined worker ready"
        )
        purchase = await buy(info, image=HELLO.tag, args="joined")
        task_id = purchase.task_ids[0]
        await until(
            lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED, within=90,
            what="the task computed by the worker join started",
        )  # fmt: skip
        replicate = platform.scheduler.state.replicate(task_id, address)
        assert replicate is not None, "the task was completed by another worker"
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.stdout.read(), 90)
        output.append(rest.decode())
        code = await process.wait()
    assert code == 0, "".join(output)
    settings = load_settings(env_file)  # what join wrote is what `run` reads
    assert settings.scheduler.pool_address == info.workerpool
    assert settings.wallet_path == (tmp_path / "work" / "wallet.json").resolve()
    assert (tmp_path / "work" / "wallet.password").stat().st_mode & 0o077 == 0
    assert "PASSWORD=" not in env_file.read_text()  # the password stays in its file


async def test_join_on_a_terminal_asks_imports_a_key_deposits_and_prints_the_unit(
    platform: Platform, tmp_path: Path
) -> None:
    info, port = platform.info(), free_port()
    key = Account.create()
    address = key.address.lower()
    env_file = tmp_path / ".env"
    term = await Terminal.run(
        sys.executable, "-m", "worker.cli", "join", "--env-file", str(env_file), "--image", HELLO.tag,
        *devnet_settings(port), env=cli_env(),
    )  # fmt: skip
    try:
        await term.expect("Workerpool address (POOL_ADDRESS): ")
        term.type(info.workerpool)
        await term.expect("Scheduler URL of this pool (IEXEC_CORE_URL): ")
        term.type(info.scheduler_url)
        await term.expect("Worker name [")
        term.type(f"terminal-{port}")
        await term.expect("Working folder [")
        term.type(str(tmp_path / "work"))
        await term.expect(f"Wallet keystore file [{tmp_path / 'work' / 'wallet.json'}]: ")
        term.type("")
        await term.expect("Create a new wallet or import a private key? (create/import) [create]: ")
        term.type("import")
        await term.expect("New wallet password: ")
        term.type("a terminal password")
        await term.expect("Repeat the password: ")
        term.type("a terminal password")
        await term.expect("Private key (not shown): ")
        term.type(key.key.hex())
        seen = await term.expect(f"Fund the worker wallet {address}:")
        assert key.key.hex().removeprefix("0x") not in seen  # neither echoed nor printed
        assert "a terminal password" not in seen
        await term.expect("waiting for")
        await send_eth(platform, address, 1 * ETH)
        await send_rlc(platform, address, 2 * RLC)
        await term.expect("Deposit the 2 RLC of the wallet? (Y/n) [y]: ", within=60)
        term.type("y")
        await term.expect("deposited 2 RLC", within=60)
        report = await term.expect("Start the worker now? (Y/n) [y]: ", within=90)
        assert "PASS  eth" in report
        term.type("n")
        await term.expect("[Service]")
        await term.expect(f"start it with: iexec-worker run --env-file {env_file}")
        assert await term.wait() == 0
    finally:
        term.close()
    written = env_lines(env_file)
    assert written["POOL_ADDRESS"] == info.workerpool
    assert written["IEXEC_WORKER_NAME"] == f"terminal-{port}"
    assert load_settings(env_file).wallet_path.is_file()
