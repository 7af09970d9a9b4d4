"""OpenTelemetry traces of every tracked task, whichever queue runs it, from the lifecycle hooks.

:func:`install` registers a :class:`Tracing` plugin that makes two spans per run:

* ``publish {task}`` (PRODUCER) wraps the ``taskstatus_publish`` hook: it starts before the
  Pending status is recorded and ends once it is, just before the message leaves (no hook
  follows the send, so the send itself is not in it). Its context goes into ``event.carrier``
  through the global propagator, and the adapter sends that in the message.
* ``run {task}`` (CONSUMER) lasts from ``taskstatus_prerun`` to ``taskstatus_postrun``, in the
  process that runs the task, parented on the context the message carried. It is the current
  span while the body runs, so spans the task makes nest under it.

On Celery, when ``opentelemetry-instrumentation-celery`` is active in the process (see
:func:`celery_instrumented`), its own ``apply_async/{task}`` and ``run/{task}`` spans stand and
this plugin adds its attributes and events to the run span instead of making a second one.

Only ``opentelemetry-api`` is used: with no SDK (or no tracer provider set), every span is the
API's no-op span, and nothing is looked up to describe it.
"""

from __future__ import annotations

import contextvars
import dataclasses
import sys
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode
except ModuleNotFoundError as exc:  # pragma: no cover - tested in a subprocess
    raise ModuleNotFoundError(
        "taskstatus.observability.otel needs the 'opentelemetry-api' package, which is not "
        "installed: pip install 'taskstatus[otel]'",
        name="opentelemetry",
    ) from exc

from .. import __version__
from ..exceptions import TaskCanceledException
from ..hookspecs import hookimpl
from ..plugins import register_default

if TYPE_CHECKING:
    from ..events import TaskEvent
    from ..models import TaskStatus
    from ..tracker import Tracker

__all__ = ["TRACER_NAME", "Tracing", "celery_instrumented", "install"]

#: The instrumentation scope of the spans (``otel.scope.name``).
TRACER_NAME = "taskstatus"
#: The module of the official Celery instrumentation: looked for, never imported here.
CELERY_INSTRUMENTATION = "opentelemetry.instrumentation.celery"

#: Span attributes.
UUID = "taskstatus.uuid"
TASK_CLASS = "taskstatus.task_class"
ATTEMPT = "taskstatus.attempt"
OUTCOME = "taskstatus.outcome"
STAGE = "taskstatus.stage"
MESSAGE_ID = "messaging.message.id"
SYSTEM = "messaging.system"
OPERATION_NAME = "messaging.operation.name"
OPERATION_TYPE = "messaging.operation.type"
#: Span events.
STAGE_EVENT = "taskstatus.stage"
RETRY_EVENT = "taskstatus.retry"
CANCEL_EVENT = "taskstatus.cancel"


def celery_instrumented() -> bool:
    """Whether ``opentelemetry-instrumentation-celery`` is active in this process: its module
    was imported and ``CeleryInstrumentor().instrument()`` was called (and not undone).

    The run span it makes is then the current span when the task's run starts, so taskstatus
    enriches that one. The check costs a dictionary lookup when the module was never imported.
    """
    module = sys.modules.get(CELERY_INSTRUMENTATION)
    if module is None:
        return False
    return bool(module.CeleryInstrumentor().is_instrumented_by_opentelemetry)


@dataclasses.dataclass
class _Run:
    """A run in progress in this process: its span and whether this plugin made it."""

    span: Span
    owned: bool
    #: The token of the context attached for the run (None: nothing was attached).
    token: contextvars.Token[otel_context.Context] | None = None


