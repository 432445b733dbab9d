"""End to end: the worker's own HTTP endpoint while it serves a real platform (anvil + PoCo, Docker)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from devnet.core.state import TaskStatus
from devnet.images import SLEEP
from devnet.platform import Platform, buy, worker_env, write_env_file
from tests.support import free_port, until
from worker import __version__
from worker.app import run_worker
from worker.config import load_settings

pytestmark = pytest.mark.e2e


async def test_metrics_health_and_version(platform: Platform, tmp_path: Path) -> None:
    port = free_port()
    env = worker_env(platform.info(), 2, tmp_path, port=port)
    settings = await asyncio.to_thread(load_settings, write_env_file(tmp_path / ".env", env))
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop=stop, install_signals=False))
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def healthy() -> bool:
                try:
                    async with session.get(f"{base}/health") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await until(healthy, within=30, what="/health answers 200 once joined and pinged")
            async with session.get(f"{base}/health") as response:
                health = await response.json()
            assert health["status"] == "UP"
            assert health["joined"] is True
            assert health["outOfGas"] is False

            # As the Java worker: the bare version, the one iexec-core's requiredWorkerVersion is compared with.
            async with session.get(f"{base}/version") as response:
                assert response.content_type == "text/plain"
                assert await response.text() == "9.2.0"
                assert response.headers["X-Worker-Version"] == __version__
            async with session.get(f"{base}/version", headers={"Accept": "application/json"}) as response:
                assert await response.json() == {
                    "version": "9.2.0",
                    "protocolVersion": "9.2.0",
                    "workerVersion": __version__,
                }

            # An app that lasts a measurable time: durations are whole milliseconds, as the reference's.
            purchase = await buy(platform.info(), image=SLEEP.tag, args="0.3")
            task_id = purchase.task_ids[0]
            await until(lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED, within=60)

            async def metrics_text() -> str:
                async with session.get(f"{base}/metrics") as response:
                    assert response.status == 200
                    return await response.text()

            async def completed_counted() -> bool:
                return 'status="COMPLETED"} 1.0' in await metrics_text()

            await until(completed_counted, within=20, what="the completed replicate counted in the metrics")
            text = await metrics_text()
            assert 'iexec_worker_replicate_transitions_total{cause="",status="COMPLETED"} 1.0' in text
            assert 'iexec_worker_stage_duration_seconds_count{outcome="ok",stage="compute"} 1.0' in text
            assert 'iexec_worker_replicates{status="CREATED"} 0.0' in text
            assert "iexec_worker_slots 1.0" in text
            assert task_id not in text  # no task id as a label

            # The reference's WorkerMetrics JSON, for dashboards built on the Java worker.
            async with session.get(f"{base}/metrics", headers={"Accept": "application/json"}) as response:
                worker_metrics = await response.json()
            async with session.get(f"{base}/metrics/worker") as response:
                assert await response.json() == worker_metrics
            assert list(worker_metrics) == [
                "preComputeDurations", "appComputeDurations", "postComputeDurations", "completeComputeDurations",
            ]  # fmt: skip
            app = worker_metrics["appComputeDurations"]
            assert app["durationSamplesCount"] == 1
            assert 300 <= app["minDuration"] == app["maxDuration"] == app["averageDuration"] < 60_000
            # Standard tasks have no pre- or post-compute container: those stay empty, as with the reference.
            for empty in ("preComputeDurations", "postComputeDurations", "completeComputeDurations"):
                assert worker_metrics[empty] == {
                    "durationSamplesCount": 0, "minDuration": "NaN", "maxDuration": "NaN", "averageDuration": "NaN",
                }  # fmt: skip
    finally:
        stop.set()
        assert await asyncio.wait_for(worker, 60) == 0
