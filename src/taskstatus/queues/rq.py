"""RQ: jobs of ``@taskstatus.track`` functions, recorded at enqueue and run by a tracking worker.

* **Enqueue** (``install()``): RQ has no enqueue hook, but every way to enqueue — ``enqueue``,
  ``enqueue_call``, ``enqueue_at``/``enqueue_in``, ``enqueue_many``, dependents — builds its
  job with ``Queue.create_job`` before saving it. ``install`` wraps that method: the status is
  recorded (and a missing owner raises ``TypeError``) before the job is saved. The job id is
  the task id. The methods that save what was created are wrapped too: a job recorded there
  that Redis then refuses ends Failed.
* **Enqueuing many**: ``enqueue_many`` (and ``Group.enqueue_many``) records its jobs with one
  multi-row INSERT before the Redis pipeline that saves them executes. Inside
  ``taskstatus.batch()``, ``enqueue()``/``enqueue_at()`` return the job at once and save it
  once the block's records are written; a job saved into a pipeline of the caller's is
  recorded before that pipeline executes.
* **Run** (``rq worker -w taskstatus.queues.rq.Worker``, or ``SimpleWorker``; both install
  the adapter themselves): their job class :class:`TrackedJob` records the run around
  ``Job.perform``; starts and successes are written in batches. The forking ``Worker`` hands
  each run to its work horse (see :mod:`taskstatus.handoff`), so a short job costs the horse
  no database connection. A job canceled before it started returns at once without running.
* **What the horse cannot tell** (it was killed, or stopped with ``send_stop_job_command``):
  the worker's ``handle_job_failure`` ends the status in the main process.
* **The store out of reach** when a worker takes a tracked job: the worker puts the job back
  in its queue, unstarted (its status stays Pending, no attempt is counted, nothing is failed),
  and waits a growing backoff before it takes the next job.
* **Dependencies**: a job that failed (for good) or was canceled cancels the statuses — and
  the RQ jobs — that depend on it, instead of leaving them deferred forever.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import get_tracker, messages
from ..events import CARRIER_KEY, TaskEvent
from ..exceptions import ConfigurationError, TaskCanceledException
from ..handoff import HandOff
from ..hookspecs import hookimpl
from ..lifecycle import Lifecycle
from ..tracker import Tracker
from ..tracking import TrackSpec, find_spec, qualified_name
from ._install import Installed, queue_library

with queue_library("rq"):
    from redis import Redis
    from rq import Queue
    from rq import SimpleWorker as RQSimpleWorker
    from rq import Worker as RQWorker
    from rq.command import send_stop_job_command
    from rq.group import Group
    from rq.job import Job, JobStatus
    from rq.timeouts import JobTimeoutException

__all__ = ["RQAdapter", "SimpleWorker", "TrackedJob", "Worker", "install"]

log = logging.getLogger(__name__)

QUEUE = "rq"

_patch_lock = threading.Lock()


class _Process:
    """The adapter of this process, once ``install()`` ran."""

    adapter: RQAdapter | None = None


_process = _Process()


class _Redis:
    """The Redis connection RQ jobs are canceled through in this process: that of the last
    queue that enqueued, or job that ran, a tracked job here."""

    connection: Redis | None = None


_redis = _Redis()


def install(target: Queue | Redis | None = None, /, *, tracker: Tracker | None = None) -> RQAdapter:
    """Record tracked jobs when they are enqueued in this process; returns the adapter.

    Call it once where queues are set up, in web processes and workers alike. RQ's queues
    share one class, so this covers them all; ``target``, a queue or Redis connection, is the
    one canceled jobs are dropped through until a tracked job is enqueued or run here.
    ``tracker`` defaults to the one made by ``taskstatus.configure()`` (looked up at each
    event). Installing twice returns the same adapter.
    """
    if target is not None and not isinstance(target, (Queue, Redis)):
        raise TypeError(
            f"install() takes an RQ queue or Redis connection, got {type(target).__name__}"
        )
    with _patch_lock:
        adapter = _process.adapter
        if adapter is None:
            adapter = _process.adapter = RQAdapter(tracker)
            _patch_create_job()
            adapter.register_with_tracker()
    if target is not None:
        _redis.connection = target.connection if isinstance(target, Queue) else target
    return adapter


def _lifecycle() -> Lifecycle:
    adapter = _process.adapter
    return adapter.lifecycle if adapter is not None else get_tracker().lifecycle


def _patch_create_job() -> None:
    """Wrap ``Queue.create_job``: every tracked job is recorded before it is saved."""
    original: Callable[..., Job] = Queue.create_job

    @functools.wraps(original)
    def create_job(self: Queue, *args: Any, **kwargs: Any) -> Job:
        job = original(self, *args, **kwargs)
        _record(self, job)
        return job

    Queue.create_job = create_job  # type: ignore[method-assign]
    # Every way to enqueue goes through one of these, which save the jobs they created: a
    # job recorded there that Redis then refuses ends at once.
    Queue.enqueue_call = _sending(Queue.enqueue_call)  # type: ignore[method-assign]
    Queue.enqueue_at = _sending(Queue.enqueue_at)  # type: ignore[method-assign]
    Group.enqueue_many = _sending(Group.enqueue_many)  # type: ignore[method-assign]
    Queue.enqueue_job = _holding(Queue.enqueue_job, 0)  # type: ignore[method-assign]
    Queue.schedule_job = _holding(Queue.schedule_job, 1)  # type: ignore[method-assign]
    Queue.enqueue_many = _enqueuing_many(Queue.enqueue_many)  # type: ignore[method-assign]


def _sending(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` inside a :meth:`Lifecycle.sending` block."""

    @functools.wraps(method)
    def sending(*args: Any, **kwargs: Any) -> Any:
        with Lifecycle.sending():
            return method(*args, **kwargs)

    return sending


