"""Prometheus metrics of every task on Celery, Dramatiq and RQ, from the lifecycle hooks.

``install()`` registers :class:`PrometheusMetrics` with every tracker; :func:`start_http_server`
serves what a worker counted. Each process counts the events it sees: the publisher its
publishes, the worker its runs; Prometheus adds them up. A worker whose pool forks (Celery's
prefork, RQ's work horse, several Dramatiq processes) needs prometheus_client's multiprocess
mode: ``PROMETHEUS_MULTIPROC_DIR`` set to an empty directory before the worker starts.
:func:`store_collector` makes the store-wide gauges of ``taskstatus serve``'s ``/metrics``.
docs/observability.md has the set-up per queue and the metric reference.
"""

from __future__ import annotations

import bisect
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
    from prometheus_client import values as prometheus_values
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "taskstatus.observability.prometheus needs prometheus_client: "
        f"pip install 'taskstatus[prometheus]' ({exc})"
    ) from exc

from .. import messages, plugins
from ..events import TaskEvent
from ..hookspecs import hookimpl
from ..models import State
from ..tracker import Tracker
from .sequential_children import SequentialChildren

__all__ = [
    "LOST_EXCEPTION",
    "NO_EXCEPTION",
    "PUBLISHED_AT",
    "PrometheusMetrics",
    "install",
    "mark_process_dead",
    "multiprocess_mode",
    "serve_forever",
    "start_http_server",
    "store_collector",
]

#: The key of ``event.carrier`` under which the publisher sends the time of the publish
#: (seconds since the epoch, as text): the worker's first start reads it for the queue wait.
PUBLISHED_AT = "taskstatus-published-at"
#: The ``exception`` label of a failure without an exception (a fail reported after the fact).
NO_EXCEPTION = "none"
#: The ``exception`` label of a task whose worker was lost (:data:`messages.WORKER_LOST`),
#: whatever exception the queue reported for it.
LOST_EXCEPTION = "WorkerLost"

#: Task runs last from milliseconds to hours; so do waits in a busy queue.
DEFAULT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600)

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
#: Label names of the metrics themselves (and Prometheus's ``le``), not for constant labels.
_RESERVED = frozenset({"queue", "task", "exception", "state", "le"})


def multiprocess_mode() -> bool:
    """Whether prometheus_client counts in files shared by the processes of a worker (it
    decides once, when imported: ``PROMETHEUS_MULTIPROC_DIR`` must be set before)."""
    return prometheus_values.ValueClass is not prometheus_values.MutexValue


class _Values:
    """What one labelled child of a counter or gauge adds to.

    The public calls (``inc()``, ``dec()``, ``observe()``) check the child's labels and
    options before each change: several calls more per event, on a worker's hot path where a
    trivial task costs well under a millisecond. The children are made through the public API,
    so they are checked once; the hot path then changes their values as those calls do after
    their checks (``prometheus_client.values``, one file per process in multiprocess mode)."""

    __slots__ = ("inc",)

    def __init__(self, child: Counter | Gauge) -> None:
        self.inc: Callable[[float], None] = child._value.inc


class _Observations:
    """What one labelled child of a histogram adds to (see :class:`_Values`)."""

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._sum = child._sum
        self._buckets = [bucket.inc for bucket in child._buckets]
        self._bounds = child._upper_bounds  # sorted, +Inf last

    def observe(self, amount: float) -> None:
        self._sum.inc(amount)
        self._buckets[bisect.bisect_left(self._bounds, amount)](1)


class _Series:
    """The labelled children of one (queue, task): looked up once, then only added to."""

    __slots__ = (
        "canceled",
        "in_progress",
        "lost",
        "published",
        "retried",
        "runtime",
        "started",
        "succeeded",
        "wait",
    )

    def __init__(self, metrics: PrometheusMetrics, labels: tuple[str, ...]) -> None:
        self.published = _Values(metrics.published.labels(*labels))
        self.started = _Values(metrics.started.labels(*labels))
        self.succeeded = _Values(metrics.succeeded.labels(*labels))
        self.retried = _Values(metrics.retried.labels(*labels))
        self.canceled = _Values(metrics.canceled.labels(*labels))
        self.lost = _Values(metrics.lost.labels(*labels))
        self.runtime = _Observations(metrics.runtime.labels(*labels))
        self.wait = _Observations(metrics.queue_wait.labels(*labels))
        self.in_progress = _Values(metrics.in_progress.labels(*labels))


