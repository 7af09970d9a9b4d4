"""OpenTelemetry traces from real ``rq worker`` processes: the context travels in the job's
meta, and the run's span, made in the forking worker's work horse, joins the publisher's trace."""

from __future__ import annotations

from pathlib import Path

import pytest
from rq import Retry

import taskstatus
from tests.queue_rq import jobs
from tests.tracing import FLUSH_ENV, SPANS_ENV, check_runs, publisher_spans

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("worker", ["fork", "simple"])
def test_worker_spans_join_the_publishers_trace(rq_cell, uid, worker, tmp_path: Path):
    """The worker exports in batches: a work horse's spans arrive only as the plugin flushes
    them at the end of each run (``flush_each_run``), before the horse leaves."""
    spans_file = tmp_path / "spans.jsonl"
    with publisher_spans() as publisher, publisher.request() as request:
        staged = rq_cell.queue.enqueue(jobs.staged, uid)
        flaky = rq_cell.queue.enqueue(jobs.flaky, uid, str(tmp_path / "marker"), retry=Retry(max=1))
        exploded = rq_cell.queue.enqueue(jobs.explode, uid, "row 3 has no id")
    rq_cell.work(worker, env={SPANS_ENV: str(spans_file), FLUSH_ENV: "1"})
    check_runs(
        spans_file,
        publisher,
        request,
        queue="rq",
        staged=(staged.id, "tests.queue_rq.jobs.staged"),
        flaky=(flaky.id, "tests.queue_rq.jobs.flaky"),
        failed=taskstatus.get_by_task_id(exploded.id),
        exception=("ValueError", "row 3 has no id"),
        # RQ does not tell the run which attempt it is; a work horse leaves its successes
        # to its worker.
        attempts_known=False,
        success_seen=worker == "simple",
    )
