"""Chain: the PoCo contracts through web3, transactions, the chain watcher, protocol hashes.

The only package that imports web3; everything it raises is ours (worker.protocol.errors, chain.errors).
The protocol hashes it signs live in the vocabulary layer (``worker.protocol.crypto``).
"""

from worker.chain.authorization import verify_authorization
from worker.chain.client import ChainClient
from worker.chain.errors import (
    ContractReverted,
    NonceTooLow,
    ReceiptTimeout,
    TaskNotFound,
    TransactionRefused,
)
from worker.chain.gas import GAS_LIMIT_CAP, DynamicFees, GasPolicy, LegacyFees, has_enough_gas
from worker.chain.models import (
    ChainAccount,
    ChainApp,
    ChainBlock,
    ChainCategory,
    ChainContribution,
    ChainDataset,
    ChainDeal,
    ChainTask,
    DealAsset,
    DealParams,
    SentTx,
    TaskDescription,
    TeeFramework,
    TxKind,
    TxReceipt,
)
from worker.chain.observer import ChainObserver
from worker.chain.preconditions import cannot_contribute_cause, cannot_reveal_cause
from worker.chain.transactions import TransactionSender, TxJournal
from worker.chain.watcher import ChainWatcher

__all__ = [
    "GAS_LIMIT_CAP",
    "ChainAccount",
    "ChainApp",
    "ChainBlock",
    "ChainCategory",
    "ChainClient",
    "ChainContribution",
    "ChainDataset",
    "ChainDeal",
    "ChainObserver",
    "ChainTask",
    "ChainWatcher",
    "ContractReverted",
    "DealAsset",
    "DealParams",
    "DynamicFees",
    "GasPolicy",
    "LegacyFees",
    "NonceTooLow",
    "ReceiptTimeout",
    "SentTx",
    "TaskDescription",
    "TaskNotFound",
    "TeeFramework",
    "TransactionRefused",
    "TransactionSender",
    "TxJournal",
    "TxKind",
    "TxReceipt",
    "cannot_contribute_cause",
    "cannot_reveal_cause",
    "has_enough_gas",
    "verify_authorization",
]