class PrometheusMetrics:
    """The plugin: counts lifecycle events of tasks (containers are not counted: a chain or
    group is not a run, and its children are counted each).

    Labels are ``queue`` and ``task`` (the task class), plus the constant labels; failures add
    ``exception`` (a class name). Never an owner or a task id: their number has no bound.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        prefix: str = "taskstatus",
        const_labels: Mapping[str, str] | None = None,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        if not isinstance(prefix, str) or not _NAME.fullmatch(prefix):
            raise ValueError(
                f"prefix must be a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), "
                f"got {prefix!r}"
            )
        self.prefix = prefix
        self.const_labels = _check_labels(const_labels)
        self._const_values = tuple(self.const_labels.values())
        registry = prometheus_client.REGISTRY if registry is None else registry
        if not isinstance(registry, CollectorRegistry):
            raise TypeError(
                f"registry must be a prometheus_client CollectorRegistry, "
                f"got {type(registry).__name__}"
            )
        self.registry = registry
        names = ("queue", "task", *self.const_labels)

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(f"{prefix}_{name}", doc, (*names, *extra), registry=registry)

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(f"{prefix}_{name}", doc, names, registry=registry, buckets=buckets)

        self.published = counter("tasks_published", "Tasks recorded for sending to their queue.")
        self.started = counter("tasks_started", "Task runs started (each retry is a new run).")
        self.succeeded = counter("tasks_succeeded", "Tasks that succeeded.")
        self.failed = counter(
            "tasks_failed", "Tasks that failed for good (lost ones included).", ("exception",)
        )
        self.retried = counter(
            "tasks_retried", "Task runs that failed and will run again (lost ones included)."
        )
        self.canceled = counter(
            "tasks_canceled", "Task runs that stopped canceled, or were skipped as canceled."
        )
        self.lost = counter(
            "tasks_lost", "Tasks whose worker was lost (also counted as failed or retried)."
        )
        self.runtime = histogram(
            "task_runtime_seconds", "Time from the start of a run to its end, in the worker."
        )
        self.queue_wait = histogram(
            "task_queue_wait_seconds", "Time from the publish of a task to its first start."
        )
        # Incremented and decremented in the same process, so the sum over live processes is
        # the number running (a dead process's file is dropped by mark_process_dead).
        self.in_progress = Gauge(
            f"{prefix}_tasks_in_progress",
            "Task runs in progress.",
            names,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._series: dict[tuple[str, str], _Series] = {}
        self._failed: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.Lock()
        #: perf_counter() at the start of each run of this process, by task id.
        self._runs: dict[str, float] = {}

    # -- the hot path ----------------------------------------------------------------------------
    def _of(self, event: TaskEvent) -> _Series:
        """The series of the event's (queue, task), made at its first event (the hottest
        hooks look it up themselves first, a call fewer)."""
        series = self._series.get((event.queue, event.task_class))
        if series is None:
            with self._lock:
                key = (event.queue, event.task_class)
                series = self._series.get(key)
                if series is None:
                    series = _Series(self, (*key, *self._const_values))
                    self._series[key] = series
        return series

    # The hooks below run after the recorder's (trylast): what it refuses (a publish it cannot
    # record, the start of a canceled task) raises there and is not counted.
    @hookimpl(trylast=True)
    def taskstatus_publish(self, event: TaskEvent) -> None:
        if event.is_container:
            return
        self._of(event).published.inc(1)
        event.carrier[PUBLISHED_AT] = repr(time.time())

    @hookimpl(trylast=True)
    def taskstatus_prerun(self, event: TaskEvent) -> None:
        if event.is_container:
            return
        series = self._series.get((event.queue, event.task_class)) or self._of(event)
        series.started.inc(1)
        series.in_progress.inc(1)
        self._runs[event.task_id] = time.perf_counter()
        published = event.carrier.get(PUBLISHED_AT)
        if published is not None and (event.attempt or 1) == 1:
            try:
                waited = time.time() - float(published)
            except ValueError:
                return  # not ours: a publisher of another version, or edited by hand
            if math.isnan(waited):
                return
            # Clocks of two hosts may disagree by a little: never a negative wait.
            series.wait.observe(max(waited, 0.0))

    @hookimpl(trylast=True)
    def taskstatus_postrun(self, event: TaskEvent) -> None:
        started = self._runs.pop(event.task_id, None)
        if started is None:
            return  # not started here (refused as canceled, or by another process)
        series = self._series.get((event.queue, event.task_class)) or self._of(event)
        series.runtime.observe(time.perf_counter() - started)
        series.in_progress.inc(-1)

    @hookimpl(trylast=True)
    def taskstatus_succeed(self, event: TaskEvent) -> None:
        if not event.is_container:
            series = self._series.get((event.queue, event.task_class)) or self._of(event)
            series.succeeded.inc(1)

    @hookimpl(trylast=True)
    def taskstatus_retry(self, event: TaskEvent) -> None:
        if event.is_container:
            return
        series = self._of(event)
        series.retried.inc(1)
        if _lost(event):
            series.lost.inc(1)

    @hookimpl(trylast=True)
    def taskstatus_fail(self, event: TaskEvent) -> None:
        if event.is_container:
            return
        lost = _lost(event)
        if lost:
            self._of(event).lost.inc(1)
            exception = LOST_EXCEPTION
        elif event.exception is None:
            exception = NO_EXCEPTION
        else:
            exception = type(event.exception).__name__
        key = (event.queue, event.task_class, exception)
        child = self._failed.get(key)
        if child is None:
            child = self.failed.labels(*key[:2], *self._const_values, exception)
            self._failed[key] = child
        child.inc()

    @hookimpl(trylast=True)
    def taskstatus_cancel(self, event: TaskEvent) -> None:
        # Without an exception it is a request (from the API, in any process); a run that
        # stopped canceled, or was skipped as canceled, comes with TaskCanceledException.
        if event.exception is not None and not event.is_container:
            self._of(event).canceled.inc(1)


def _lost(event: TaskEvent) -> bool:
    """Whether the worker running the task was lost (the adapters and the reaper say so by
    the message, or by an exception carrying it)."""
    if event.message == messages.WORKER_LOST:
        return True
    exc = event.exception
    return exc is not None and exc.args == (messages.WORKER_LOST,)


def _check_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise TypeError(f"const_labels must be a mapping, got {type(labels).__name__}")
    checked: dict[str, str] = {}
    for name, value in labels.items():
        if not isinstance(name, str) or not _LABEL.fullmatch(name) or name.startswith("__"):
            raise ValueError(f"const_labels: {name!r} is not a Prometheus label name")
        if name in _RESERVED:
            raise ValueError(f"const_labels: {name!r} is a label of the metrics themselves")
        if not isinstance(value, str):
            raise TypeError(f"const_labels: the value of {name!r} must be text, got {value!r}")
        checked[name] = value
    return checked


_installed: dict[tuple[int, str], PrometheusMetrics] = {}
_install_lock = threading.Lock()


def install(
    registry: CollectorRegistry | None = None,
    prefix: str = "taskstatus",
    const_labels: Mapping[str, str] | None = None,
    *,
    tracker: Tracker | None = None,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
    sequential_children: bool = False,
) -> PrometheusMetrics:
    """Count the tasks of this process: register the plugin with every tracker (or only
    with ``tracker``). Call it once per process, before a worker forks; calling it again with
    the same ``registry`` and ``prefix`` returns the plugin already installed.

    ``sequential_children``: this process forks children that run one task each, one after
    another (RQ's forking ``Worker``). In multiprocess mode they then all count into one set of
    files, named after this process, instead of leaving a set per child (per job).
    """
    key = (id(registry or prometheus_client.REGISTRY), prefix)
    with _install_lock:
        metrics = _installed.get(key)
        if metrics is None:
            if sequential_children:
                _share_files_with_children()
            metrics = PrometheusMetrics(
                registry=registry, prefix=prefix, const_labels=const_labels, buckets=buckets
            )
            _installed[key] = metrics
        elif metrics.const_labels != _check_labels(const_labels):
            raise ValueError(
                f"the metrics {prefix}_* are installed already, with other constant labels "
                f"({metrics.const_labels})"
            )
    if tracker is not None:
        if not tracker.pm.is_registered(metrics):
            tracker.register(metrics)
    else:
        plugins.register_default(metrics)
    return metrics


def _share_files_with_children() -> None:
    """Count this process's forked children, which run one after another, into one set of
    files opened once (see :mod:`.sequential_children`)."""
    if not multiprocess_mode():
        return
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory is None:  # the deprecated name, which prometheus_client still reads
        directory = os.environ["prometheus_multiproc_dir"]  # noqa: SIM112
    prometheus_values.ValueClass = SequentialChildren(directory).value_class()


def start_http_server(
    port: int, addr: str = "0.0.0.0", registry: CollectorRegistry | None = None
) -> tuple[Any, threading.Thread]:
    """Serve ``/metrics`` on ``addr``:``port`` from a thread of this process (a worker's main
    process); returns prometheus_client's (server, thread).

    In multiprocess mode it serves what every process of the worker counted (a
    MultiProcessCollector over ``PROMETHEUS_MULTIPROC_DIR``), else ``registry`` (default:
    prometheus_client's).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
    if multiprocess_mode():
        if registry is not None:
            raise ValueError(
                "in multiprocess mode the server reads PROMETHEUS_MULTIPROC_DIR, not a registry"
            )
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    elif registry is None:
        registry = prometheus_client.REGISTRY
    server, thread = prometheus_client.start_http_server(port, addr=addr, registry=registry)
    return server, thread


#: The port (default :data:`DEFAULT_PORT`) and address (default all) of :func:`serve_forever`.
PORT_ENV = "TASKSTATUS_METRICS_PORT"
ADDR_ENV = "TASKSTATUS_METRICS_ADDR"
DEFAULT_PORT = 9808


def serve_forever() -> int:
    """Serve ``/metrics`` until the process is stopped, on the port ``TASKSTATUS_METRICS_PORT``
    and address ``TASKSTATUS_METRICS_ADDR``: a process of its own beside a worker's, such as
    ``dramatiq --fork-function taskstatus.observability.prometheus:serve_forever``."""
    given = os.environ.get(PORT_ENV, str(DEFAULT_PORT))
    try:
        port = int(given)
    except ValueError:
        raise ValueError(f"{PORT_ENV} must be a port number, got {given!r}") from None
    _, thread = start_http_server(port, addr=os.environ.get(ADDR_ENV, "0.0.0.0"))
    thread.join()
    return 0


def mark_process_dead(pid: int) -> None:
    """Drop the in-progress gauge of a worker process that ended (multiprocess mode): call
    it where the pool learns of it (Celery's ``worker_process_shutdown`` signal)."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


# -- taskstatus serve: the store-wide gauges ---------------------------------------------------
class _StoreCollector(Collector):
    """Counts of the store, read at scrape time: one query per scrape, whatever the fleet."""

    def __init__(self, summary: Callable[[], Any], prefix: str) -> None:
        self._summary = summary
        self._prefix = prefix

    def collect(self) -> Iterator[Metric]:
        summary = self._summary()
        statuses = GaugeMetricFamily(
            f"{self._prefix}_statuses",
            "Statuses in the store, by state (containers included).",
            labels=["state"],
        )
        for state in State:
            statuses.add_metric([state.value], summary.counts.get(state, 0))
        yield statuses
        oldest = summary.oldest_in_progress
        age = 0.0
        if oldest is not None:
            age = max((datetime.now(timezone.utc) - oldest).total_seconds(), 0.0)
        yield GaugeMetricFamily(
            f"{self._prefix}_oldest_in_progress_age_seconds",
            "Seconds since the oldest task In Progress started (0 when none is).",
            value=age,
        )


def store_collector(tracker: Tracker, prefix: str = "taskstatus") -> CollectorRegistry:
    """A registry of the store-wide gauges of ``tracker``'s store (what ``taskstatus serve``
    exposes at ``/metrics``)."""
    if not _NAME.fullmatch(prefix):
        raise ValueError(f"prefix must be a Prometheus metric name, got {prefix!r}")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StoreCollector(tracker.summary, prefix))
    return registry
