"""The pure model: transition rules, container rules, validation; a hypothesis state machine."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from taskstatus import State
from taskstatus.models import (
    ACTIVE_STATES,
    CANCEL,
    FAIL,
    MAX_STEPS,
    RETRY,
    START,
    START_CONTAINER,
    SUCCEED,
    TERMINAL_STATES,
    TaskStatus,
    add_steps,
    apply,
    check_artifact_payload,
    check_filename,
    check_steps,
    check_url,
    container_outcome,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def new_status(**fields: object) -> TaskStatus:
    values: dict[str, object] = {
        "uuid": uuid4(),
        "task_id": "t",
        "queue": "q",
        "task_class": "c",
        "name": "n",
        "created": T0,
        "modified": T0,
        "total_steps": 10,
        "planned_steps": 10,
    }
    values.update(fields)
    return TaskStatus(**values)  # type: ignore[arg-type]


def test_state_strings_are_django_user_tasks_ones():
    assert [s.value for s in State] == [
        "Pending",
        "In Progress",
        "Retrying",
        "Succeeded",
        "Failed",
        "Canceled",
    ]
    assert State.IN_PROGRESS == "In Progress" and str(State.FAILED) == "Failed"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("In Progress", State.IN_PROGRESS),
        ("in_progress", State.IN_PROGRESS),
        ("CANCELED", State.CANCELED),
        (State.FAILED, State.FAILED),
    ],
)
def test_state_parse(text, expected):
    assert State.parse(text) is expected


def test_state_parse_rejects_unknown():
    with pytest.raises(ValueError, match="unknown state 'Done'"):
        State.parse("Done")


def test_start_from_pending_and_redelivery():
    s = new_status()
    started = apply(s, START, T0 + timedelta(seconds=1))
    assert started is not None and started.state is State.IN_PROGRESS
    assert started.started_at == T0 + timedelta(seconds=1) and started.attempts == 1
    redelivered = apply(started, START, T0 + timedelta(seconds=5))
    assert redelivered is not None and redelivered.attempts == 2
    assert redelivered.started_at == started.started_at


def test_retry_only_from_running_or_pending():
    s = apply(new_status(), START, T0)
    assert s is not None
    retried = apply(s, RETRY, T0)
    assert retried is not None and retried.attempts == 2 and retried.state is State.RETRYING
    assert apply(retried, RETRY, T0) is None


def test_succeed_completes_steps_and_finishes():
    s = new_status(completed_steps=3, stage="x", state=State.IN_PROGRESS)
    done = apply(s, SUCCEED, T0)
    assert done is not None and done.completed_steps == 10 and done.finished_at == T0
    assert done.stage is None


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES))
@pytest.mark.parametrize("transition", [START, START_CONTAINER, RETRY, SUCCEED, FAIL, CANCEL])
def test_terminal_states_are_final(terminal, transition):
    assert apply(new_status(state=terminal), transition, T0) is None


def test_container_start_only_once():
    s = apply(new_status(is_container=True), START_CONTAINER, T0)
    assert s is not None and apply(s, START_CONTAINER, T0) is None


@pytest.mark.parametrize(
    ("children", "outcome"),
    [
        ([], State.SUCCEEDED),
        ([State.SUCCEEDED, State.SUCCEEDED], State.SUCCEEDED),
        ([State.SUCCEEDED, State.IN_PROGRESS], None),
        ([State.SUCCEEDED, State.PENDING], None),
        ([State.RETRYING], None),
        ([State.SUCCEEDED, State.CANCELED], State.CANCELED),
        ([State.CANCELED, State.FAILED, State.SUCCEEDED], State.FAILED),
    ],
)
def test_container_outcome(children, outcome):
    assert container_outcome(children) is outcome


def test_step_counters_are_64_bit():
    assert check_steps(MAX_STEPS, "x") == MAX_STEPS
    assert add_steps(MAX_STEPS - 1, 5) == MAX_STEPS
    with pytest.raises(ValueError, match="between 0 and"):
        check_steps(MAX_STEPS + 1, "total_steps")
    with pytest.raises(ValueError, match="total_steps"):
        check_steps(-1, "total_steps")
    with pytest.raises(TypeError, match="int"):
        check_steps(1.5, "steps")
    with pytest.raises(TypeError, match="int"):
        check_steps(True, "steps")


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "ftp://x/y",
        "data:text/html,x",
        "//example.com/x",
        "/relative",
        "http://",
    ],
)
def test_only_http_urls(url):
    with pytest.raises(ValueError, match="http or https"):
        check_url(url)


def test_http_urls_accepted():
    assert check_url(" https://example.com/report.pdf ") == "https://example.com/report.pdf"


@pytest.mark.parametrize(
    "name", ["../etc/passwd", "a/b.txt", "..", ".", "", "a\\b", "x\x00y", "n" * 201]
)
def test_filenames_must_be_plain(name):
    with pytest.raises(ValueError, match="plain file name"):
        check_filename(name)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, r"exactly one of file, path, url or text \(got none\)"),
        ({"file": b"x", "text": "y"}, r"\(got file, text\)"),
        ({"url": "https://x.org", "text": "y"}, r"\(got url, text\)"),
        ({"text": "y", "filename": "a.txt"}, "filename is only meaningful"),
    ],
)
def test_artifact_payload_needs_exactly_one(payload, message):
    kwargs = {"file": None, "url": None, "text": None, "filename": None, **payload}
    with pytest.raises(ValueError, match=message):
        check_artifact_payload(**kwargs)


class StatusMachine(RuleBasedStateMachine):
    """Random event sequences against one status: the rules' invariants always hold."""

    def __init__(self) -> None:
        super().__init__()
        self.status = new_status(total_steps=5, planned_steps=5)
        self.clock = T0
        self.terminal_snapshot: TaskStatus | None = None
        self.max_attempts = 1

    def _apply(self, transition) -> None:  # type: ignore[no-untyped-def]
        self.clock += timedelta(seconds=1)
        new = apply(self.status, transition, self.clock)
        if self.status.state in TERMINAL_STATES:
            assert new is None, "a terminal state changed"
        if new is not None:
            self.status = new

    @rule()
    def start(self) -> None:
        was = self.status.state
        self._apply(START)
        if was is State.IN_PROGRESS:
            assert self.status.attempts == self.max_attempts + 1
        if was in ACTIVE_STATES:
            assert self.status.completed_steps == 0

    @rule()
    def retry(self) -> None:
        self._apply(RETRY)

    @rule()
    def succeed(self) -> None:
        self._apply(SUCCEED)

    @rule()
    def fail(self) -> None:
        self._apply(FAIL)

    @rule()
    def cancel(self) -> None:
        self._apply(CANCEL)

    @precondition(lambda self: self.status.state not in TERMINAL_STATES)
    @rule(n=st.integers(min_value=0, max_value=MAX_STEPS))
    def progress(self, n: int) -> None:
        s = self.status
        self.status = TaskStatus(
            **{**s.__dict__, "completed_steps": add_steps(s.completed_steps, n)}
        )

    @invariant()
    def attempts_never_decrease(self) -> None:
        assert self.status.attempts >= self.max_attempts
        self.max_attempts = self.status.attempts

    @invariant()
    def terminal_is_final_and_timed(self) -> None:
        s = self.status
        if s.state in TERMINAL_STATES:
            assert s.finished_at is not None and s.stage is None
            if self.terminal_snapshot is None:
                self.terminal_snapshot = s
            assert s == self.terminal_snapshot
        else:
            assert s.finished_at is None

    @invariant()
    def counters_in_range(self) -> None:
        assert 0 <= self.status.completed_steps <= MAX_STEPS
        if self.status.state is State.SUCCEEDED:
            assert self.status.completed_steps == self.status.total_steps

    @invariant()
    def started_before_finished(self) -> None:
        s = self.status
        if s.started_at and s.finished_at:
            assert s.started_at <= s.finished_at


TestStatusMachine = StatusMachine.TestCase
TestStatusMachine.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)


@given(st.lists(st.sampled_from(list(State)), max_size=8))
def test_container_outcome_is_none_exactly_while_a_child_is_active(children):
    outcome = container_outcome(children)
    assert (outcome is None) == any(c in ACTIVE_STATES for c in children)
    if outcome is State.SUCCEEDED:
        assert all(c is State.SUCCEEDED for c in children)
