"""Prometheus metrics of the worker: one registry per process, names prefixed ``iexec_worker_``.

No task id is ever a label (unbounded cardinality); per-task detail goes to the logs. Beside them,
``worker_metrics()`` is the reference's ``WorkerMetrics`` JSON (iexec-worker ``MetricsService``): the
min, max and mean of the last ``window_size`` pre-, app-, post- and complete-compute durations, in
milliseconds. As with the reference, the standard post-compute is not timed and pre-/post-compute
containers run for TEE tasks only (``tee_wiring`` feeds their windows), so on a worker without TEE tasks
the app durations are the only samples and the three others stay empty (count 0, "NaN").
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from worker.chain import TxKind
from worker.protocol.status import ReplicateStatus, ReplicateStatusCause
from worker.replicate.ports import Stage

log = logging.getLogger("iexec.worker.replicate")

# The scheduler calls whose failures are counted (see worker.membership): listed so that each counter
# exists at 0 from the start, and a dashboard shows "no errors" rather than "no data".
SCHEDULER_CALLS = ("available", "ping", "updateStatus")
_OUTCOMES = ("ok", "failed")
_STAGE_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 10800, 36000)
# Fine below 50 ms, where a healthy loop lives; coarse above, where one blocking call shows.
_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class DurationWindow:
    """The last ``size`` durations, and each task's own (commons-math ``DescriptiveStatistics(size)`` and the
    reference's ``MaxSizeHashMap``: the oldest task is forgotten first)."""

    def __init__(self, size: int) -> None:
        self._values: deque[int] = deque(maxlen=size)
        self._by_task: dict[str, int] = {}
        self._size = size

    def add(self, task_id: str, millis: int) -> None:
        self._values.append(millis)
        self._by_task[task_id] = millis
        while len(self._by_task) > self._size:
            del self._by_task[next(iter(self._by_task))]

    def of(self, task_id: str) -> int | None:
        return self._by_task.get(task_id)

    @property
    def tasks(self) -> list[str]:
        return list(self._by_task)

    def aggregated(self) -> dict[str, Any]:
        return aggregate([float(v) for v in self._values])


