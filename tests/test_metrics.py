"""The metrics a dashboard or an alert reads exist from the start (at 0), not only after their first event.

No service: a ``Metrics`` registry rendered in the Prometheus text format.
"""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest

from worker.chain import TxKind
from worker.metrics import SCHEDULER_CALLS, Metrics
from worker.replicate.ports import Stage

MEMBERSHIP = Path(__file__).resolve().parents[1] / "worker" / "membership"


def _text(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_error_and_replacement_counters_start_at_zero() -> None:
    text = _text(Metrics())
    for call in SCHEDULER_CALLS:
        assert f'iexec_worker_scheduler_errors_total{{call="{call}"}} 0.0' in text
    for kind in TxKind:
        assert f'iexec_worker_transaction_replacements_total{{kind="{kind.value}"}} 0.0' in text


def test_each_chain_endpoint_seen_has_an_error_counter_at_zero() -> None:
    metrics = Metrics()
    metrics.head("0", 42)
    text = _text(metrics)
    assert 'iexec_worker_chain_block_latest{endpoint="0"} 42.0' in text
    assert 'iexec_worker_rpc_errors_total{endpoint="0"} 0.0' in text


def test_every_scheduler_call_counted_by_the_policies_is_listed() -> None:
    used = {
        call
        for source in MEMBERSHIP.glob("*.py")
        for call in re.findall(r'scheduler_errors\.labels\("([^"]+)"\)', source.read_text())
    }
    assert used, "no scheduler error counted in worker/membership: the pattern of this test is stale"
    assert used <= set(SCHEDULER_CALLS)


def test_stage_durations_exist_for_every_stage_and_outcome_before_the_first_replicate() -> None:
    # A rate over a histogram that appears at its first observation stays 0: the first replicate
    # would never show on the duration panel.
    text = _text(Metrics())
    for stage in Stage:
        for outcome in ("ok", "failed"):
            assert (
                f'iexec_worker_stage_duration_seconds_count{{outcome="{outcome}",stage="{stage.value}"}} 0.0'
                in text
            )