def _holding(method: Callable[..., Job], pipeline_at: int) -> Callable[..., Job]:
    """Wrap a Queue method that saves one job it is given (``enqueue_job``,
    ``schedule_job``; its pipeline is the ``pipeline_at``-th argument after the job): inside
    a :meth:`Lifecycle.batch` block it runs once the block's records are written, and
    returns the job at once; a job saved into the caller's pipeline is recorded before that
    pipeline executes."""

    @functools.wraps(method)
    def save(self: Queue, job: Job, *args: Any, **kwargs: Any) -> Job:
        pipeline = kwargs.get("pipeline", args[pipeline_at] if len(args) > pipeline_at else None)
        with Lifecycle.sending():
            if pipeline is not None:
                _records_first(pipeline)
                return method(self, job, *args, **kwargs)
            return Lifecycle.deliver(functools.partial(method, self, job, *args, **kwargs), job)

    return save


def _enqueuing_many(method: Callable[..., list[Job]]) -> Callable[..., list[Job]]:
    """Wrap ``Queue.enqueue_many``: the jobs it creates are recorded with one write (see
    :meth:`Lifecycle.batch`) before the Redis pipeline that saves them executes."""

    @functools.wraps(method)
    def enqueue_many(
        self: Queue, job_datas: Any, pipeline: Any = None, *args: Any, **kwargs: Any
    ) -> list[Job]:
        # Without a pipeline of the caller's, RQ would execute its own as it goes: it gets
        # one from here, which it leaves to execute once the records are written.
        pipe = pipeline if pipeline is not None else self.connection.pipeline()
        _records_first(pipe)  # RQ executes it early to enqueue jobs with dependencies
        try:
            with Lifecycle.batch(), Lifecycle.sending():
                jobs = method(self, job_datas, pipe, *args, **kwargs)
                if pipeline is None:
                    Lifecycle.deliver(pipe.execute, None)
        except BaseException:
            if pipeline is None:
                pipe.reset()
            raise
        return jobs

    return enqueue_many


def _records_first(pipeline: Any) -> None:
    """Make a Redis pipeline write the records an open :meth:`Lifecycle.batch` block has
    collected before it executes: the jobs it saves may run as soon as it has."""
    execute = pipeline.execute
    if getattr(execute, "taskstatus_records_first", False):
        return

    @functools.wraps(execute)
    def execute_after_records(*args: Any, **kwargs: Any) -> Any:
        Lifecycle.write_collected()
        return execute(*args, **kwargs)

    execute_after_records.taskstatus_records_first = True  # type: ignore[attr-defined]
    pipeline.execute = execute_after_records


def _spec(job: Job) -> tuple[Callable[..., Any], TrackSpec] | None:
    try:
        func = job.func
    except Exception:  # an unimportable function: RQ reports that when the job runs
        return None
    spec = find_spec(func)
    return (func, spec) if spec is not None else None


def _record(queue: Queue, job: Job) -> None:
    tracked = _spec(job)
    if tracked is None:
        return
    func, spec = tracked
    info = spec.describe(
        func, tuple(job.args or ()), dict(job.kwargs or {}), task_name=qualified_name(func)
    )
    _redis.connection = queue.connection
    event = info.event(
        job.id,
        queue=QUEUE,
        task_class=qualified_name(func),
        # RQ's maintenance retries an abandoned job only when it has retries left.
        redeliver_on_loss=bool(job.retries_left),
    )
    _lifecycle().publish(event)
    if event.carrier:
        job.meta[CARRIER_KEY] = event.carrier  # saved with the job, next


