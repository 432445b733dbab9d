"""A command run on a pseudo-terminal, driven as a person types: wait for a prompt, type an answer.

The child gets the terminal as its controlling tty, so ``getpass`` reads from it without echo as it
would for an operator at a console.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import select
import termios

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\r")


def _controlling_tty() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    def __init__(self, process: asyncio.subprocess.Process, master: int) -> None:
        self.process = process
        self._master = master
        self.screen = ""

    @classmethod
    async def run(cls, *argv: str, env: dict[str, str]) -> Terminal:
        master, slave = os.openpty()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=slave, stdout=slave, stderr=slave, env=env, preexec_fn=_controlling_tty
            )
        finally:
            os.close(slave)
        return cls(process, master)

    def _read(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self._master], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self._master, 65536)
        except OSError:  # the child closed the terminal
            return b""

    async def expect(self, text: str, *, within: float = 30) -> str:
        """Wait until ``text`` is on the screen after what was already matched; returns the screen so far."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while text not in self.screen:
            if loop.time() > deadline:
                raise AssertionError(
                    f"{text!r} not shown within {within} s; the terminal shows:\n{self.screen}"
                )
            chunk = await asyncio.to_thread(self._read, 0.2)
            if not chunk and self.process.returncode is not None:
                raise AssertionError(f"the command ended before showing {text!r}:\n{self.screen}")
            self.screen += _ANSI.sub("", chunk.decode(errors="replace"))
        seen, _, self.screen = self.screen.partition(text)
        return seen + text

    def type(self, line: str) -> None:
        os.write(self._master, line.encode() + b"\n")

    async def wait(self, *, within: float = 60) -> int:
        async def drain() -> None:
            while self.process.returncode is None:
                chunk = await asyncio.to_thread(self._read, 0.2)
                self.screen += _ANSI.sub("", chunk.decode(errors="replace"))

        drainer = asyncio.create_task(drain())
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        finally:
            await drainer
            chunk = await asyncio.to_thread(self._read, 0.1)
            self.screen += _ANSI.sub("", chunk.decode(errors="replace"))

    def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        with contextlib.suppress(OSError):
            os.close(self._master)
