"""The event-loop lag sampler shows a call that blocks the loop, in the metric a dashboard reads.

No service: the sampler runs on the test's own loop, which the test blocks on purpose.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import generate_latest

from worker.looplag import sample_loop_lag
from worker.metrics import Metrics

BLOCKED = 0.2


async def _block_loop_while_sampling(metrics: Metrics) -> None:
    sampler = asyncio.create_task(sample_loop_lag(metrics.loop_lag))
    try:
        await asyncio.sleep(0.05)  # a few samples of an idle loop first
        time.sleep(BLOCKED)  # noqa: ASYNC251 - the blocking call the sampler must see
        await asyncio.sleep(0.05)
    finally:
        sampler.cancel()


async def test_a_blocking_call_shows_as_lag_at_least_as_long_as_the_block() -> None:
    metrics = Metrics()
    await _block_loop_while_sampling(metrics)
    value = metrics.registry.get_sample_value
    assert (value("iexec_worker_event_loop_lag_max_seconds") or 0) >= BLOCKED - 0.02
    # The block is one sample in a bucket above 100 ms; the idle samples sit below it.
    below = value("iexec_worker_event_loop_lag_seconds_bucket", {"le": "0.1"}) or 0
    count = value("iexec_worker_event_loop_lag_seconds_count") or 0
    assert count - below >= 1
    assert below >= 1


async def test_the_lag_metric_exists_at_zero_before_the_first_sample() -> None:
    text = generate_latest(Metrics().registry).decode()
    assert "iexec_worker_event_loop_lag_seconds_count 0.0" in text
    assert "iexec_worker_event_loop_lag_max_seconds 0.0" in text
