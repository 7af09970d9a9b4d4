"""Warnings about failing writes are rate-limited: a store outage must not flood the log."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from taskstatus import StoreUnavailable
from taskstatus.failurelog import FailureLog
from taskstatus.writebehind import WriteBehind

from .helpers import event

LOGGER = "tests.failurelog"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _fail(failures: FailureLog, clock: Clock, times: int, step: float) -> None:
    for _ in range(times):
        try:
            raise StoreUnavailable("database error: connection refused")
        except StoreUnavailable:
            failures.failed("could not write %d task events", 3)
        clock.now += step


def test_a_run_of_failures_logs_the_first_then_a_count_every_interval(caplog):
    clock = Clock()
    failures = FailureLog(logging.getLogger(LOGGER), "writing", every=10.0, clock=clock)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        _fail(failures, clock, 800, 1 / 32)  # 32 a second for 25 s
        failures.succeeded()
        failures.succeeded()  # said once
    records = caplog.records
    assert [r.exc_info is not None for r in records] == [True, False, False, False]
    assert records[0].getMessage() == "could not write 3 task events"
    assert [r.getMessage() for r in records[1:3]] == [
        "could not write 3 task events (320 failures since the last report)",
        "could not write 3 task events (320 failures since the last report)",
    ]
    assert records[3].getMessage() == "taskstatus writing succeeds again after 800 failures"


def test_after_a_recovery_the_next_failure_is_logged_in_full(caplog):
    clock = Clock()
    failures = FailureLog(logging.getLogger(LOGGER), "writing", every=10.0, clock=clock)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        _fail(failures, clock, 5, 0.1)
        failures.succeeded()
        _fail(failures, clock, 5, 0.1)
    assert [r.exc_info is not None for r in caplog.records] == [True, False, True]


def test_no_failure_logs_nothing(caplog):
    failures = FailureLog(logging.getLogger(LOGGER), "writing")
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        failures.succeeded()
    assert caplog.records == []


@pytest.mark.timeout(60)
def test_a_writer_failing_for_seconds_logs_once(caplog):
    """A worker's queued writes failing again and again (the write-behind thread retries
    with a backoff) give one warning with its traceback, then one line when they work."""
    written: list[str] = []
    failing = threading.Event()
    failing.set()

    def write(kind, events, at, started):
        if failing.is_set():
            raise StoreUnavailable("database error: connection refused")
        written.extend(e.task_id for e in events)

    now = lambda: datetime.now(timezone.utc)  # noqa: E731
    writer = WriteBehind(0.01, write, lambda since: [], now, timedelta(days=1))
    try:
        with caplog.at_level(logging.WARNING, logger="taskstatus.writebehind"):
            writer.succeed(event("t"), now())
            time.sleep(2.0)  # about six attempts, the backoff doubling from 0.05 s
            failing.clear()
            writer.drain()
    finally:
        writer.stop()
    assert written == ["t"]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("taskstatus could not write 1 task events")
    assert caplog.records[0].exc_info is not None
    assert messages[1].startswith("taskstatus writing queued task events succeeds again after")
