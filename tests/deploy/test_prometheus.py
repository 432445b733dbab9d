"""The monitoring files under real tools: promtool and amtool checks, the alert rules' unit tests, and a real
Prometheus (Debian's binary, on 127.0.0.1, a free port, its own data folder) scraping a worker that serves a
real platform, where every query of every dashboard panel must return data, and a worker that cannot reach
its scheduler, which the never-joined alert must catch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from devnet.core.state import TaskStatus
from devnet.images import HELLO
from devnet.platform import Platform, buy
from tests.support import free_port, until
from tests.support.deploy import DEPLOY, required_tool, run
from tests.support.e2e import running_worker

pytestmark = pytest.mark.e2e

PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))


async def test_promtool_and_amtool_accept_the_shipped_files() -> None:
    promtool, amtool = required_tool("promtool"), required_tool("amtool")
    assert "SUCCESS" in (await run(promtool, "check", "config", str(PROMETHEUS_CONFIG))).output
    assert "SUCCESS" in (await run(promtool, "check", "rules", str(ALERTS))).output
    assert "SUCCESS" in (await run(amtool, "check-config", str(ALERTMANAGER_CONFIG))).output


async def test_the_alert_rules_pass_their_unit_tests() -> None:
    tested = await run(required_tool("promtool"), "test", "rules", str(ALERT_TESTS))
    assert "SUCCESS" in tested.output


async def test_promtool_fails_a_rule_that_does_not_parse(tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yml"
    broken.write_text(ALERTS.read_text().replace('up{job="iexec-worker"} == 0', 'up{job="iexec-worker" == 0'))
    checked = await run(required_tool("promtool"), "check", "rules", str(broken), check=False)
    assert checked.code != 0
    assert "FAILED" in checked.output


@contextlib.asynccontextmanager
async def _serving(name: str, args: list[str], ready_url: str, log: Path) -> AsyncIterator[None]:
    """A monitoring binary in the background until the block ends, once it answers ``ready_url``."""
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(required_tool(name), *args, stdout=out, stderr=out)
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                assert process.returncode is None, f"{name} exited ({process.returncode}): see {log}"
                try:
                    async with session.get(ready_url) as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await until(ready, within=30, every=0.2, what=f"{name} ready")
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await process.wait()


def _config_for(folder: Path, worker_ports: list[int], alertmanager_port: int) -> Path:
    """The shipped configuration and rules, with this run's workers and ports and a 1 s scrape."""
    folder.mkdir()
    shutil.copy(ALERTS, folder / ALERTS.name)
    text = PROMETHEUS_CONFIG.read_text()
    targets = ", ".join(f'"127.0.0.1:{port}"' for port in worker_ports)
    for shipped, here in (
        ('["127.0.0.1:13100"]', f"[{targets}]"),
        ("127.0.0.1:9093", f"127.0.0.1:{alertmanager_port}"),
        ("scrape_interval: 15s", "scrape_interval: 1s"),
        ("evaluation_interval: 15s", "evaluation_interval: 1s"),
    ):
        assert shipped in text, f"{PROMETHEUS_CONFIG} no longer has {shipped}"
        text = text.replace(shipped, here)
    (folder / "prometheus.yml").write_text(text)
    return folder / "prometheus.yml"


def _panel_queries() -> dict[str, str]:
    """Every query of every panel, named by its dashboard and panel title."""
    queries = {}
    for dashboard in DASHBOARDS:
        for panel in json.loads(dashboard.read_text())["panels"]:
            for target in panel.get("targets", []):
                queries[f"{dashboard.name}: {panel['title']} [{target['refId']}]"] = target["expr"]
    assert queries, "no dashboard panel found"
    return queries


