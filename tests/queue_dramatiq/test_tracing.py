"""OpenTelemetry traces from a real ``dramatiq`` worker (processes of threads): the context
travels in the message options and each run's span joins the publisher's trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskstatus import State
from tests.queue_dramatiq import actors
from tests.tracing import SPANS_ENV, check_runs, publisher_spans, worker_spans
from tests.waiting import wait_failed, wait_state

pytestmark = pytest.mark.timeout(120)


def test_worker_spans_join_the_publishers_trace(make_cell, uid: int, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cell = make_cell("redis", "sqlite")
    spans_file = tmp_path / "spans.jsonl"
    cell.start_worker(env={SPANS_ENV: str(spans_file)})
    with publisher_spans() as publisher:
        with publisher.request() as request:
            staged = actors.stages.send(uid)
            flaky = actors.flaky.send(uid, str(tmp_path / "marker"))
            exploded = actors.explode.send(uid, "row 3 has no id")
        for message in (staged, flaky):
            wait_state(message.message_id, State.SUCCEEDED)
        failed = wait_failed(exploded.message_id)
    spans = worker_spans(
        spans_file, 5, "the worker's spans: a run each, flaky's twice, the task's own"
    )
    check_runs(
        spans,
        publisher,
        request,
        queue="dramatiq",
        staged=(staged.message_id, "tests.queue_dramatiq.actors.stages"),
        flaky=(flaky.message_id, "tests.queue_dramatiq.actors.flaky"),
        failed=failed,
        exception=("ValueError", "row 3 has no id"),
    )
