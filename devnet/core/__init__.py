"""Development scheduler: a small iexec-core stand-in (REST API for workers and the STOMP push channel).

State is in memory only. ``DevScheduler.start(...)`` serves it; ``SchedulerChain`` is the chain
port it needs (``ToolkitChain`` over the devnet toolkit in practice).
"""

from .chain import BlockRef, ContributionView, DealView, SchedulerChain
from .faults import FaultRule, Faults
from .runner import DevScheduler
from .state import TaskStatus
from .updates import ChainCheckPolicy

__all__ = [
    "BlockRef",
    "ChainCheckPolicy",
    "ContributionView",
    "DealView",
    "DevScheduler",
    "FaultRule",
    "Faults",
    "SchedulerChain",
    "TaskStatus",
]
