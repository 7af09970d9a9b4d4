"""The Dramatiq actors of the integration tests, on a broker chosen by the environment.

A real ``dramatiq tests.queue_dramatiq.actors`` worker gets its broker, queue and store from
TS_DQ_BROKER (a ``redis://`` or ``amqp://`` URL), TS_DQ_QUEUE, TS_DQ_STORE and TS_DQ_ARTIFACTS;
TS_METRICS_PORT installs the Prometheus plugin in each worker process (the worker serves it from
a fork function: see tests.observability.metrics); TS_DQ_PROMETHEUS_MIDDLEWARE adds Dramatiq's
own Prometheus middleware beside it.
Without TS_DQ_BROKER (the test process) the actors sit on a StubBroker; tests move them to
the broker they need with :func:`bind`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dramatiq
from dramatiq.brokers.stub import StubBroker

import taskstatus
from taskstatus.queues.dramatiq import install
from tests.observability.switch import install_from_env
from tests.probes import probe_from_env

QUEUE = os.environ.get("TS_DQ_QUEUE", "taskstatus-tests")
#: Retries come fast in tests.
RETRY = {"max_retries": 1, "min_backoff": 50, "max_backoff": 100}


def make_broker(url: str | None) -> dramatiq.Broker:
    """A broker for ``url`` (None: a StubBroker), with taskstatus installed."""
    if url is None:
        broker: dramatiq.Broker = StubBroker()
        broker.emit_after("process_boot")
    elif url.startswith("redis"):
        from dramatiq.brokers.redis import RedisBroker

        # A dead worker's messages come back within seconds (see QUEUE_NOTES), unless a test
        # needs them to stay away longer.
        timeout = int(os.environ.get("TS_DQ_REDIS_HEARTBEAT_TIMEOUT", "3000"))
        broker = RedisBroker(url=url, heartbeat_timeout=timeout, maintenance_chance=1_000_000)
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=url)
    if os.environ.get("TS_DQ_PROMETHEUS_MIDDLEWARE"):
        from dramatiq.middleware.prometheus import Prometheus

        broker.add_middleware(Prometheus())
    install(broker)
    return broker


broker = make_broker(os.environ.get("TS_DQ_BROKER"))
dramatiq.set_broker(broker)
install_from_env()

if os.environ.get("TS_DQ_STORE"):
    taskstatus.configure(
        url=os.environ["TS_DQ_STORE"],
        artifact_storage=os.environ.get("TS_DQ_ARTIFACTS"),
        progress_interval=0.1,
        plugins=probe_from_env(),
    )
if os.environ.get("TS_TEST_OTEL_SPANS"):  # see tests/tracing.py
    from tests.tracing import install_from_env

    install_from_env()


@taskstatus.track(name="Count to {n}", total_steps=lambda a: a["n"])
@dramatiq.actor(queue_name=QUEUE, **RETRY)
def count(user_id, n, delay=0.0):
    status = taskstatus.current()
    for _ in range(n):
        time.sleep(delay)
        status.increment_completed_steps()
    return n


@dramatiq.actor(queue_name=QUEUE, **RETRY)
@taskstatus.track()
def add(x, y, user_id=None):
    return x + y


@taskstatus.track()
@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def explode(user_id, message="the file has no header"):
    raise ValueError(message)


@taskstatus.track()
@dramatiq.actor(queue_name=QUEUE, **RETRY)
def flaky(user_id, marker):
    """Fails on its first run (it leaves ``marker``), succeeds on the next."""
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise RuntimeError("first run fails")
    return "second run"


@taskstatus.track(total_steps=3)
@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def stages(user_id):
    from opentelemetry import trace  # a span of the task's own, under the run's when traced

    status = taskstatus.current()
    with trace.get_tracer("tests").start_as_current_span("sending emails"):
        status.set_state("Sending emails")
        status.increment_completed_steps()
        status.flush(final=False, force=True)
    time.sleep(0.3)
    status.add_artifact(name="Report", file=b"a,b\n1,2\n", filename="report.csv")
    status.add_artifact(name="Link", url="https://example.com/r/1")
    status.add_artifact(name="Summary", text="2 rows")
    status.increment_completed_steps(2)


@taskstatus.track(total_steps=1000)
@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def long_running(user_id, marker, seconds=20.0):
    """Reports progress until it is canceled; leaves ``marker`` once it runs."""
    Path(marker).write_text(str(os.getpid()))
    status = taskstatus.current()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)
        status.increment_completed_steps()
    return "finished"


@taskstatus.track(total_steps=10)
@dramatiq.actor(queue_name=QUEUE, max_retries=3, min_backoff=50, max_backoff=100)
def fragile(user_id, marker, seconds=4.0):
    """Writes a line per run to ``marker``; the test kills the worker during the first."""
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    status = taskstatus.current()
    for _ in range(10):
        time.sleep(seconds / 10)
        status.increment_completed_steps()
    return "survived"


@taskstatus.track()
@dramatiq.actor(queue_name=QUEUE, max_retries=0, time_limit=300)
def too_slow(user_id):
    time.sleep(5)


@taskstatus.track()
@dramatiq.actor(queue_name=QUEUE, max_retries=0, notify_shutdown=True)
def interruptible(user_id, marker):
    """Runs until its worker shuts down (Dramatiq raises Shutdown into it)."""
    Path(marker).write_text("running")
    for _ in range(300):
        time.sleep(0.1)  # Shutdown lands between two sleeps


@taskstatus.track()
@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def quiet_stage(user_id, marker, stage, seconds=5.0):
    """Leaves ``marker``, shows ``stage``, then works ``seconds`` reporting nothing."""
    Path(marker).write_text("running")
    taskstatus.current().set_state(stage)
    time.sleep(seconds)


@taskstatus.track()
@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def census(user_id, fail=False):
    """Notes how many statuses its owner has as it runs (every one published with it, if
    they were all recorded before the first message left); fails when asked."""
    seen = taskstatus.get_tracker().count(user_id=user_id)
    taskstatus.current().add_artifact(name="seen", text=str(seen))
    if fail:
        raise ValueError("census refused")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def untracked(x):
    return x * 2


ACTORS = [
    count,
    add,
    explode,
    flaky,
    stages,
    long_running,
    fragile,
    too_slow,
    interruptible,
    quiet_stage,
    census,
    untracked,
]


def bind(target: dramatiq.Broker, queue: str = QUEUE) -> None:
    """Move every actor to ``target`` and ``queue``, and make ``target`` the global broker
    (that of groups and pipelines), in this process."""
    dramatiq.set_broker(target)
    for actor in ACTORS:
        actor.broker = target
        actor.queue_name = queue
        target.declare_actor(actor)