def _cancel_dependents(job: Job) -> None:
    """A job that will not succeed: its dependents never run; end their statuses."""
    try:
        dependent_ids = job.dependent_ids
    except Exception:
        log.warning("could not read the dependents of job %s", job.id, exc_info=True)
        return
    lifecycle = _lifecycle()
    for dependent_id in dependent_ids:
        lifecycle.cancel(TaskEvent(task_id=dependent_id, queue=QUEUE))


class TrackedJob(Job):
    """A job that records its run; the job class of :class:`Worker` and :class:`SimpleWorker`."""

    #: The run reported how it ended (so the worker's failure handling, which RQ calls
    #: next in the same process, has nothing to add).
    reported = False

    def perform(self) -> Any:
        handoff = _forking.handoff
        if handoff is not None and handoff.task_id != self.id:
            handoff = None
        if handoff is not None:
            event = handoff.event  # a work horse: its worker described the run
        else:
            tracked = _spec(self)
            if tracked is None:
                return super().perform()
            event = _run_event(self, *tracked)
        _redis.connection = self.connection  # to cancel the dependents' jobs from the horse
        lifecycle = _lifecycle()
        try:
            live = lifecycle.take_over(handoff) if handoff else lifecycle.start(event)
        except TaskCanceledException as exc:
            lifecycle.end(event, exception=exc)
            _cancel_dependents(self)
            return None  # canceled before it started: never run
        try:
            result = super().perform()
        except TaskCanceledException as exc:
            lifecycle.end(live, exception=exc)
            _cancel_dependents(self)
            return None
        except BaseException as exc:
            retrying = bool(self.retries_left)
            message = messages.TIMED_OUT if isinstance(exc, JobTimeoutException) else None
            self.reported = True
            lifecycle.end(live, exception=exc, retrying=retrying, message=message)
            if not retrying:
                _cancel_dependents(self)
            raise
        if handoff is not None:
            lifecycle.hand_back(handoff, live)
        else:
            lifecycle.end(live)
        return result


def _run_event(job: Job, func: Callable[..., Any], spec: TrackSpec) -> TaskEvent:
    info = spec.describe(
        func,
        tuple(job.args or ()),
        dict(job.kwargs or {}),
        task_name=qualified_name(func),
        partial=True,
    )
    carrier = dict(job.meta.get(CARRIER_KEY) or {})
    return info.event(job.id, queue=QUEUE, task_class=qualified_name(func), carrier=carrier)


class _Forking:
    """The run the forking worker handed to the work horse it is about to fork (or runs)."""

    handoff: HandOff | None = None


_forking = _Forking()


