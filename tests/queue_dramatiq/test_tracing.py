"""OpenTelemetry traces from a real ``dramatiq`` worker (processes of threads): the context
travels in the message options and each run's span joins the publisher's trace. And, with an
in-process worker, what the other queues share: cancels, refused publishes, no provider."""

from __future__ import annotations

from pathlib import Path

import dramatiq
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

import taskstatus
from taskstatus import State
from taskstatus.events import CARRIER_KEY
from taskstatus.observability import otel
from tests.queue_dramatiq import actors
from tests.tracing import (
    SPANS_ENV,
    Publisher,
    check_runs,
    publish_span,
    publisher_spans,
)
from tests.waiting import poll, wait_failed, wait_state

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
    check_runs(
        spans_file,
        publisher,
        request,
        queue="dramatiq",
        staged=(staged.message_id, "tests.queue_dramatiq.actors.stages"),
        flaky=(flaky.message_id, "tests.queue_dramatiq.actors.flaky"),
        failed=failed,
        exception=("ValueError", "row 3 has no id"),
    )


# -- in-process worker (StubBroker): the spans of both sides in the test's exporter ------------
def run_span(publisher: Publisher, task_id: str) -> ReadableSpan:
    (span,) = [
        s for s in publisher.spans("run ") if (s.attributes or {}).get(otel.MESSAGE_ID) == task_id
    ]
    return span


def test_a_canceled_run_is_not_an_error(stub, uid, tmp_path: Path):
    marker = tmp_path / "running"
    with publisher_spans() as publisher:
        stub.worker.pause()
        unstarted = actors.long_running.send(uid, str(tmp_path / "never"), seconds=0.1)
        taskstatus.get_by_task_id(unstarted.message_id).cancel()
        stub.worker.resume()
        running = actors.long_running.send(uid, str(marker), seconds=20)
        poll(marker.exists, bool, "the task to start")
        taskstatus.get_by_task_id(running.message_id).cancel()
        stub.join()
    for message in (unstarted, running):
        span = run_span(publisher, message.message_id)
        assert span.status.status_code is StatusCode.UNSET
        assert (span.attributes or {})[otel.OUTCOME] == "canceled"
        assert [e.name for e in span.events] == [otel.CANCEL_EVENT]
        assert span.parent is not None
        assert span.parent.span_id == publish_span(publisher, message.message_id).context.span_id  # type: ignore[union-attr]


class Quota:
    """Refuses every publish, as a quota plugin would."""

    @taskstatus.hookimpl
    def taskstatus_publish(self, event):
        raise PermissionError("quota exceeded")


def test_a_refused_publish_has_an_error_span(stub, uid):
    tracker = taskstatus.get_tracker()
    tracker.register(quota := Quota())
    try:
        with publisher_spans() as publisher, pytest.raises(PermissionError, match="quota"):
            actors.add.send(1, 2, user_id=uid)
    finally:
        tracker.pm.unregister(quota)
    (span,) = publisher.spans()
    assert span.name == "publish tests.queue_dramatiq.actors.add"
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    assert stub.broker.queues[actors.QUEUE].qsize() == 0


class CarrierWatcher:
    """Notes the carrier each run starts with."""

    def __init__(self) -> None:
        self.carriers: list[dict[str, str]] = []

    @taskstatus.hookimpl
    def taskstatus_prerun(self, event):
        self.carriers.append(dict(event.carrier))


def test_without_a_tracer_provider_nothing_is_carried(stub, uid):
    """The plugin on the API alone (no provider set): no-op spans, an empty carrier, so
    nothing is added to the message."""
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    tracker = taskstatus.get_tracker()
    plugin, watcher = otel.install(tracker=tracker), CarrierWatcher()
    tracker.register(watcher)
    try:
        message = actors.add.send(1, 2, user_id=uid)
        stub.join()
    finally:
        tracker.pm.unregister(plugin)
        tracker.pm.unregister(watcher)
    assert CARRIER_KEY not in message.options
    assert watcher.carriers == [{}]
    assert taskstatus.get_by_task_id(message.message_id).state is State.SUCCEEDED


def test_each_step_of_a_pipeline_runs_under_its_own_publish(stub, uid):
    """A later step is sent by the worker that ran the step before; it still joins the trace
    of the request that published the pipeline, under its own publish span."""
    with publisher_spans() as publisher:
        with publisher.request() as request:
            dramatiq.pipeline([actors.add.message(1, 2, user_id=uid), actors.add.message(3)]).run()
        stub.join()
    steps = publisher.spans("run ")
    assert len(steps) == 2
    for step in steps:
        task_id = (step.attributes or {})[otel.MESSAGE_ID]
        assert step.parent is not None
        assert step.parent.span_id == publish_span(publisher, task_id).context.span_id  # type: ignore[union-attr]
        assert step.context.trace_id == request.get_span_context().trace_id  # type: ignore[union-attr]