class Tracing:
    """The plugin: spans from lifecycle events (see the module's description)."""

    def __init__(
        self, tracer_provider: trace.TracerProvider | None = None, *, flush_each_run: bool = False
    ) -> None:
        """``tracer_provider``: None for the global one, looked up at each span (so it may be
        set after :func:`install`). ``flush_each_run``: flush the provider after each run,
        for a process that ends right after its run without shutting the SDK down (RQ's
        forking work horse leaves through ``os._exit``)."""
        self.tracer_provider = tracer_provider
        self.flush_each_run = flush_each_run
        self._tracer = trace.get_tracer(TRACER_NAME, __version__, tracer_provider)
        #: The runs of this process, by task id.
        self._runs: dict[str, _Run] = {}

    # -- publish ---------------------------------------------------------------------------------
    @hookimpl(wrapper=True)
    def taskstatus_publish(self, event: TaskEvent) -> Generator[None, object, object]:
        if event.is_container:  # no message of its own: nothing to trace
            return (yield)
        if event.queue == "celery" and celery_instrumented():
            # Its apply_async span is made as the message leaves; the carrier still joins
            # the caller's trace for a worker where the instrumentation is not active.
            propagate.inject(event.carrier)
            return (yield)
        span = self._tracer.start_span(f"publish {event.task_class}", kind=SpanKind.PRODUCER)
        if not span.get_span_context().is_valid:
            return (yield)  # a no-op tracer (no provider set): nothing to carry
        if span.is_recording():
            _describe(span, event, "publish", "send")
        propagate.inject(event.carrier, context=trace.set_span_in_context(span))
        try:
            return (yield)
        except BaseException as exc:  # nothing is sent (a plugin refused it, the store down)
            _failed(span, exc, None)
            raise
        finally:
            span.end()

    # -- run -------------------------------------------------------------------------------------
    @hookimpl(wrapper=True)
    def taskstatus_prerun(self, event: TaskEvent) -> Generator[None, object, object]:
        run = self._start(event)
        if run is None:  # a no-op tracer: nothing to attach, nor to add to later
            return (yield)
        try:
            return (yield)
        except BaseException as exc:
            # The run does not go on (canceled before it started, the store out of reach).
            if self._runs.get(event.task_id) is run:
                del self._runs[event.task_id]
            if isinstance(exc, TaskCanceledException):
                _canceled(run, exc)
            elif run.owned:
                _failed(run.span, exc, None)
            self._close(run)
            raise

    def _start(self, event: TaskEvent) -> _Run | None:
        if event.queue == "celery" and celery_instrumented():
            current = trace.get_current_span()
            if current.is_recording():  # the instrumentation's run span
                _describe(current, event, "process", "process")
                _link_publish(current, event)
                run = self._runs[event.task_id] = _Run(current, owned=False)
                return run
        parent = propagate.extract(event.carrier) if event.carrier else None
        span = self._tracer.start_span(
            f"run {event.task_class}", context=parent, kind=SpanKind.CONSUMER
        )
        if not span.get_span_context().is_valid:
            return None
        if span.is_recording():
            _describe(span, event, "process", "process")
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        run = self._runs[event.task_id] = _Run(span, owned=True, token=token)
        return run

    @hookimpl
    def taskstatus_postrun(self, event: TaskEvent) -> None:
        run = self._runs.pop(event.task_id, None)
        if run is not None:
            self._close(run)

    def _close(self, run: _Run) -> None:
        if run.token is not None:
            otel_context.detach(run.token)
        if run.owned:
            run.span.end()
        if self.flush_each_run:
            provider = self.tracer_provider or trace.get_tracer_provider()
            flush = getattr(provider, "force_flush", None)  # the SDK's; the API has none
            if flush is not None:
                flush()

    # -- during and at the end of a run ----------------------------------------------------------
    @hookimpl
    def taskstatus_progress(self, event: TaskEvent) -> None:
        if event.stage is None:
            return
        run = self._runs.get(event.task_id)
        if run is not None:
            run.span.add_event(STAGE_EVENT, {STAGE: event.stage})

    @hookimpl
    def taskstatus_retry(self, event: TaskEvent) -> None:
        run = self._runs.get(event.task_id)
        if run is None:
            return
        run.span.set_attribute(OUTCOME, "retrying")
        run.span.add_event(RETRY_EVENT, _exception_attributes(event))

    @hookimpl
    def taskstatus_fail(self, event: TaskEvent) -> None:
        run = self._runs.get(event.task_id)
        if run is None:
            return
        run.span.set_attribute(OUTCOME, "failed")
        if run.owned:  # the Celery instrumentation records its span's failure itself
            _failed(run.span, event.exception, event.message)

    @hookimpl
    def taskstatus_succeed(self, event: TaskEvent) -> None:
        run = self._runs.get(event.task_id)
        if run is not None:
            run.span.set_attribute(OUTCOME, "succeeded")

    @hookimpl
    def taskstatus_cancel(self, event: TaskEvent) -> None:
        if event.exception is None:
            return  # a request to cancel (from any process): the run stops at its next call
        run = self._runs.get(event.task_id)
        if run is not None:
            _canceled(run, event.exception)

    @hookimpl
    def taskstatus_stopped(self, status: TaskStatus) -> None:
        # The one place the status itself, and so its uuid, is at hand without a read.
        run = self._runs.get(status.task_id)
        if run is not None:
            run.span.set_attribute(UUID, str(status.uuid))


