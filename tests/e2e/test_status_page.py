"""End to end: the status page, ``/api/status`` and ``iexec-worker status`` of a worker computing a task on
the devnet (anvil + PoCo, the development scheduler, Docker), the page loaded in a real headless browser
(Debian's chromium). The screenshot of the page is kept at ``.devnet/artifacts/status-page.png``."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devnet.core.state import TaskStatus
from devnet.images import SLEEP
from devnet.platform import Platform, buy
from tests.support import free_port, until
from tests.support.browser import dump_dom, screenshot
from tests.support.e2e import running_worker
from tests.support.operator import iexec_worker

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / ".devnet" / "artifacts"


class Rows(HTMLParser):
    """The replicate rows of the page as a person reads them: the task of each row and its cells' text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self._task: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and found.get("data-task"):
            self._task = found["data-task"]
            self.rows[self._task or ""] = []
        elif tag == "td" and self._task is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._task is not None and self._cell is not None:
            self.rows[self._task].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr":
            self._task = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


async def api_status(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(f"{base}/api/status") as response:
        assert response.status == 200
        doc: dict[str, Any] = await response.json()
        return doc


def replicate(doc: dict[str, Any], task_id: str) -> dict[str, Any] | None:
    return next((r for r in doc["replicates"] if r["chainTaskId"] == task_id), None)


async def test_status_page_shows_the_running_task_in_a_browser(platform: Platform, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with (
        running_worker(platform, 0, tmp_path, env={"IEXEC_WORKER_PORT": str(port)}) as worker,
        aiohttp.ClientSession() as session,
    ):
        purchase = await buy(platform.info(), image=SLEEP.tag, args="12")
        task_id = purchase.task_ids[0]

        async def computing() -> bool:
            found = replicate(await api_status(session, base), task_id)
            return found is not None and found["status"] == "COMPUTING"

        await until(computing, within=60, every=0.3, what="the task COMPUTING in /api/status")

        dom = await dump_dom(f"{base}/status")
        rows = Rows()
        rows.feed(dom)
        assert task_id in rows.rows, f"no row for {task_id} on the page:\n{dom[:3000]}"
        cells = rows.rows[task_id]
        assert cells[0] == task_id
        assert cells[1] == "COMPUTING"
        assert re.search(r"compute \d+\.\d s", cells[3]), cells  # the stage's elapsed time, counting
        assert "CREATED" in cells[4]
        assert "COMPUTING" in cells[4]
        assert f">{worker.address}<" in dom  # the wallet
        assert re.search(r'id="slots">1 / 1<', dom)
        assert re.search(r'id="stake">\d+\.\d\d RLC<', dom)
        assert re.search(r'id="gas">\d+(\.\d+)? gwei<', dom), re.findall(r'id="gas">[^<]*<', dom)
        shot = await screenshot(f"{base}/status", ARTIFACTS / "status-page.png")
        print(f"status page screenshot: {shot}")

        terminal = await iexec_worker("status", "--url", base, "--once")
        assert terminal.code == 0, terminal.stderr
        assert re.search(rf"{task_id}  COMPUTING  \d", terminal.stdout), terminal.stdout
        assert f"wallet {worker.address}" in terminal.stdout

        await until(
            lambda: platform.scheduler.task_status(task_id) is TaskStatus.COMPLETED, within=90,
            what="the task COMPLETED",
        )  # fmt: skip

        async def completed() -> bool:
            found = replicate(await api_status(session, base), task_id)
            return found is not None and found["status"] == "COMPLETED"

        await until(completed, within=30, every=0.3, what="COMPLETED in /api/status")
        as_json = await iexec_worker("status", "--url", base, "--json")
        doc = json.loads(as_json.stdout)
        done = replicate(doc, task_id)
        assert done is not None
        statuses = [step["status"] for step in done["timeline"]]
        assert statuses[0] == "CREATED"
        assert statuses[-1] == "COMPLETED"
        assert {"CONTRIBUTING", "CONTRIBUTED", "REVEALING", "REVEALED"} <= set(statuses)
        assert done["stages"]["compute"] >= 11  # the app sleeps 12 s
        kinds = {t["kind"]: t for t in doc["transactions"] if t["chainTaskId"] == task_id}
        assert set(kinds) == {"CONTRIBUTE", "REVEAL"}
        for sent in kinds.values():
            assert sent["mined"]
            assert sent["succeeded"]
            assert int(sent["feeWei"]) == sent["gasUsed"] * int(sent["gasPriceWei"]) > 0
        assert doc["failures"] == []


async def test_probes_answer_before_the_worker_joins(platform: Platform, tmp_path: Path) -> None:
    """A scheduler that is down: alive from the start, not ready, and /health says what it waits for."""
    port, down = free_port(), free_port()
    env = {"IEXEC_WORKER_PORT": str(port), "IEXEC_CORE_URL": f"http://127.0.0.1:{down}"}
    base = f"http://127.0.0.1:{port}"
    async with running_worker(platform, 1, tmp_path, env=env), aiohttp.ClientSession() as session:

        async def waits_again() -> bool:
            try:
                async with session.get(f"{base}/health") as response:
                    return "(attempt 3," in (await response.json())["detail"]
            except aiohttp.ClientError:
                return False

        await until(waits_again, within=30, every=0.2, what="/health at the third attempt")
        async with session.get(f"{base}/livez") as response:
            assert response.status == 200
            assert (await response.json())["stage"] == "scheduler"
        async with session.get(f"{base}/readyz") as response:
            assert response.status == 503
            waiting = (await response.json())["waitingFor"]
        assert re.match(
            rf"waiting for the scheduler at http://127\.0\.0\.1:{down} \(attempt \d+, next in \d+ s\)",
            waiting,
        ), waiting
        async with session.get(f"{base}/health") as response:
            assert response.status == 503
            assert (await response.json())["joined"] is False
        async with session.get(f"{base}/status") as response:
            assert response.status == 200  # the page is there too, showing the stage
