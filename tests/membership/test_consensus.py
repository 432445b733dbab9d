"""When the chain watcher may reveal: the scheduler's view of the task (unit tests: a fake scheduler)."""

from __future__ import annotations

import pytest

from worker.membership import SchedulerConsensus
from worker.protocol.errors import SchedulerError

TASK = "0x" + "ab" * 32


class TaskStatuses:
    def __init__(self, status: str | None = None, *, down: bool = False) -> None:
        self.status = status
        self.down = down

    async def get_task_status(self, chain_task_id: str) -> str | None:
        if self.down:
            raise SchedulerError("GET /tasks: HTTP 503", status=503)
        return self.status


@pytest.mark.parametrize(
    ("status", "allowed"),
    [
        ("RUNNING", False),
        (None, False),
        ("CONSENSUS_REACHED", True),
        ("AT_LEAST_ONE_REVEALED", True),
        ("RESULT_UPLOADING", True),
        ("RESULT_UPLOADED", True),
        ("COMPLETED", False),
        ("FAILED", False),
    ],
)
async def test_reveal_only_in_the_schedulers_reveal_phase(status: str | None, allowed: bool) -> None:
    assert await SchedulerConsensus(TaskStatuses(status)).reached(TASK) is allowed


async def test_an_unreachable_scheduler_means_not_yet() -> None:
    assert await SchedulerConsensus(TaskStatuses(down=True)).reached(TASK) is False
