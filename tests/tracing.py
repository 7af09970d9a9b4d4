"""OpenTelemetry in the queue tests: workers write their spans to a file, the test process
keeps its own in memory, and the tests compare the two.

A worker started with ``TS_TEST_OTEL_SPANS=<file>`` (read by the test apps, actors and jobs
through :func:`install_from_env`) installs ``taskstatus.observability.otel`` with an SDK
tracer provider that appends each span, as it ends, to that file as one JSON line; with
``TS_TEST_OTEL_CELERY=1`` it also turns on ``opentelemetry-instrumentation-celery``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
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
    # Exported as each span ends: a work horse leaves through os._exit, nothing batched.
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))
    if os.environ.get(CELERY_ENV):
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        CeleryInstrumentor().instrument(tracer_provider=provider)
    otel.install(provider)


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


@contextlib.contextmanager
def publisher_spans() -> Iterator[InMemorySpanExporter]:
    """The spans of the test process (the publisher) in this block, traced through the
    current default tracker (the active cell's) with an SDK provider of the block alone."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracker = taskstatus.get_tracker()
    plugin = otel.install(provider, tracker=tracker)
    try:
        yield exporter
    finally:
        tracker.pm.unregister(plugin)
        provider.shutdown()


def publish_span(exporter: InMemorySpanExporter, task_id: str) -> ReadableSpan:
    """The test process's ``publish`` span of ``task_id``."""
    spans = [
        s
        for s in exporter.get_finished_spans()
        if s.name.startswith("publish ") and (s.attributes or {}).get(otel.MESSAGE_ID) == task_id
    ]
    assert len(spans) == 1, [s.name for s in exporter.get_finished_spans()]
    return spans[0]
