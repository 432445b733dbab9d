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
from worker.chain.escrow import NRLC_PER_RLC, Balances, DealStake, Escrow, EscrowError, parse_rlc, rlc
from worker.chain.fees import PaidFee, current_fees, max_price, paid_fee
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
    TxKind,
    TxReceipt,
)
from worker.chain.observer import ChainObserver
from worker.chain.preconditions import cannot_contribute_cause, cannot_reveal_cause
from worker.chain.transactions import TransactionSender, TxJournal
from worker.chain.watcher import ChainWatcher
from worker.protocol.tee import TeeFramework

__all__ = [
    "GAS_LIMIT_CAP",
    "NRLC_PER_RLC",
    "Balances",
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
    "DealStake",
    "DynamicFees",
    "Escrow",
    "EscrowError",
    "GasPolicy",
    "LegacyFees",
    "NonceTooLow",
    "PaidFee",
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
    "current_fees",
    "has_enough_gas",
    "max_price",
    "paid_fee",
    "parse_rlc",
    "rlc",
    "verify_authorization",
]
