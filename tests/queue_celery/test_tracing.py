"""OpenTelemetry traces from a real prefork ``celery worker``: without the official Celery
instrumentation taskstatus makes the spans; with it, taskstatus enriches the instrumentation's."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskstatus.observability import otel
from tests.queue_celery import app as tasks
from tests.tracing import (
    CELERY_ENV,
    SPANS_ENV,
    check_runs,
    event_names,
    only,
    publisher_spans,
    runs,
    span_id,
    trace_id,
    worker_spans,
)

from .conftest import TIMEOUT, Cell, wait_failed

pytestmark = pytest.mark.timeout(120)

STAGED = "tests.queue_celery.app.staged"
FLAKY = "tests.queue_celery.app.flaky"
EXPLODE = "tests.queue_celery.app.explode"


def test_worker_spans_join_the_publishers_trace(make_cell, uid: int, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cell: Cell = make_cell("redis", "sqlite")
    spans_file = tmp_path / "spans.jsonl"
    cell.start_worker(pool="prefork", env={SPANS_ENV: str(spans_file)})
    with publisher_spans() as publisher:
        with publisher.request() as request:
            staged = tasks.staged.delay(uid)
            flaky = tasks.flaky.delay(uid, fail_times=1)
            exploded = tasks.explode.delay(uid, message="row 3 has no id")
        assert staged.get(timeout=TIMEOUT) == "done"
        assert flaky.get(timeout=TIMEOUT) == 1
        with pytest.raises(ValueError, match="row 3"):
            exploded.get(timeout=TIMEOUT)
    failed = wait_failed(exploded.id)
    spans = check_runs(
        spans_file,
        publisher,
        request,
        queue="celery",
        staged=(staged.id, STAGED),
        flaky=(flaky.id, FLAKY),
        failed=failed,
        exception=("ValueError", "row 3 has no id"),
    )
    first, _ = runs(spans, flaky.id)
    (retry,) = [e for e in first["events"] if e["name"] == otel.RETRY_EVENT]
    assert retry["attributes"] == {
        "exception.type": "OSError",
        "exception.message": "temporary failure",
    }


def test_the_celery_instrumentations_spans_are_enriched(
    make_cell, uid: int, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    cell: Cell = make_cell("redis", "sqlite")
    spans_file = tmp_path / "spans.jsonl"
    cell.start_worker(pool="prefork", env={SPANS_ENV: str(spans_file), CELERY_ENV: "1"})
    with publisher_spans(celery_instrumentation=True) as publisher:
        with publisher.request() as request:
            staged = tasks.staged.delay(uid)
            exploded = tasks.explode.delay(uid, message="row 3 has no id")
        assert staged.get(timeout=TIMEOUT) == "done"
        with pytest.raises(ValueError, match="row 3"):
            exploded.get(timeout=TIMEOUT)
    wait_failed(exploded.id)
    # No span of taskstatus's own on either side: the instrumentation's stand.
    assert [s.name for s in publisher.spans("publish ")] == []
    (apply_async,) = [s for s in publisher.spans("apply_async/") if s.name.endswith(STAGED)]
    spans = worker_spans(spans_file, 3, "the worker's spans")
    assert sorted(s["name"] for s in spans) == [f"run/{EXPLODE}", f"run/{STAGED}", "sending emails"]
    assert {trace_id(s) for s in spans} == {trace_id(request)}

    (run,) = only(spans, **{otel.MESSAGE_ID: staged.id, otel.TASK_CLASS: STAGED})
    assert run["parent_id"] == span_id(apply_async)
    assert run["attributes"][otel.ATTEMPT] == 1
    assert run["attributes"][otel.OUTCOME] == "succeeded"
    assert run["attributes"]["celery.task_name"] == STAGED  # the instrumentation's own
    assert event_names(run) == [otel.STAGE_EVENT]
    (inner,) = [s for s in spans if s["name"] == "sending emails"]
    assert inner["parent_id"] == run["context"]["span_id"]

    (broken,) = only(spans, **{otel.MESSAGE_ID: exploded.id})
    assert broken["attributes"][otel.OUTCOME] == "failed"
    assert broken["status"]["status_code"] == "ERROR"
    # The instrumentation records the exception; taskstatus does not record it again.
    assert event_names(broken) == ["exception"]
    assert run["links"] == broken["links"] == []  # one trace: nothing to link

    # A producer without the instrumentation: its message carries no context the
    # instrumentation reads, so the worker's span starts a trace, linked to the publish.
    with publisher_spans() as plain, plain.request() as elsewhere:
        added = tasks.add.delay(2, 3, user_id=uid)
    assert added.get(timeout=TIMEOUT) == 5
    (published,) = plain.spans("publish ")
    (linked,) = only(
        worker_spans(spans_file, 4, "the worker's span of add"), **{otel.MESSAGE_ID: added.id}
    )
    assert trace_id(linked) != trace_id(elsewhere)
    assert [link["context"] for link in linked["links"]] == [
        {
            "trace_id": trace_id(published),
            "span_id": span_id(published),
            "trace_state": "[]",
        }
    ]
