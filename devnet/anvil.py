"""One anvil node on 127.0.0.1, driven over JSON-RPC: start, state dump, and the clock and mining controls."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gzip
import itertools
import os
import re
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp

from devnet.accounts import ACCOUNT_COUNT, MNEMONIC
from worker.protocol.errors import WorkerError

# The pinned npm packages (anvil, @iexec/poco) are installed beside this package by `make bootstrap`
# (`npm ci` in devnet/npm); IEXEC_DEVNET_NODE_MODULES points elsewhere.
NODE_MODULES = Path(
    os.environ.get("IEXEC_DEVNET_NODE_MODULES") or Path(__file__).resolve().parent / "npm" / "node_modules"
)
ANVIL_PACKAGE = NODE_MODULES / "@foundry-rs" / "anvil-linux-amd64"

_LISTENING = re.compile(rb"Listening on 127\.0\.0\.1:(\d+)")
_START_TIMEOUT = 20.0  # a multi-megabyte --load-state is parsed before the socket opens
_STOP_TIMEOUT = 5.0


class DevnetError(WorkerError):
    """The local devnet could not be started, deployed or driven."""


def anvil_binary() -> Path:
    path = ANVIL_PACKAGE / "bin" / "anvil"
    if not path.is_file():
        raise DevnetError(
            f"anvil binary not found at {path}: run `make bootstrap` to install the devnet npm packages"
        )
    return path


class Anvil:
    """A running anvil process. Use :meth:`start`; stop it with :meth:`stop` or ``async with``."""

    def __init__(
        self, process: asyncio.subprocess.Process, port: int, output: collections.deque[str]
    ) -> None:
        self._process = process
        self.port = port
        self.rpc_url = f"http://127.0.0.1:{port}"
        self._output = output
        self._drain: asyncio.Task[None] | None = None
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        self._ids = itertools.count(1)

    @classmethod
    async def start(
        cls,
        *,
        port: int | None = None,
        load_state: Path | None = None,
        block_time: float | None = None,
    ) -> Anvil:
        """Start anvil and return once its RPC port is open; ``port=None`` lets the OS pick a free one."""
        args = [
            "--host", "127.0.0.1",
            "--port", str(port or 0),
            "--accounts", str(ACCOUNT_COUNT),
            "--mnemonic", MNEMONIC,
        ]  # fmt: skip
        if load_state is not None:
            args += ["--load-state", str(load_state)]
        if block_time is not None:
            args += ["--block-time", f"{block_time:g}"]
        process = await asyncio.create_subprocess_exec(
            anvil_binary(),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output: collections.deque[str] = collections.deque(maxlen=40)
        try:
            bound = await asyncio.wait_for(_wait_listening(process, output), _START_TIMEOUT)
        except BaseException as exc:
            await _terminate(process)
            tail = "\n".join(output)
            if isinstance(exc, TimeoutError):
                raise DevnetError(
                    f"anvil did not open its RPC port within {_START_TIMEOUT:g} s:\n{tail}"
                ) from exc
            raise
        node = cls(process, bound, output)
        node._drain = asyncio.create_task(node._drain_output(), name=f"anvil-{bound}-output")
        return node

    async def _drain_output(self) -> None:
        # anvil logs every transaction; an undrained pipe would eventually block the node.
        assert self._process.stdout is not None
        async for line in self._process.stdout:
            self._output.append(line.decode(errors="replace").rstrip())

    def recent_output(self) -> str:
        """The last lines anvil printed, for error messages."""
        return "\n".join(self._output)

    async def rpc(self, method: str, *params: Any) -> Any:
        payload = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        try:
            async with self._session.post(self.rpc_url, json=payload) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DevnetError(f"anvil at {self.rpc_url}: {method} failed: {exc!r}") from exc
        if "error" in body:
            raise DevnetError(f"anvil at {self.rpc_url}: {method} returned {body['error']}")
        return body["result"]

    async def dump_state(self, path: Path) -> None:
        """Write the whole chain state where ``anvil --load-state`` can read it back."""
        packed = await self.rpc("anvil_dumpState")

        def write() -> None:
            # The RPC answers gzip, but --load-state only reads plain JSON.
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(gzip.decompress(bytes.fromhex(packed.removeprefix("0x"))))

        await asyncio.to_thread(write)

    async def mine(self, blocks: int = 1) -> None:
        await self.rpc("anvil_mine", hex(blocks))

    async def increase_time(self, seconds: int) -> None:
        """Move the clock of the next block forward (mine a block to make it visible)."""
        await self.rpc("evm_increaseTime", seconds)

    async def set_automine(self, enabled: bool) -> None:
        await self.rpc("evm_setAutomine", enabled)

    async def set_interval_mining(self, seconds: int) -> None:
        """Mine a block every ``seconds``; 0 turns interval mining off."""
        await self.rpc("evm_setIntervalMining", seconds)

    async def stop(self) -> None:
        await _terminate(self._process)
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
        await self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def _wait_listening(process: asyncio.subprocess.Process, output: collections.deque[str]) -> int:
    assert process.stdout is not None
    async for line in process.stdout:
        output.append(line.decode(errors="replace").rstrip())
        match = _LISTENING.search(line)
        if match:
            return int(match.group(1))
    await process.wait()
    tail = "\n".join(output)
    raise DevnetError(f"anvil exited with code {process.returncode} before opening its RPC port:\n{tail}")


async def _terminate(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), _STOP_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
