"""The three queue adapters install the same way: ``install(target, *, tracker=None)`` returns
the installed adapter, bound to the tracker given (or the default one), and a missing queue
library is named with the extra that installs it.

Each case runs in a fresh interpreter: installing patches the queue library for the whole
process (RQ's adapter is one per process), which must not leak into other tests."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import require_server
from tests.docs_harness import REDIS_URL

ROOT = Path(__file__).resolve().parent.parent

#: The tracked task of every case, a publish that each adapter records in ``tracker``.
PRELUDE = """
import inspect, uuid, warnings
import taskstatus
from taskstatus import Settings, State, Tracker

warnings.simplefilter("error", DeprecationWarning)
tracker = Tracker(Settings.load(url="memory://")).open()

def check_shape(install):
    parameters = inspect.signature(install).parameters
    assert list(parameters)[0] == "target", parameters
    assert parameters["tracker"].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["tracker"].default is None
"""

CASES = {
    "celery": """
from celery import Celery
from taskstatus.queues.celery import CeleryAdapter, install

check_shape(install)
app = Celery("shape", broker="memory://", set_as_current=False)
app.conf.task_always_eager = True

@taskstatus.track(user_arg="user_id")
@app.task
def work(user_id):
    return user_id

adapter = install(app, tracker=tracker)
assert isinstance(adapter, CeleryAdapter) and adapter.tracker is tracker
assert install(app) is adapter
work.delay(7)  # eager: recorded and run
expected = State.SUCCEEDED
""",
    "dramatiq": """
import dramatiq
from dramatiq.brokers.stub import StubBroker
from taskstatus.queues.dramatiq import TaskstatusMiddleware, install

check_shape(install)
broker = StubBroker()

@taskstatus.track(user_arg="user_id")
@dramatiq.actor(broker=broker)
def work(user_id):
    return user_id

adapter = install(broker, tracker=tracker)
assert isinstance(adapter, TaskstatusMiddleware) and adapter.tracker is tracker
assert install(broker) is adapter
work.send(7)
expected = State.PENDING
""",
    "rq": f"""
from redis import Redis
from rq import Queue
from taskstatus.queues.rq import RQAdapter, install
from tests.queue_rq.jobs import nap

check_shape(install)
queue = Queue(f"ts-shape-{{uuid.uuid4().hex[:12]}}", connection=Redis.from_url({REDIS_URL!r}))

adapter = install(queue, tracker=tracker)
assert isinstance(adapter, RQAdapter) and adapter.tracker is tracker
assert install() is adapter
try:
    queue.enqueue(nap, 7, 0)
    expected = State.PENDING
finally:
    queue.empty()
    queue.delete()
""",
}

#: Each adapter's call forms from before the uniform shape: they still work, and warn.
OLD_FORMS = {
    "celery": """
from celery import Celery
from taskstatus.queues.celery import install

app = Celery("old", broker="memory://", set_as_current=False)
with pytest.warns(DeprecationWarning, match="tracker=tracker"):
    adapter = install(app, tracker)
assert adapter.tracker is tracker and adapter.app is app
other = Celery("other", broker="memory://", set_as_current=False)
with pytest.warns(DeprecationWarning, match="app="):
    assert install(app=other).app is other
with pytest.raises(TypeError, match="twice"):
    install(app, tracker, tracker=tracker)
""",
    "dramatiq": """
from dramatiq.brokers.stub import StubBroker
from taskstatus.queues.dramatiq import install

broker = StubBroker()
with pytest.warns(DeprecationWarning, match="tracker=tracker"):
    adapter = install(broker, tracker)
assert adapter.tracker is tracker
with pytest.warns(DeprecationWarning, match="broker="):
    assert install(broker=broker) is adapter
with pytest.raises(TypeError, match="twice"):
    install(broker, broker=broker)
""",
}


def run(code: str) -> None:
    """Run ``code`` after :data:`PRELUDE` in a fresh interpreter; it must succeed."""
    source = textwrap.dedent(PRELUDE) + "import pytest\n" + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", source],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("queue", sorted(CASES))
def test_install_returns_the_adapter_bound_to_the_tracker_given(queue):
    if queue == "rq":
        require_server("Redis", REDIS_URL)
    run(
        CASES[queue]
        + f"""
(status,) = tracker.statuses()
assert (status.queue, status.user_id, status.state) == ({queue!r}, "7", expected), status
"""
    )


@pytest.mark.parametrize("queue", sorted(OLD_FORMS))
def test_the_older_call_forms_still_work_with_a_warning(queue):
    run(OLD_FORMS[queue])


@pytest.mark.parametrize(
    ("queue", "library"),
    [("celery", "celery"), ("dramatiq", "dramatiq"), ("rq", "rq"), ("rq", "redis")],
)
def test_a_missing_queue_library_names_the_extra_to_install(queue, library):
    run(
        f"""
import sys
sys.modules[{library!r}] = None  # the import system's mark of a module that is not there
with pytest.raises(ImportError) as raised:
    import taskstatus.queues.{queue}
message = str(raised.value)
assert "pip install 'taskstatus[{queue}]'" in message, message
assert {library!r} in message, message
assert raised.value.name == {library!r}
"""
    )


def test_rq_cancels_through_the_queue_given_to_install():
    """A process that never enqueued (a web application) cancels the RQ job of a status."""
    require_server("Redis", REDIS_URL)
    run(
        f"""
from redis import Redis
from rq import Queue
from rq.job import JobStatus
from taskstatus import TaskEvent
from taskstatus.queues.rq import install
from tests.queue_rq.jobs import nap

queue = Queue(f"ts-cancel-{{uuid.uuid4().hex[:12]}}", connection=Redis.from_url({REDIS_URL!r}))
try:
    job = queue.enqueue(nap, 7, 0)  # as another process would: not recorded here
    install(queue, tracker=tracker)
    tracker.lifecycle.publish(TaskEvent(task_id=job.id, queue="rq", task_class="nap", user_id="7"))
    tracker.get_by_task_id(job.id).cancel()
    assert job.get_status(refresh=True) == JobStatus.CANCELED
finally:
    queue.empty()
    queue.delete()
"""
    )