def aggregate(values: list[float]) -> dict[str, Any]:
    """The reference's ``AggregatedDurations``; Jackson writes an undefined statistic as the string "NaN"."""

    def number(value: float) -> float | str:
        return "NaN" if math.isnan(value) else value

    nan = math.nan
    return {
        "durationSamplesCount": len(values),
        "minDuration": number(min(values) if values else nan),
        "maxDuration": number(max(values) if values else nan),
        "averageDuration": number(sum(values) / len(values) if values else nan),
    }


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, window_size: int = 1000) -> None:
        self.registry = registry or CollectorRegistry()
        self.pre_compute = DurationWindow(window_size)
        self.app_compute = DurationWindow(window_size)
        self.post_compute = DurationWindow(window_size)
        self._loop_lag_max = 0.0
        r = self.registry
        self.info = Info("iexec_worker", "Version and identity of this worker", registry=r)
        self.replicates = Gauge(
            "iexec_worker_replicates",
            "Replicates held by this worker, by current status",
            ["status"],
            registry=r,
        )
        self.replicate_transitions = Counter(
            "iexec_worker_replicate_transitions_total",
            "Statuses entered by replicates, with the failure cause when there is one",
            ["status", "cause"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "iexec_worker_stage_duration_seconds",
            "Duration of each replicate stage",
            ["stage", "outcome"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.gas_price_wei = Gauge(
            "iexec_worker_gas_price_wei",
            "Gas price (or fee cap) chosen for the latest transaction of each kind",
            ["kind"],
            registry=r,
        )
        self.tx_replacements = Counter(
            "iexec_worker_transaction_replacements_total",
            "Transactions replaced (same nonce, higher fees) because they were not mined in time",
            ["kind"],
            registry=r,
        )
        self.rpc_errors = Counter(
            "iexec_worker_rpc_errors_total",
            "Failed JSON-RPC calls, by endpoint (its position in the node list)",
            ["endpoint"],
            registry=r,
        )
        self.chain_block = Gauge(
            "iexec_worker_chain_block_latest",
            "Latest block number seen on each endpoint (its position in the node list)",
            ["endpoint"],
            registry=r,
        )
        self.eth_balance_wei = Gauge(
            "iexec_worker_eth_balance_wei", "Native balance of the worker wallet", registry=r
        )
        self.rlc_stake_nrlc = Gauge(
            "iexec_worker_rlc_stake_nrlc", "RLC deposited on the hub and free to stake (nRLC)", registry=r
        )
        self.rlc_locked_nrlc = Gauge(
            "iexec_worker_rlc_locked_nrlc", "RLC locked as stake in running contributions (nRLC)", registry=r
        )
        self.transactions = Counter(
            "iexec_worker_transactions_total",
            "Worker transactions by kind and outcome (mined, failed, refused, timeout, dropped, resent)",
            ["kind", "outcome"],
            registry=r,
        )
        self.scheduler_errors = Counter(
            "iexec_worker_scheduler_errors_total",
            "Failed calls to the scheduler, by endpoint",
            ["call"],
            registry=r,
        )
        self.slots_total = Gauge(
            "iexec_worker_slots", "Computing slots declared to the scheduler", registry=r
        )
        self.slots_busy = Gauge("iexec_worker_slots_busy", "Computing slots in use", registry=r)
        self.last_ping = Gauge(
            "iexec_worker_last_successful_ping_timestamp_seconds",
            "Time of the last accepted ping",
            registry=r,
        )
        self.out_of_gas = Gauge(
            "iexec_worker_out_of_gas",
            "1 while the wallet cannot pay a transaction at the gas price cap",
            registry=r,
        )
        self.push_connected = Gauge(
            "iexec_worker_push_channel_connected",
            "1 while the scheduler's push channel is connected",
            registry=r,
        )
        self.disk_free_bytes = Gauge(
            "iexec_worker_disk_free_bytes",
            "Bytes free on the file system of IEXEC_WORKER_BASE_DIR",
            registry=r,
        )
        self.disk_min_free_bytes = Gauge(
            "iexec_worker_disk_min_free_bytes",
            "IEXEC_WORKER_BASE_DIR_MIN_FREE_BYTES: below it the worker asks for no replicate",
            registry=r,
        )
        self.disk_low = Gauge(
            "iexec_worker_disk_low",
            "1 while the free space under IEXEC_WORKER_BASE_DIR is below its minimum: no replicate is asked for",
            registry=r,
        )
        self.engine_waits = Gauge(
            "iexec_worker_engine_waits",
            "Replicates whose stage waits for the Docker engine to answer again (dockerd stopped or restarting)",
            registry=r,
        )
        self.store_full = Gauge(
            "iexec_worker_store_waiting_for_space",
            "1 while a write of the replicate store waits for disk space",
            registry=r,
        )
        self.loop_lag_seconds = Histogram(
            "iexec_worker_event_loop_lag_seconds",
            "How late the event loop woke a sampler due every 10 ms (what any other callback waited)",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.loop_lag_max = Gauge(
            "iexec_worker_event_loop_lag_max_seconds",
            "Longest event loop lag sampled since the worker started",
            registry=r,
        )
        # Series that exist at 0 before their first event: a rate or an alert on them starts from
        # a known value, and an empty panel means a missing worker, never a quiet one.
        for status in ReplicateStatus:
            self.replicates.labels(status.value)
        for call in SCHEDULER_CALLS:
            self.scheduler_errors.labels(call)
        for kind in TxKind:
            self.tx_replacements.labels(kind.value)
        for stage in Stage:
            for outcome in _OUTCOMES:
                self.stage_seconds.labels(stage.value, outcome)

    # -- chain observer ---------------------------------------------------------------------------

    def rpc_error(self, endpoint: str) -> None:
        self.rpc_errors.labels(endpoint).inc()

    def head(self, endpoint: str, block: int) -> None:
        self.chain_block.labels(endpoint).set(block)
        self.rpc_errors.labels(endpoint)  # each endpoint seen gets its error counter, at 0 until one fails

    def gas_price(self, kind: str, wei: int) -> None:
        self.gas_price_wei.labels(kind).set(wei)

    def transaction(self, kind: str, outcome: str) -> None:
        self.transactions.labels(kind, outcome).inc()

    def replaced(self, kind: str) -> None:
        self.tx_replacements.labels(kind).inc()

    # -- pipeline observer ------------------------------------------------------------------------

    def status_changed(
        self, task_id: str, old: ReplicateStatus, new: ReplicateStatus, cause: ReplicateStatusCause | None
    ) -> None:
        self.replicates.labels(old.value).dec()
        self.replicates.labels(new.value).inc()
        self.replicate_transitions.labels(new.value, cause.value if cause else "").inc()
        if cause is not None:
            log.warning("%s %s -> %s (%s)", task_id, old.value, new.value, cause.value)
        else:
            log.info("%s %s -> %s", task_id, old.value, new.value)

    def replicate_held(self, status: ReplicateStatus, held: bool) -> None:
        self.replicates.labels(status.value).inc(1 if held else -1)

    def stage_finished(self, stage: Stage, seconds: float, ok: bool) -> None:
        self.stage_seconds.labels(stage.value, _OUTCOMES[0] if ok else _OUTCOMES[1]).observe(seconds)

    def app_computed(self, task_id: str, seconds: float) -> None:
        self.app_compute.add(task_id, int(seconds * 1000))  # Duration.toMillis() truncates

    # -- process ------------------------------------------------------------------------------------

    def loop_lag(self, seconds: float) -> None:
        self.loop_lag_seconds.observe(seconds)
        if seconds > self._loop_lag_max:
            self._loop_lag_max = seconds
            self.loop_lag_max.set(seconds)

    # -- the reference's WorkerMetrics ------------------------------------------------------------

    def worker_metrics(self) -> dict[str, Any]:
        """The JSON body of the reference's ``GET /metrics``, keys in its order."""
        complete: list[float] = []
        for task_id in self.app_compute.tasks:
            app, post = self.app_compute.of(task_id), self.post_compute.of(task_id)
            if app is not None and post is not None:
                complete.append(float((self.pre_compute.of(task_id) or 0) + app + post))
        return {
            "preComputeDurations": self.pre_compute.aggregated(),
            "appComputeDurations": self.app_compute.aggregated(),
            "postComputeDurations": self.post_compute.aggregated(),
            "completeComputeDurations": aggregate(complete),
        }
