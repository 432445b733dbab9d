"""The official iExec SDK CLI (npm ``iexec``, pinned in devnet/npm), driven as a requester drives it.

Each call runs ``iexec <args> --raw`` in a project folder of the test and returns its JSON answer; a
failed command fails the test with the CLI's own output. Wallets are keystores in the project's folder,
unlocked with ``--password``; the chain is the devnet's, named ``dev`` in ``chain.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from devnet.anvil import NODE_MODULES

IEXEC = NODE_MODULES / ".bin" / "iexec"
PASSWORD = "devnet-sdk-password"
CLI_TIMEOUT = 120.0


class IexecCli:
    def __init__(self, project: Path) -> None:
        self.project = project
        self.keystores = project / "wallets"

    async def run(self, *args: str, wallet: str | None = None) -> dict[str, Any]:
        """``iexec <args>`` with ``--raw``; ``wallet`` (an address) signs, unlocked from the project's keystores."""
        command = [str(IEXEC), *args, "--raw"]
        if wallet is not None:
            command += [
                "--keystoredir",
                str(self.keystores),
                "--wallet-address",
                wallet,
                "--password",
                PASSWORD,
            ]
        process = await asyncio.create_subprocess_exec(
            *command, cwd=self.project, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "NO_UPDATE_NOTIFIER": "1"},
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT)
        text = out.decode(errors="replace").strip()
        try:
            answer: dict[str, Any] = json.loads(text.splitlines()[-1]) if text else {}
        except ValueError:
            answer = {}
        if process.returncode != 0 or not answer.get("ok"):
            raise AssertionError(
                f"iexec {' '.join(args)} failed (exit {process.returncode}): {text[-2000:]} {err.decode()[-2000:]}"
            )
        return answer

    async def import_wallet(self, private_key: str) -> None:
        await self.run(
            "wallet", "import", private_key, "--password", PASSWORD, "--keystoredir", str(self.keystores)
        )

    def edit(self, name: str, change: dict[str, Any]) -> None:
        """Merge ``change`` into the project's JSON file ``name`` (iexec.json, chain.json), as a user edits it."""
        path = self.project / name
        data = json.loads(path.read_text()) if path.exists() else {}
        _merge(data, change)
        path.write_text(json.dumps(data, indent=2))


def _merge(target: dict[str, Any], change: dict[str, Any]) -> None:
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
