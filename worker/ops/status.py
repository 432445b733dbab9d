"""``iexec-worker status``: the status page in the terminal, read from the running worker's ``/api/status``.

The worker is found where its settings make it listen (``IEXEC_WORKER_HTTP_HOST``,
``IEXEC_WORKER_PORT``), or at ``--url``. On a terminal the view refreshes until Ctrl-C; ``--once``
prints it once and ``--json`` prints the document itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from worker.chain import rlc
from worker.config import NodeSettings
from worker.doctor import eth, gwei
from worker.protocol.errors import ConfigurationError


def worker_url(env_file: Path | None) -> str:
    node = NodeSettings(_env_file=env_file if env_file and env_file.is_file() else None)
    host = "127.0.0.1" if node.http_host in ("0.0.0.0", "", "::") else node.http_host
    return f"http://{host}:{node.port}"


async def fetch(session: aiohttp.ClientSession, base_url: str) -> dict[str, Any]:
    url = base_url.rstrip("/") + "/api/status"
    try:
        async with session.get(url) as response:
            if response.status != 200:
                raise ConfigurationError(f"{url} answered HTTP {response.status}: is this an iexec-worker?")
            doc: dict[str, Any] = await response.json()
            return doc
    except aiohttp.ClientError as exc:
        raise ConfigurationError(
            f"no worker answers at {url} ({exc}): start it with `iexec-worker run`, or pass --url"
        ) from exc


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(value), 60)
    return f"{minutes} min {secs} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _clock(unix: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(unix))


def render(doc: dict[str, Any]) -> list[str]:
    """The status document as terminal lines: what the status page shows, in the same order."""
    w = doc["worker"]
    state = ("out of gas" if w["outOfGas"] else "working") if w["ready"] else f"{w['stage']}: {w['detail']}"
    lines = [
        f"iExec worker {w['name']} {w['version']}: {state}",
        f"  wallet {w['wallet'] or '-'}  pool {w['pool']}  up {_seconds(w['uptimeSeconds'])}",
    ]
    lines += [f"  problem: {k}: {v}" for k, v in w["problems"].items()]
    funds, gas, slots = doc["funds"], doc["gas"], doc["slots"]
    money = "balances not read yet"
    if funds:
        stake = "-" if funds["stakeNrlc"] is None else rlc(int(funds["stakeNrlc"]))
        locked = "-" if funds["lockedNrlc"] is None else rlc(int(funds["lockedNrlc"]))
        money = f"ETH {eth(int(funds['ethWei']))} · RLC free {stake} · locked {locked}"
    price = "-" if gas["priceWei"] is None else f"{gwei(int(gas['priceWei']))} gwei"
    busy = f"{slots['busy']}/{slots['total']}" if slots else "-"
    lines.append(
        f"  {money} · gas {price} (x{gas['multiplier']}, cap {gwei(int(gas['capWei']))} gwei) · slots {busy}"
    )
    lines.append("REPLICATES" if doc["replicates"] else "REPLICATES: none yet")
    for r in doc["replicates"]:
        status = f"{r['status']} ({r['cause']})" if r["cause"] else r["status"]
        lines.append(f"  {r['chainTaskId']}  {status}  {_seconds(r['elapsedSeconds'])}")
        if r["stages"]:
            lines.append("    " + " · ".join(f"{stage} {_seconds(s)}" for stage, s in r["stages"].items()))
        steps = [
            f"{step['status']}" + (f" {_seconds(step['seconds'])}" if step["seconds"] is not None else "")
            for step in r["timeline"]
        ]
        if steps:
            lines.append(f"    {_clock(r['timeline'][0]['at'])} " + " > ".join(steps))
    lines.append("TRANSACTIONS" if doc["transactions"] else "TRANSACTIONS: none yet")
    for t in doc["transactions"]:
        where = f"block {t['block']}" if t["mined"] else "pending"
        fee = f"fee {eth(int(t['feeWei']))} ETH ({t['gasUsed']} gas)" if t["feeWei"] is not None else ""
        lines.append(f"  {t['kind']:<10} {t['txHash']}  {where}  {fee}".rstrip())
        lines.append(f"    task {t['chainTaskId']}")
    lines.append("FAILURES" if doc["failures"] else "FAILURES: none")
    for f in doc["failures"]:
        lines.append(f"  {_clock(f['at'])}  {f['chainTaskId']}  {f['status']} ({f['cause']})")
    return lines


async def watch(url: str, *, as_json: bool, once: bool, every: float) -> int:
    """Print the status (refreshing on a terminal until Ctrl-C); 0 when the worker answered."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            doc = await fetch(session, url)
            if as_json:
                print(json.dumps(doc, indent=2))
                return 0
            text = "\n".join(render(doc))
            if once:
                print(text)
                return 0
            print(
                "\x1b[H\x1b[2J" + text + f"\n\n{url}/status · refreshing every {every:g} s, Ctrl-C to quit",
                flush=True,
            )
            await asyncio.sleep(every)
