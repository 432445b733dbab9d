"""The scheduler reporter, driven by fakes (unit tests: no service)."""

from __future__ import annotations

import time

import pytest

from tests.membership.fakes import FakePush, FakeScheduler, task_id
from worker.membership import SchedulerReporter
from worker.metrics import Metrics
from worker.protocol.models import ReplicateStatusDetails
from worker.protocol.status import ReplicateStatus, ReplicateStatusCause, TaskNotificationType
from worker.scheduler import UpdateKind, UpdateOutcome

RS, TNT = ReplicateStatus, TaskNotificationType
TASK = task_id(1)


def reporter(scheduler: FakeScheduler, push: FakePush, deadline: float | None = 1e10) -> SchedulerReporter:
    return SchedulerReporter(scheduler, push, lambda _: deadline, Metrics(), push_wait=0.01)


async def test_the_answer_of_the_scheduler_is_the_next_action() -> None:
    scheduler = FakeScheduler(outcome=UpdateOutcome(UpdateKind.NEXT_ACTION, TNT.PLEASE_DOWNLOAD_APP))
    assert await reporter(scheduler, FakePush()).report(TASK, RS.STARTED) is TNT.PLEASE_DOWNLOAD_APP
    ((sent_task, update, deadline),) = scheduler.updates
    assert (sent_task, update.status, deadline) == (TASK, RS.STARTED, 1e10)


async def test_a_refused_status_asks_the_replicate_to_abort() -> None:
    scheduler = FakeScheduler(outcome=UpdateOutcome(UpdateKind.ABORT))
    assert await reporter(scheduler, FakePush()).report(TASK, RS.COMPUTING) is TNT.PLEASE_ABORT


async def test_an_already_reported_status_answers_what_the_scheduler_answered_first() -> None:
    scheduler = FakeScheduler(outcome=UpdateOutcome(UpdateKind.ALREADY_REPORTED))
    details = ReplicateStatusDetails(cause=ReplicateStatusCause.DATASET_FILE_BAD_CHECKSUM)
    answer = await reporter(scheduler, FakePush()).report(TASK, RS.DATA_DOWNLOAD_FAILED, details)
    assert answer is TNT.PLEASE_CONTRIBUTE  # the error result of a bad dataset is contributed


async def test_without_a_known_deadline_the_report_is_retried_for_an_hour() -> None:
    scheduler = FakeScheduler()
    await reporter(scheduler, FakePush(), deadline=None).report(TASK, RS.STARTING)
    ((_, _, deadline),) = scheduler.updates
    assert deadline is not None
    assert 3500 < deadline - time.time() <= 3600


async def test_a_push_outage_is_waited_for_once_then_reports_go_straight_out() -> None:
    scheduler, push = FakeScheduler(), FakePush(connected=False)
    sender = reporter(scheduler, push)
    await sender.report(TASK, RS.STARTING)
    await sender.report(TASK, RS.STARTED)
    assert push.waits == 1
    assert [u.status for _, u, _ in scheduler.updates] == [RS.STARTING, RS.STARTED]
    push.connected = True
    await sender.report(TASK, RS.APP_DOWNLOADING)
    push.connected = False
    await sender.report(TASK, RS.APP_DOWNLOADED)
    assert push.waits == 2  # a new outage is waited for again


async def test_an_update_the_scheduler_never_took_is_counted_and_the_replicate_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler = FakeScheduler(update_error=True)
    metrics = Metrics()
    sender = SchedulerReporter(scheduler, FakePush(), lambda _: 1e10, metrics)
    assert await sender.report(TASK, RS.STARTING) is None
    assert "did not take STARTING (HTTP 503); the replicate goes on" in caplog.text
    assert (
        metrics.registry.get_sample_value("iexec_worker_scheduler_errors_total", {"call": "updateStatus"})
        == 1
    )