class _WorkerMixin:
    """Run jobs as :class:`TrackedJob`, and end what the work horse cannot report: it was
    killed, or stopped on request."""

    connection: Redis  # set by RQ's worker

    def __init__(self, *args: Any, job_class: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, job_class=_tracked_job_class(job_class), **kwargs)  # type: ignore[call-arg]
        # ``rq worker -w ...`` imports only this class and the job modules: record the jobs
        # enqueued here, and cancel the RQ jobs of canceled statuses (a failed job's
        # dependents), even when no module calls install().
        lifecycle = install(self.connection).lifecycle
        # Job starts and successes are written in batches every write_interval (see
        # taskstatus.writebehind), and what is queued when the worker exits; this process
        # reaps lost jobs, idle or not (its work horses do not).
        lifecycle.worker_started()
        # A work horse forked per job then inherits a store whose schema was checked and
        # statements compiled, and opens a connection of its own only if it needs one.
        lifecycle.prepare_for_fork()

    def execute_job(self, job: Job, queue: Queue) -> Any:
        """Run a job; a tracked one whose start the store cannot record now goes back to its
        queue, unstarted, and this worker waits the lifecycle's backoff."""
        tracked = _spec(job)
        if tracked is None:
            return super().execute_job(job, queue)  # type: ignore[misc]
        lifecycle = _lifecycle()
        try:
            self._take(lifecycle, job, tracked)
        except Exception as exc:
            deferrals = int(job.meta.get(DEFERRALS_META, 0))
            delay = lifecycle.deferral(exc, deferrals)
            if delay is None:
                raise
            _put_back(job, queue, deferrals)
            log.warning(
                "cannot record the start of job %s (%s); put it back in its queue, taking "
                "the next job in %.1f s",
                job.id,
                exc,
                delay,
            )
            time.sleep(delay)
            return None
        return self._run(lifecycle, job, queue)

    def _take(
        self, lifecycle: Lifecycle, job: Job, tracked: tuple[Callable[..., Any], TrackSpec]
    ) -> None:
        """Make ready to run a tracked job (raises a store error while it can go back)."""
        lifecycle.admit()

    def _run(self, lifecycle: Lifecycle, job: Job, queue: Queue) -> Any:
        return super().execute_job(job, queue)  # type: ignore[misc]

    def handle_job_failure(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> Any:
        stopped = getattr(self, "_stopped_job_id", None) == job.id
        result = super().handle_job_failure(job, queue, *args, **kwargs)  # type: ignore[misc]
        if getattr(job, "reported", False) or _spec(job) is None:
            return result
        lifecycle = _lifecycle()
        event = TaskEvent(task_id=job.id, queue=QUEUE)
        lost = RuntimeError(messages.WORKER_LOST)
        if stopped:
            lifecycle.end(event, exception=TaskCanceledException("stopped on request"))
            _cancel_dependents(job)
        elif job.get_status(refresh=True) in (JobStatus.QUEUED, JobStatus.SCHEDULED):
            lifecycle.end(event, exception=lost, retrying=True)
        else:
            lifecycle.end(event, exception=lost, message=messages.WORKER_LOST)
            _cancel_dependents(job)
        return result


#: A job's meta key: how often a worker put the job back for want of the store.
DEFERRALS_META = "taskstatus_deferrals"


def _put_back(job: Job, queue: Queue, deferrals: int) -> None:
    """Return a job just taken from ``queue`` (not started: RQ keeps it in the queue's
    intermediate list until then) to the end of the queue, counting the deferral."""
    job.meta[DEFERRALS_META] = deferrals + 1
    with job.connection.pipeline() as pipeline:
        pipeline.hset(job.key, "meta", job._serialize_meta())
        pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
        queue.push_job_id(job.id, pipeline=pipeline)
        pipeline.execute()


def _tracked_job_class(job_class: Any) -> type[Job]:
    """The job class a tracking worker uses: TrackedJob for RQ's default, else the user's,
    which must derive from TrackedJob."""
    if isinstance(job_class, str):
        from rq.utils import import_attribute

        job_class = import_attribute(job_class)
    if job_class is None or job_class is Job:
        return TrackedJob
    if not (isinstance(job_class, type) and issubclass(job_class, TrackedJob)):
        raise ConfigurationError(
            f"a taskstatus worker runs jobs of a TrackedJob subclass; {job_class!r} is not one "
            f"(derive it from taskstatus.queues.rq.TrackedJob)"
        )
    return job_class


class Worker(_WorkerMixin, RQWorker):
    """RQ's forking worker, tracking: ``rq worker -w taskstatus.queues.rq.Worker``.

    It hands each tracked job's run to the work horse (see :mod:`taskstatus.handoff`): the
    horse writes what happens inside the job, and leaves a success to this process, which
    writes it in batches. A short job costs its horse no database connection.
    """

    def _take(
        self, lifecycle: Lifecycle, job: Job, tracked: tuple[Callable[..., Any], TrackSpec]
    ) -> None:
        _forking.handoff = lifecycle.hand_off(_run_event(job, *tracked))

    def _run(self, lifecycle: Lifecycle, job: Job, queue: Queue) -> Any:
        handoff = _forking.handoff
        assert handoff is not None
        try:
            return super()._run(lifecycle, job, queue)
        finally:
            _forking.handoff = None
            try:
                lifecycle.finish_hand_off(handoff)
            except Exception:
                log.exception("could not record the success of job %s", job.id)


class SimpleWorker(_WorkerMixin, RQSimpleWorker):
    """RQ's worker that runs jobs in its own process, tracking."""


class RQAdapter(Installed):
    """The RQ side of this process; also a taskstatus plugin: cancels the RQ jobs whose
    status was canceled (and stops them with ``terminate``)."""

    def __init__(self, tracker: Tracker | None) -> None:
        self._tracker = tracker

    @hookimpl
    def taskstatus_cancel(self, event: TaskEvent) -> None:
        connection = _redis.connection
        if event.queue != QUEUE or event.is_container or connection is None:
            return
        try:
            job = Job.fetch(event.task_id, connection=connection)
            status = job.get_status()
            if status == JobStatus.STARTED:
                if event.terminate:
                    send_stop_job_command(connection, job.id)
            elif status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
                job.cancel()
                _cancel_dependents(job)
        except Exception:
            # The status is canceled anyway: a worker skips the job when it gets it.
            log.warning("could not cancel RQ job %s", event.task_id, exc_info=True)
