"""The worker as a member of the pool: joining, reporting, heartbeat, demand, funds and completion.

Each policy is a small class over the ports of ``ports``: the composition root (``worker.app``) wires
them to the real scheduler client, chain client, push channel and supervisor, and unit tests drive
them with fakes. Long-lived policies run as ``run(stop)`` coroutines that return once ``stop`` is set.
"""

from worker.membership.adoption import adopt_unstored
from worker.membership.completion import complete_finalized
from worker.membership.consensus import SchedulerConsensus
from worker.membership.demand import ReplicateDemand
from worker.membership.funds import FundsWatch, has_enough_gas_now
from worker.membership.health import Health
from worker.membership.heartbeat import Heartbeat
from worker.membership.join import Joined, StopRequested, join_pool, retry_until_stopped
from worker.membership.missed import MissedNews
from worker.membership.reporter import SchedulerReporter
from worker.membership.waiting import sleep_or_stop

__all__ = [
    "FundsWatch",
    "Health",
    "Heartbeat",
    "Joined",
    "MissedNews",
    "ReplicateDemand",
    "SchedulerConsensus",
    "SchedulerReporter",
    "StopRequested",
    "adopt_unstored",
    "complete_finalized",
    "has_enough_gas_now",
    "join_pool",
    "retry_until_stopped",
    "sleep_or_stop",
]
