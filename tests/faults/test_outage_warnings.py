"""A task reporting progress through a store outage logs one warning, not one per call."""

from __future__ import annotations

import logging

import pytest

import taskstatus
from taskstatus import State
from tests.helpers import event

pytestmark = pytest.mark.timeout(120)


def test_progress_through_a_store_outage_warns_once(own_postgres, tmp_path, caplog):
    tracker = taskstatus.configure(
        url=own_postgres.url, artifact_storage=str(tmp_path), progress_interval=0
    )
    lifecycle = tracker.lifecycle
    lifecycle.publish(event("t", user_id="7", total_steps=1000))
    live = lifecycle.start(event("t"))
    own_postgres.stop()
    with caplog.at_level(logging.WARNING, logger="taskstatus.tracking"):
        for _ in range(200):  # each call tries to write at once (progress_interval=0)
            live.increment_completed_steps()
        own_postgres.start()
        live.increment_completed_steps()  # written, with the 200 before it
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0] == "could not write progress of task t; will retry"
    assert caplog.records[0].exc_info is not None
    assert messages[1] == "taskstatus writing progress succeeds again after 200 failures"
    status = taskstatus.get_by_task_id("t")
    assert (status.state, status.completed_steps) == (State.IN_PROGRESS, 201)