def _describe(span: Span, event: TaskEvent, operation: str, kind: str) -> None:
    span.set_attributes(
        {
            TASK_CLASS: event.task_class,
            MESSAGE_ID: event.task_id,
            SYSTEM: event.queue,
            OPERATION_NAME: operation,
            OPERATION_TYPE: kind,
        }
    )
    if event.attempt is not None:
        span.set_attribute(ATTEMPT, event.attempt)


def _link_publish(span: Span, event: TaskEvent) -> None:
    """Link the instrumentation's run span to the ``publish`` span the message carries when
    they are in different traces (a producer without the instrumentation): its span cannot
    be re-parented, so the link is what leads from one trace to the other."""
    if not event.carrier:
        return
    published = trace.get_current_span(propagate.extract(event.carrier)).get_span_context()
    if published.is_valid and published.trace_id != span.get_span_context().trace_id:
        span.add_link(published)


def _exception_attributes(event: TaskEvent) -> dict[str, Any]:
    exc = event.exception
    if exc is None:
        return {"exception.message": event.message} if event.message else {}
    return {"exception.type": _type_name(exc), "exception.message": str(exc)}


def _type_name(exc: BaseException) -> str:
    """As OpenTelemetry's ``record_exception`` names it: qualified unless a built-in."""
    cls = type(exc)
    name = cls.__qualname__
    return name if cls.__module__ == "builtins" else f"{cls.__module__}.{name}"


def _failed(span: Span, exc: BaseException | None, message: str | None) -> None:
    """Mark ``span`` failed: error status, and the exception as its event."""
    if exc is not None:
        span.record_exception(exc)
    description = message or (f"{type(exc).__name__}: {exc}" if exc is not None else None)
    span.set_status(Status(StatusCode.ERROR, description))


def _canceled(run: _Run, exc: BaseException | None) -> None:
    """A canceled run is not an error: an event and the outcome, the status left unset."""
    run.span.set_attribute(OUTCOME, "canceled")
    run.span.add_event(CANCEL_EVENT, {"exception.message": str(exc)} if exc is not None else {})


_installed: list[Tracing] = []


def install(
    tracer_provider: trace.TracerProvider | None = None,
    *,
    tracker: Tracker | None = None,
    flush_each_run: bool = False,
) -> Tracing:
    """Trace every task this process publishes or runs; returns the plugin.

    Call it once per process, in producers and workers alike, where the queue adapter is
    installed. ``tracer_provider``: None for the global one (``trace.set_tracer_provider``),
    looked up at each span. ``tracker``: register with this tracker only; by default with
    every tracker, as queue adapters do (a second call then returns the first plugin).
    ``flush_each_run``: see :class:`Tracing` (RQ's forking worker).
    """
    plugin = Tracing(tracer_provider, flush_each_run=flush_each_run)
    if tracker is not None:
        tracker.register(plugin)
        return plugin
    if _installed:
        first = _installed[0]
        if (first.tracer_provider, first.flush_each_run) != (tracer_provider, flush_each_run):
            raise RuntimeError(
                "taskstatus.observability.otel is installed already, with other arguments"
            )
        return first
    _installed.append(plugin)
    register_default(plugin)
    return plugin
