"""Unit tests of the worker's transition table: every (state, event) pair, and agreement with the scheduler."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.protocol.status import ReplicateStatus, is_valid_transition
from worker.replicate.machine import (
    TABLE,
    TERMINAL,
    WORKER_STATES,
    ReplicateState,
    TransitionNotAllowed,
    mermaid,
)

RS = ReplicateStatus
PAIRS = [(source, target) for source in WORKER_STATES for target in TABLE]


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=[f"{s.value}->{t.value}" for s, t in PAIRS])
def test_every_state_event_pair(source: ReplicateStatus, target: ReplicateStatus) -> None:
    state = ReplicateState(source)
    allowed = source in TABLE[target]
    assert state.can_move(target) is allowed
    if allowed:
        state.move(target)
        assert state.status is target
    else:
        with pytest.raises(TransitionNotAllowed):
            state.move(target)
        assert state.status is source


def test_happy_path_reaches_completed() -> None:
    state = ReplicateState()
    for status in (
        RS.STARTING, RS.STARTED, RS.APP_DOWNLOADING, RS.APP_DOWNLOADED, RS.DATA_DOWNLOADING,
        RS.DATA_DOWNLOADED, RS.COMPUTING, RS.COMPUTED, RS.CONTRIBUTING, RS.CONTRIBUTED, RS.REVEALING,
        RS.REVEALED, RS.RESULT_UPLOADING, RS.RESULT_UPLOADED, RS.COMPLETING, RS.COMPLETED,
    ):  # fmt: skip
        state.move(status)
    assert state.terminal


@pytest.mark.parametrize("terminal", [s for s in ReplicateStatus if s in TERMINAL])
def test_terminal_states_accept_nothing(terminal: ReplicateStatus) -> None:
    state = ReplicateState(terminal)
    assert not any(state.can_move(target) for target in TABLE)


def test_scheduler_sets_statuses_the_worker_never_enters() -> None:
    for status in (RS.RESULT_UPLOAD_REQUESTED, RS.RECOVERING, RS.WORKER_LOST):
        assert status not in TABLE
        with pytest.raises(ValueError, match="set by the scheduler"):
            ReplicateState(RS.REVEALED).move(status)


def test_every_reported_move_is_accepted_by_the_scheduler() -> None:
    # The scheduler inserts RESULT_UPLOAD_REQUESTED before PLEASE_UPLOAD, and FAILED is never reported
    # by the worker; every other move the worker can make must be one the scheduler accepts.
    for target, sources in TABLE.items():
        if target is RS.FAILED:
            continue
        for source in sources:
            scheduler_current = RS.RESULT_UPLOAD_REQUESTED if target is RS.RESULT_UPLOADING else source
            if target is RS.COMPLETING and not is_valid_transition(source, target):
                # PLEASE_COMPLETE reaches every worker of a task, in any state (the reference handles it
                # there too): the scheduler refuses COMPLETING with PLEASE_ABORT, and the abort it leads to
                # must be accepted (test_pipeline covers the run).
                assert is_valid_transition(source, RS.ABORTED), f"{source} -> ABORTED"
                continue
            assert is_valid_transition(scheduler_current, target), f"{source} -> {target}"


def test_diagram_in_docs_is_in_sync() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "replicate-states.md").read_text()
    assert mermaid() in doc, "regenerate docs/replicate-states.md from worker.replicate.machine.mermaid()"