async def test_every_dashboard_panel_shows_data_from_a_real_prometheus_scraping_a_worker(
    platform: Platform, tmp_path: Path
) -> None:
    worker_port, stuck_port = free_port(), free_port()
    prometheus_port, alertmanager_port = free_port(), free_port()
    config = await asyncio.to_thread(
        _config_for, tmp_path / "prometheus", [worker_port, stuck_port], alertmanager_port
    )
    # A second worker whose scheduler never answers: it serves its metrics but cannot join.
    stuck = {"IEXEC_WORKER_PORT": str(stuck_port), "IEXEC_CORE_URL": f"http://127.0.0.1:{free_port()}"}
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    alertmanager_args = [
        f"--config.file={ALERTMANAGER_CONFIG}", f"--storage.path={tmp_path / 'alertmanager-data'}",
        f"--web.listen-address=127.0.0.1:{alertmanager_port}", "--cluster.listen-address=",
    ]  # fmt: skip
    prometheus_args = [
        f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{prometheus_port}",
    ]  # fmt: skip
    async with (
        _serving(
            "prometheus-alertmanager",
            alertmanager_args,
            f"http://127.0.0.1:{alertmanager_port}/-/ready",
            tmp_path / "alertmanager.log",
        ),  # fmt: skip
        _serving("prometheus", prometheus_args, f"{prometheus}/-/ready", tmp_path / "prometheus.log"),
        running_worker(platform, 0, tmp_path / "worker", env={"IEXEC_WORKER_PORT": str(worker_port)}),
        running_worker(platform, 1, tmp_path / "stuck", env=stuck),
        aiohttp.ClientSession() as session,
    ):

        async def query(expr: str) -> list[dict[str, object]]:
            async with session.get(f"{prometheus}/api/v1/query", params={"query": expr}) as response:
                body = await response.json()
                assert body["status"] == "success", f"{expr}: {body}"
                result: list[dict[str, object]] = body["data"]["result"]
                return result

        async def scraped() -> bool:
            return [sample["value"][1] for sample in await query('up{job="iexec-worker"}')] == ["1", "1"]  # type: ignore[index]

        await until(scraped, within=60, every=0.5, what="Prometheus scrapes both workers")
        purchase = await buy(platform.info(), image=HELLO.tag, args="dashboards")
        task_id = purchase.task_ids[0]
        await until(
            lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED, within=90, every=0.2,
            what=f"{task_id} COMPLETED",
        )  # fmt: skip

        queries = _panel_queries()
        missing: dict[str, str] = dict(queries)

        async def every_panel_has_data() -> bool:
            for name, expr in list(missing.items()):
                values = [float(sample["value"][1]) for sample in await query(expr)]  # type: ignore[index]
                if any(math.isfinite(value) for value in values):
                    del missing[name]
            return not missing

        try:
            await until(every_panel_has_data, within=30, every=1, what="data on every panel")
        except AssertionError:
            raise AssertionError(f"panels without data: {missing}") from None

        async with session.get(f"{prometheus}/api/v1/rules") as response:
            groups = (await response.json())["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert {rule["name"] for rule in rules} >= {
            "IexecWorkerDown",
            "IexecWorkerAbsent",
            "IexecWorkerNotJoined",
        }
        assert all(rule["health"] == "ok" for rule in rules), rules
        # The worker that cannot join is stuck before joining (pending until the rule's 10 minutes are up).
        async with session.get(f"{prometheus}/api/v1/alerts") as response:
            alerts = (await response.json())["data"]["alerts"]
        not_joined = [
            a["labels"]["instance"] for a in alerts if a["labels"]["alertname"] == "IexecWorkerNotJoined"
        ]
        assert not_joined == [f"127.0.0.1:{stuck_port}"], alerts
        async with session.get(f"{prometheus}/api/v1/alertmanagers") as response:
            active = [m["url"] for m in (await response.json())["data"]["activeAlertmanagers"]]
        assert active == [f"http://127.0.0.1:{alertmanager_port}/api/v2/alerts"]
    print(f"\n{len(queries)} panel queries answered by Prometheus")
