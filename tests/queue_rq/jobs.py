"""Functions the RQ tests enqueue; a real ``rq worker`` imports them from here (a forking
worker before it forks the work horse of the first job, so a plugin installed here, as
TS_TEST_OTEL_SPANS does (see tests/tracing.py), sees the whole run)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import taskstatus
import taskstatus.plugins
from tests.probes import probe_from_env

for _probe in probe_from_env():  # in a worker whose test asked for it
    taskstatus.plugins.register_default(_probe)

if os.environ.get("TS_TEST_OTEL_SPANS"):
    from tests.tracing import install_from_env

    install_from_env()


@taskstatus.track(name="Count to {n}", total_steps=lambda a: a["n"])
def count(user_id, n, delay=0.0):
    status = taskstatus.current()
    for _ in range(n):
        time.sleep(delay)
        status.increment_completed_steps()
    return n


@taskstatus.track()
def add(x, y, user_id=None):
    return x + y


@taskstatus.track()
def explode(user_id, message="the file has no header"):
    raise ValueError(message)


@taskstatus.track()
def flaky(user_id, marker):
    """Fails on its first run (it leaves ``marker``), succeeds on the next."""
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise RuntimeError("first run fails")
    return "second run"


@taskstatus.track(total_steps=3)
def stages(user_id):
    status = taskstatus.current()
    status.set_state("Sending emails")
    status.increment_completed_steps()
    status.add_artifact(name="Report", file=b"a,b\n1,2\n", filename="report.csv")
    status.add_artifact(name="Link", url="https://example.com/r/1")
    status.add_artifact(name="Summary", text="2 rows")
    status.increment_completed_steps(2)


@taskstatus.track()
def staged(user_id):
    """Shows the stage "Sending emails", written at once, in a span of its own (under the
    run's when traced)."""
    from opentelemetry import trace

    status = taskstatus.current()
    with trace.get_tracer("tests").start_as_current_span("sending emails"):
        status.set_state("Sending emails")
        status.check_canceled()
    return "done"


@taskstatus.track(total_steps=1000)
def long_running(user_id, marker, seconds=20.0):
    """Reports progress until it is canceled; leaves ``marker`` once it runs."""
    Path(marker).write_text("running")
    status = taskstatus.current()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)
        status.increment_completed_steps()
    return "finished"


@taskstatus.track()
def gated(user_id, gate):
    """Waits, reporting nothing, until the file ``gate`` exists."""
    deadline = time.monotonic() + 60
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "opened"


@taskstatus.track()
def quiet_stage(user_id, marker, stage, seconds=5.0):
    """Leaves ``marker``, shows ``stage``, then works ``seconds`` reporting nothing."""
    Path(marker).write_text("running")
    taskstatus.current().set_state(stage)
    time.sleep(seconds)


@taskstatus.track()
def nap(user_id, seconds):
    time.sleep(seconds)


@taskstatus.track()
def too_slow(user_id):
    time.sleep(10)


def untracked(x):
    return x * 2


def wait_for(gate):
    """Untracked: keeps its worker busy until the file ``gate`` exists."""
    deadline = time.monotonic() + 60
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.02)


@taskstatus.track(name="{name}")
def named(user_id, name):
    """Does nothing under a name the caller chooses (one that tries to be HTML)."""


@taskstatus.track()
def counted(user_id, folder, seconds=0.0):
    """Leaves one file per run in ``folder`` (runs are counted), then works ``seconds``."""
    (Path(folder) / uuid.uuid4().hex).touch()
    time.sleep(seconds)
    return "counted"


@taskstatus.track()
def census(user_id, fail=False):
    """Notes how many statuses its owner has as it runs (every one published with it, if
    they were all recorded before the first job was saved); fails when asked."""
    seen = taskstatus.get_tracker().count(user_id=user_id)
    taskstatus.current().add_artifact(name="seen", text=str(seen))
    if fail:
        raise ValueError("census refused")
