"""The Celery app the integration tests run in a real ``celery worker`` process.

Configured from the environment (TS_TEST_BROKER, TS_TEST_BACKEND, TS_TEST_QUEUE, TS_TEST_STORE,
TS_TEST_ARTIFACTS, TS_TEST_PROGRESS_INTERVAL, TS_TEST_SLOW_NOTIFIER, TS_TEST_OTEL_SPANS: see
tests/tracing.py) so that each worker the tests start gets its own broker, queue and store;
TS_METRICS_PORT installs the Prometheus plugin and serves it from the worker's main process
(see tests.observability.metrics).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from celery import Celery
from celery.signals import worker_init, worker_process_shutdown

import taskstatus
import taskstatus.queues.celery as ts_celery
from tests.observability.switch import install_from_env
from tests.probes import probe_from_env

app = Celery(
    "taskstatus_tests",
    broker=os.environ.get("TS_TEST_BROKER", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("TS_TEST_BACKEND", "redis://127.0.0.1:6379/0"),
)
app.conf.update(
    task_default_queue=os.environ.get("TS_TEST_QUEUE", "taskstatus-tests"),
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={
        "visibility_timeout": 8,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    },
    result_expires=600,
)


class SlowFailureNotifier:
    """A ``taskstatus_stopped`` plugin that takes a second over each failed task (as one
    sending an e-mail would); enabled in workers started with TS_TEST_SLOW_NOTIFIER=1."""

    @taskstatus.hookimpl
    def taskstatus_stopped(self, status):
        if status.state is taskstatus.State.FAILED and not status.is_container:
            time.sleep(1.0)


class RetryWatcher:
    """A ``taskstatus_retry`` plugin that appends, once the retry is recorded, what the status
    shows then ("Retrying 1/3") to the file named by TS_TEST_RETRY_LOG."""

    @taskstatus.hookimpl(trylast=True)
    def taskstatus_retry(self, event):
        status = taskstatus.get_by_task_id(event.task_id)
        with open(os.environ["TS_TEST_RETRY_LOG"], "a") as f:
            f.write(f"{status.state.value} {status.completed_steps}/{status.total_steps}\n")


if os.environ.get("TS_TEST_STORE"):
    plugins = []
    if os.environ.get("TS_TEST_SLOW_NOTIFIER"):
        plugins.append(SlowFailureNotifier())
    if os.environ.get("TS_TEST_RETRY_LOG"):
        plugins.append(RetryWatcher())
    plugins.extend(probe_from_env())
    taskstatus.configure(
        url=os.environ["TS_TEST_STORE"],
        artifact_storage=os.environ.get("TS_TEST_ARTIFACTS"),
        progress_interval=float(os.environ.get("TS_TEST_PROGRESS_INTERVAL", "0.1")),
        plugins=plugins,
    )
ts_celery.install(app)
if os.environ.get("TS_TEST_OTEL_SPANS"):
    from tests.tracing import install_from_env

    install_from_env()

metrics_port = install_from_env()
if metrics_port is not None:
    from taskstatus.observability import prometheus

    @worker_init.connect
    def serve_metrics(**kwargs):
        """In the main process, before the pool forks (as docs/observability.md shows)."""
        prometheus.start_http_server(metrics_port, addr="127.0.0.1")

    @worker_process_shutdown.connect
    def forget_process(pid, **kwargs):
        prometheus.mark_process_dead(pid)


@taskstatus.track(name="Count to {n}", total_steps=lambda a: a["n"])
@app.task(bind=True)
def count(self, user_id, n, delay=0.0):
    status = taskstatus.current()
    for _ in range(n):
        time.sleep(delay)
        status.increment_completed_steps()
    return n


@app.task
@taskstatus.track(name="Add {x}+{y}")
def add(x, y, user_id=None):
    return x + y


@taskstatus.track()
@app.task
def total(values, user_id=None):
    return sum(values)


@taskstatus.track(name="Explode")
@app.task
def explode(user_id, message="the file has no header"):
    raise ValueError(message)


@taskstatus.track()
@app.task(bind=True, max_retries=3, default_retry_delay=0)
def flaky(self, user_id, fail_times=1, countdown=0):
    if self.request.retries < fail_times:
        try:
            raise OSError("temporary failure")
        except OSError as exc:
            raise self.retry(exc=exc, countdown=countdown) from exc
    return self.request.retries


@taskstatus.track(total_steps=3)
@app.task(bind=True, max_retries=1)
def busy(self, user_id, countdown=2.0):
    """Counts a step, then retries with an error it never raised; the next run succeeds."""
    if not self.request.retries:
        taskstatus.current().increment_completed_steps()
        raise self.retry(exc=OSError("busy"), countdown=countdown)
    return "done"


@taskstatus.track()
@app.task(bind=True)
def staged(self, user_id):
    from opentelemetry import trace  # a span of the task's own, under the run's when traced

    status = taskstatus.current()
    with trace.get_tracer("tests").start_as_current_span("sending emails"):
        status.set_state("Sending emails")
        status.check_canceled()
    time.sleep(0.5)
    return "done"


@taskstatus.track()
@app.task
def produce(user_id):
    status = taskstatus.current()
    status.add_artifact(name="Output", file=b"id,name\n1,x\n", filename="export.csv")
    status.add_artifact(name="Link", url="https://example.com/report/1")
    status.add_artifact(name="Summary", text="1 row")


@taskstatus.track()
@app.task(bind=True)
def sleepy(self, user_id, seconds=30.0, marker=None):
    """Runs until canceled (checks often) or ``seconds`` pass."""
    if marker:
        with open(marker, "a") as f:
            f.write(f"{self.request.id}\n")
    status = taskstatus.current()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
        status.increment_completed_steps(0)
        status.set_state("Working")
    return "slept"


@app.task
def untracked(x):
    return x * 2


@taskstatus.track()
@app.task(acks_late=True)
def acked_late(user_id, value):
    return value


def _count_run(folder, gate):
    """Leave one file per run in ``folder`` (runs are counted); then wait for ``gate``."""
    (Path(folder) / uuid.uuid4().hex).touch()
    deadline = time.monotonic() + 60
    while gate and not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.02)


@taskstatus.track()
@app.task
def counted(user_id, folder, gate=None):
    _count_run(folder, gate)


@taskstatus.track()
@app.task(acks_late=True)
def counted_late(user_id, folder, gate=None):
    _count_run(folder, gate)


@taskstatus.track(total_steps=10)
@app.task(bind=True, acks_late=True, reject_on_worker_lost=True)
def fragile(self, user_id, marker, seconds=4.0):
    """Writes a line per attempt to ``marker``; the test kills the worker during the first."""
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    status = taskstatus.current()
    for _ in range(10):
        time.sleep(seconds / 10)
        status.increment_completed_steps()
    return "survived"


class Export(ts_celery.UserTask):
    name = "taskstatus_tests.Export"

    @classmethod
    def generate_name(cls, arguments_dict):
        return f"Export {arguments_dict['course']}"

    @classmethod
    def calculate_total_steps(cls, arguments_dict):
        return 3

    def run(self, user_id, course):
        for _ in range(3):
            self.status.increment_completed_steps()
        return course


export = app.register_task(Export())


@taskstatus.track()
@app.task
def gated(user_id, gate, stage=None, timeout=30.0):
    """Runs until the file ``gate`` exists (or it is canceled), showing ``stage`` meanwhile."""
    status = taskstatus.current()
    if stage:
        status.set_state(stage)
    status.check_canceled()
    end = time.monotonic() + timeout
    while not os.path.exists(gate):
        if time.monotonic() > end:
            raise TimeoutError(f"{gate} was not created within {timeout}s")
        time.sleep(0.05)
        status.check_canceled()
    return "opened"


@taskstatus.track()
@app.task
def quiet_stage(user_id, marker, stage, seconds=5.0):
    """Leaves ``marker``, shows ``stage``, then works ``seconds`` reporting nothing."""
    open(marker, "w").close()
    taskstatus.current().set_state(stage)
    time.sleep(seconds)


@taskstatus.track()
@app.task
def stubborn(user_id, seconds=30.0):
    """Sleeps without ever looking at its status: only a hard stop ends it early."""
    time.sleep(seconds)
    return "woke up"


def _slow_name(arguments):
    time.sleep(arguments["pause"])
    return f"Slow {arguments['pause']}"


@taskstatus.track(name=_slow_name)
@app.task
def slow_named(user_id, pause=2.0):
    """A task whose name takes ``pause`` seconds to compute (in the producer too)."""
    return pause


@taskstatus.track()
@app.task(bind=True, max_retries=3)
def retry_at_once(self, user_id, marker, run_for=2.0):
    """Retries once without delay; the second run creates ``marker`` when it starts and then
    takes ``run_for`` seconds."""
    if not self.request.retries:
        raise self.retry(exc=OSError("temporary failure"), countdown=0)
    open(marker, "w").close()
    time.sleep(run_for)
    return self.request.retries


@taskstatus.track()
@app.task(bind=True)
def census(self, user_id, index=0):
    """Returns how many members its group had recorded (any state) when this one started."""
    parent = taskstatus.get_by_task_id(self.request.id).parent_uuid
    return len(taskstatus.get(parent).children()) if parent is not None else 0


@taskstatus.track()
@app.task(bind=True, max_retries=1)
def retry_in_batch(self, user_id):
    """Retries once from inside a ``taskstatus.batch()`` block, which the retry leaves by
    raising."""
    if not self.request.retries:
        with taskstatus.batch():
            raise self.retry(countdown=0)
    return self.request.retries
