"""OpenTelemetry in the queue tests: workers write their spans to a file, the test process
keeps its own in memory, and the tests compare the two.

A worker started with ``TS_TEST_OTEL_SPANS=<file>`` (read by the test apps, actors and jobs
through :func:`install_from_env`) installs ``taskstatus.observability.otel`` with an SDK
tracer provider that appends each span, as it ends, to that file as one JSON line; with
``TS_TEST_OTEL_CELERY=1`` it also turns on ``opentelemetry-instrumentation-celery``; with
``TS_TEST_OTEL_FLUSH_EACH_RUN=1`` it exports in batches and installs with ``flush_each_run``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import taskstatus
from taskstatus.observability import otel
from tests.waiting import poll

SPANS_ENV = "TS_TEST_OTEL_SPANS"
CELERY_ENV = "TS_TEST_OTEL_CELERY"
FLUSH_ENV = "TS_TEST_OTEL_FLUSH_EACH_RUN"


class JsonLinesExporter(SpanExporter):
    """Appends each span to a file as one JSON line; opened per export, so that forked
    children (prefork pools, RQ's work horses) and several processes may share the file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(span.to_json(indent=None) + "\n" for span in spans)
        with open(self.path, "a") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS


def install_from_env() -> None:
    """In a worker process: trace into the file named by ``TS_TEST_OTEL_SPANS``, if set."""
    path = os.environ.get(SPANS_ENV)
    if not path:
        return
    provider = TracerProvider()
    flush_each_run = bool(os.environ.get(FLUSH_ENV))
    # Exported as each span ends, or in batches that the plugin flushes after each run (a
    # work horse leaves through os._exit).
    processor = BatchSpanProcessor if flush_each_run else SimpleSpanProcessor
    provider.add_span_processor(processor(JsonLinesExporter(path)))
    # The global provider: the plugin's (given none), the instrumentation's and the tasks' own.
    trace.set_tracer_provider(provider)
    if os.environ.get(CELERY_ENV):
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        CeleryInstrumentor().instrument()
    otel.install(flush_each_run=flush_each_run)


def worker_spans(path: Path, count: int, what: str) -> list[dict[str, Any]]:
    """The spans the workers wrote to ``path``, once there are at least ``count``."""

    def read() -> list[dict[str, Any]]:
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    return poll(read, lambda spans: len(spans) >= count, what)


def only(spans: Sequence[dict[str, Any]], **attributes: object) -> list[dict[str, Any]]:
    """The worker spans whose attributes include ``attributes``."""
    return [s for s in spans if all(s["attributes"].get(k) == v for k, v in attributes.items())]


def trace_id(span: dict[str, Any] | ReadableSpan) -> str:
    """A span's trace id as the JSON lines spell it (``0x`` and 32 hex digits)."""
    if isinstance(span, dict):
        return str(span["context"]["trace_id"])
    assert span.context is not None
    return f"0x{span.context.trace_id:032x}"


def span_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"0x{span.context.span_id:016x}"


def event_names(span: dict[str, Any]) -> list[str]:
    return [event["name"] for event in span["events"]]


@dataclasses.dataclass
class Publisher:
    """The test process's side: its spans, and a tracer to open a request's span with."""

    exporter: InMemorySpanExporter
    provider: TracerProvider

    def request(self) -> contextlib.AbstractContextManager[trace.Span]:
        """A span standing for the web request that publishes tasks."""
        return self.provider.get_tracer("tests").start_as_current_span("request")

    def spans(self, prefix: str = "") -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name.startswith(prefix)]


@contextlib.contextmanager
def publisher_spans(*, celery_instrumentation: bool = False) -> Iterator[Publisher]:
    """The spans of the test process (the publisher) in this block, traced through the
    current default tracker (the active cell's) with an SDK provider of the block alone;
    ``celery_instrumentation`` turns the official Celery instrumentation on for the block."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracker = taskstatus.get_tracker()
    plugin = otel.install(provider, tracker=tracker)
    instrumentor = None
    if celery_instrumentation:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        instrumentor = CeleryInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
    try:
        yield Publisher(exporter, provider)
    finally:
        if instrumentor is not None:
            instrumentor.uninstrument()
        tracker.pm.unregister(plugin)
        provider.shutdown()


def publish_span(publisher: Publisher, task_id: str) -> ReadableSpan:
    """The test process's ``publish`` span of ``task_id``."""
    spans = [
        s
        for s in publisher.spans("publish ")
        if (s.attributes or {}).get(otel.MESSAGE_ID) == task_id
    ]
    assert len(spans) == 1, [s.name for s in publisher.spans()]
    return spans[0]


