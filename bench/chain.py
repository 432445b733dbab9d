"""Contribute and reveal latency through TransactionSender against a bare web3 send, on the same anvil node."""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3

from devnet.accounts import Role, account
from devnet.contracts import DEVNET_CATEGORY, Devnet
from devnet.toolkit import Toolkit
from worker.chain import ChainClient, SentTx, TransactionSender, TxKind
from worker.chain.abi import HUB_ABI
from worker.protocol.crypto import (
    ZERO_ADDRESS,
    authorization_hash,
    result_hash,
    result_seal,
    sign_eip191,
    to_bytes,
)

RUNS = 20
POLL = 0.05  # seconds between receipt polls, the same for both
CACHE = Path(
    os.environ.get("IEXEC_DEVNET_CACHE") or Path(__file__).resolve().parents[1] / ".devnet" / "cache"
)
DIGEST = "0x" + hashlib.sha256(b"bench").hexdigest()


@dataclass
class _Journal:
    entries: dict[tuple[str, TxKind], SentTx] = field(default_factory=dict)

    async def record_sent(self, task_id: str, kind: TxKind, tx_hash: str, nonce: int, raw_tx: str) -> None:
        self.entries[(task_id, kind)] = SentTx(task_id, kind, tx_hash, nonce, raw_tx)

    async def replace_sent(self, task_id: str, kind: TxKind, tx_hash: str, nonce: int, raw_tx: str) -> None:
        self.entries[(task_id, kind)] = SentTx(task_id, kind, tx_hash, nonce, raw_tx)

    async def sent(self, task_id: str, kind: TxKind) -> SentTx | None:
        return self.entries.get((task_id, kind))


async def _tasks(net: Devnet, count: int) -> list[str]:
    toolkit = Toolkit(net.w3, net.deployment)
    scheduler = account(Role.SCHEDULER)
    app = await toolkit.create_app(account(Role.APP_PROVIDER), "bench", "bench:1", "0x" + "11" * 32)
    pool = await toolkit.create_workerpool(scheduler, "bench-workerpool")
    deal = await toolkit.buy(
        requester=account(Role.REQUESTER),
        app=app,
        app_owner=account(Role.APP_PROVIDER),
        workerpool=pool,
        workerpool_owner=scheduler,
        category=net.deployment.categories[DEVNET_CATEGORY],
        volume=count,
    )
    return [await toolkit.initialize(deal.deal_id, i, scheduler) for i in range(count)]


def _auth(task_id: str, worker: LocalAccount) -> bytes:
    return to_bytes(
        sign_eip191(authorization_hash(worker.address, task_id), bytes(account(Role.SCHEDULER).key))
    )


async def _bare(w3: AsyncWeb3[Any], worker: LocalAccount, call: Any) -> float:
    """Build, sign, send and wait: what a script with web3 alone does (no checks, no journal)."""
    started = time.perf_counter()
    nonce = await w3.eth.get_transaction_count(worker.address, "pending")
    tx = await call.build_transaction({"from": worker.address, "nonce": nonce, "gas": 500_000})
    signed = worker.sign_transaction(tx)
    tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
    await w3.eth.wait_for_transaction_receipt(tx_hash, poll_latency=POLL)
    return time.perf_counter() - started


async def main() -> None:
    async with await Devnet.up(cache_dir=CACHE) as net:
        ours_tasks = await _tasks(net, RUNS)
        bare_tasks = await _tasks(net, RUNS)
        ours_worker, bare_worker = account(18), account(19)
        hub = net.w3.eth.contract(address=net.w3.to_checksum_address(net.deployment.hub), abi=HUB_ABI)
        async with await ChainClient.connect(net.rpc_url, net.deployment.hub) as chain:
            sender = TransactionSender(chain, ours_worker, _Journal(), poll_interval=POLL)
            timings: dict[str, list[float]] = {k: [] for k in ("ours-c", "ours-r", "bare-c", "bare-r")}
            for ours, bare in zip(ours_tasks, bare_tasks, strict=True):
                started = time.perf_counter()
                await sender.contribute(
                    ours,
                    DIGEST,
                    sign_eip191(
                        authorization_hash(ours_worker.address, ours), bytes(account(Role.SCHEDULER).key)
                    ),
                )
                timings["ours-c"].append(time.perf_counter() - started)
                started = time.perf_counter()
                await sender.reveal(ours, DIGEST)
                timings["ours-r"].append(time.perf_counter() - started)

                timings["bare-c"].append(
                    await _bare(
                        net.w3,
                        bare_worker,
                        hub.functions.contribute(
                            to_bytes(bare),
                            to_bytes(result_hash(bare, DIGEST)),
                            to_bytes(result_seal(bare_worker.address, bare, DIGEST)),
                            net.w3.to_checksum_address(ZERO_ADDRESS),
                            bytes(32),
                            _auth(bare, bare_worker),
                        ),
                    )
                )
                timings["bare-r"].append(await _bare(
                    net.w3, bare_worker, hub.functions.reveal(to_bytes(bare), to_bytes(DIGEST))))  # fmt: skip
    med = {k: statistics.median(v) * 1000 for k, v in timings.items()}
    print(f"anvil automine, {RUNS} runs each, receipt polled every {POLL * 1000:.0f} ms; medians:")
    for step, ours_key, bare_key in (("contribute", "ours-c", "bare-c"), ("reveal", "ours-r", "bare-r")):
        print(
            f"  {step:<10} TransactionSender {med[ours_key]:7.1f} ms | bare web3 {med[bare_key]:7.1f} ms"
            f" | ratio {med[ours_key] / med[bare_key]:.2f}"
        )
    print("  (TransactionSender also reads the task views, simulates, estimates gas and prices the fees)")
