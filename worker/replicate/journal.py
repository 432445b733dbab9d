"""The replicate store seen as the transaction sender's journal: each transaction is recorded before
it is broadcast, under its replicate, so a restart follows it instead of signing another."""

from __future__ import annotations

from worker.chain import SentTx, TxKind
from worker.replicate.store import ReplicateStore


class StoreJournal:
    def __init__(self, store: ReplicateStore) -> None:
        self._store = store

    async def record_sent(self, task_id: str, kind: TxKind, tx_hash: str, nonce: int, raw_tx: str) -> None:
        await self._store.record_sent(task_id, kind.value, tx_hash, nonce, raw_tx)

    async def replace_sent(self, task_id: str, kind: TxKind, tx_hash: str, nonce: int, raw_tx: str) -> None:
        await self._store.replace_sent(task_id, kind.value, tx_hash, nonce, raw_tx)

    async def sent(self, task_id: str, kind: TxKind) -> SentTx | None:
        row = await self._store.sent(task_id, kind.value)
        return SentTx(row.task_id, kind, row.tx_hash, row.nonce, row.raw_tx) if row else None