def runs(spans: Sequence[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    """The worker's run spans of ``task_id``, in the order they started."""
    found = only(spans, **{otel.MESSAGE_ID: task_id, otel.OPERATION_NAME: "process"})
    return sorted(found, key=lambda s: str(s["start_time"]))


def check_runs(
    spans_file: Path,
    publisher: Publisher,
    request: trace.Span,
    *,
    queue: str,
    staged: tuple[str, str],
    flaky: tuple[str, str],
    failed: taskstatus.TaskStatus,
    exception: tuple[str, str],
    attempts_known: bool = True,
    success_seen: bool = True,
) -> list[dict[str, Any]]:
    """What every queue's worker spans show after three tasks published in ``request``:
    ``staged`` (task id, task class) set the stage "Sending emails" in a span of its own
    and succeeded, ``flaky``
    failed once with a retry and then succeeded, ``failed`` failed with ``exception`` (type,
    message). ``attempts_known``: the queue tells the attempt of each run.
    ``success_seen``: the success is reported in the process that ran the task. Returns the
    worker spans, read from ``spans_file``."""
    spans = worker_spans(
        spans_file, 5, "the worker's spans: a run each, flaky's twice, the task's own"
    )
    the_trace = trace_id(request)
    assert {trace_id(s) for s in spans} == {the_trace}

    staged_id, staged_class = staged
    (run,) = runs(spans, staged_id)
    published = publish_span(publisher, staged_id)
    assert (published.name, trace_id(published)) == (f"publish {staged_class}", the_trace)
    assert published.kind is trace.SpanKind.PRODUCER
    assert (run["name"], run["kind"]) == (f"run {staged_class}", "SpanKind.CONSUMER")
    assert run["parent_id"] == span_id(published)
    attributes = dict(run["attributes"])
    attributes.pop(otel.UUID, None)  # where the success is written during the run only
    expected = {
        otel.TASK_CLASS: staged_class,
        otel.MESSAGE_ID: staged_id,
        otel.SYSTEM: queue,
        otel.OPERATION_NAME: "process",
        otel.OPERATION_TYPE: "process",
        otel.ATTEMPT: 1,
    }
    if success_seen:
        expected[otel.OUTCOME] = "succeeded"
    assert attributes == expected
    (inner,) = [s for s in spans if s["name"] == "sending emails"]  # the task's own
    assert inner["parent_id"] == run["context"]["span_id"]
    (stage,) = [e for e in run["events"] if e["name"] == otel.STAGE_EVENT]
    assert stage["attributes"] == {otel.STAGE: "Sending emails"}
    assert run["status"]["status_code"] == "UNSET"

    flaky_id, _ = flaky
    first, second = runs(spans, flaky_id)
    if attempts_known:
        assert (first["attributes"][otel.ATTEMPT], second["attributes"][otel.ATTEMPT]) == (1, 2)
    assert first["attributes"][otel.OUTCOME] == "retrying"
    assert first["status"]["status_code"] == "UNSET"  # the task goes on: not an error yet
    (retry,) = [e for e in first["events"] if e["name"] == otel.RETRY_EVENT]
    assert set(retry["attributes"]) == {"exception.type", "exception.message"}
    # The message of the next attempt carries the context of the first publish.
    origin = span_id(publish_span(publisher, flaky_id))
    assert first["parent_id"] == second["parent_id"] == origin
    assert second["attributes"].get(otel.OUTCOME) == ("succeeded" if success_seen else None)

    (broken,) = runs(spans, failed.task_id)
    kind, message = exception
    assert broken["status"] == {"status_code": "ERROR", "description": f"{kind}: {message}"}
    (recorded,) = [e for e in broken["events"] if e["name"] == "exception"]
    assert recorded["attributes"]["exception.type"] == kind
    assert recorded["attributes"]["exception.message"] == message
    assert broken["attributes"][otel.OUTCOME] == "failed"
    # Its failure is written during the run, so the status (and its uuid) is at hand there.
    assert broken["attributes"][otel.UUID] == str(failed.uuid)
    return list(spans)
