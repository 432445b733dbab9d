"""Contribute and reveal latency through TransactionSender against a bare web3 send, on the same anvil node.

Each round sends, in turn, a contribute and a reveal through the worker's TransactionSender and the
same two calls as a script with web3 alone would (nonce, build, sign, send, wait: no checks, no
journal), on tasks of their own, from wallets of their own. "as in the worker": the sender's client
has read the task description and checked the scheduler's authorization first, as the worker does
when it takes a replicate (outside the timing); "cold": it has not, so the contribute also reads the
deal and recovers the authorization's signer itself. Figures: medians, and ratios of medians of the
same run (the machine is shared: absolute times drift, ratios much less).
"""

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

from bench._figures import Figure
from devnet.accounts import Role, account
from devnet.contracts import DEVNET_CATEGORY, Devnet
from devnet.toolkit import Toolkit
from worker.chain import ChainClient, SentTx, TransactionSender, TxKind, verify_authorization
from worker.chain.abi import HUB_ABI
from worker.protocol.crypto import (
    ZERO_ADDRESS,
    authorization_hash,
    result_hash,
    result_seal,
    sign_eip191,
    to_bytes,
)
from worker.protocol.models import Signature, WorkerpoolAuthorization

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


async def _tasks(net: Devnet, count: int) -> tuple[str, list[str]]:
    """``count`` initialized tasks of one fresh deal: (workerpool address, task ids)."""
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
    return pool, [await toolkit.initialize(deal.deal_id, i, scheduler) for i in range(count)]


def _auth(task_id: str, worker: LocalAccount) -> str:
    return sign_eip191(authorization_hash(worker.address, task_id), bytes(account(Role.SCHEDULER).key))


async def _bare(w3: AsyncWeb3[Any], worker: LocalAccount, call: Any) -> float:
    """Build, sign, send and wait: what a script with web3 alone does (no checks, no journal)."""
    started = time.perf_counter()
    nonce = await w3.eth.get_transaction_count(worker.address, "pending")
    tx = await call.build_transaction({"from": worker.address, "nonce": nonce, "gas": 500_000})
    signed = worker.sign_transaction(tx)
    tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
    await w3.eth.wait_for_transaction_receipt(tx_hash, poll_latency=POLL)
    return time.perf_counter() - started


async def _ours(sender: TransactionSender, worker: LocalAccount, task_id: str) -> tuple[float, float]:
    authorization = _auth(task_id, worker)  # the scheduler's, as the bare send's: not timed
    started = time.perf_counter()
    await sender.contribute(task_id, DIGEST, authorization)
    contributed = time.perf_counter()
    await sender.reveal(task_id, DIGEST)
    return contributed - started, time.perf_counter() - contributed


async def _take(chain: ChainClient, pool: str, worker: LocalAccount, task_id: str) -> None:
    """What the worker reads when it takes a replicate, before any transaction of it."""
    authorization = WorkerpoolAuthorization(
        chain_task_id=task_id, deal_id="0x" + "00" * 32, task_index=0, worker_wallet=worker.address,
        signature=Signature(value=_auth(task_id, worker)),
    )  # fmt: skip
    assert await verify_authorization(chain, authorization, pool, worker.address, enclave_challenge=None)
    await chain.task_description(task_id)


async def main() -> list[Figure]:
    async with await Devnet.up(cache_dir=CACHE) as net:
        pool, ours_tasks = await _tasks(net, RUNS)
        _, cold_tasks = await _tasks(net, RUNS)
        _, bare_tasks = await _tasks(net, RUNS)
        ours_worker, cold_worker, bare_worker = account(17), account(18), account(19)
        hub = net.w3.eth.contract(address=net.w3.to_checksum_address(net.deployment.hub), abi=HUB_ABI)
        timings: dict[str, list[float]] = {k: [] for k in ("c", "r", "cold-c", "cold-r", "bare-c", "bare-r")}
        async with (
            await ChainClient.connect(net.rpc_url, net.deployment.hub) as chain,
            await ChainClient.connect(net.rpc_url, net.deployment.hub) as cold_chain,
        ):
            sender = TransactionSender(chain, ours_worker, _Journal(), poll_interval=POLL)
            cold = TransactionSender(cold_chain, cold_worker, _Journal(), poll_interval=POLL)
            for ours, cold_task, bare in zip(ours_tasks, cold_tasks, bare_tasks, strict=True):
                await _take(chain, pool, ours_worker, ours)
                for key, seconds in zip(("c", "r"), await _ours(sender, ours_worker, ours), strict=True):
                    timings[key].append(seconds)
                for key, seconds in zip(
                    ("cold-c", "cold-r"), await _ours(cold, cold_worker, cold_task), strict=True
                ):
                    timings[key].append(seconds)
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
                            to_bytes(_auth(bare, bare_worker)),
                        ),
                    )
                )
                timings["bare-r"].append(await _bare(
                    net.w3, bare_worker, hub.functions.reveal(to_bytes(bare), to_bytes(DIGEST))))  # fmt: skip
    med = {k: statistics.median(v) * 1000 for k, v in timings.items()}
    ratio = {k: med[k] / med[f"bare-{k[-1]}"] for k in ("c", "r", "cold-c", "cold-r")}
    print(f"anvil automine, {RUNS} runs each, receipt polled every {POLL * 1000:.0f} ms; medians:")
    for step, key in (("contribute", "c"), ("reveal", "r")):
        print(
            f"  {step:<10} TransactionSender {med[key]:6.1f} ms as in the worker, {med['cold-' + key]:6.1f} ms cold"
            f" | bare web3 {med['bare-' + key]:6.1f} ms"
            f" | ratio {ratio[key]:.2f} (cold {ratio['cold-' + key]:.2f})"
        )
    print("  (TransactionSender also reads the task views, simulates and estimates gas, prices the fees)")
    return [
        Figure("contribute_ratio", round(ratio["c"], 2)),
        Figure("reveal_ratio", round(ratio["r"], 2)),
        Figure("contribute_cold_ratio", round(ratio["cold-c"], 2)),
        Figure("contribute_ms", round(med["c"], 1), "ms"),
        Figure("reveal_ms", round(med["r"], 1), "ms"),
        Figure("bare_contribute_ms", round(med["bare-c"], 1), "ms"),
        Figure("bare_reveal_ms", round(med["bare-r"], 1), "ms"),
    ]
