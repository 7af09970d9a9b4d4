"""A run's hooks on a prefork worker: the carrier its publish filled comes back, in every
step of a chain too, and prerun and postrun fire in the pool process that ran it."""

from __future__ import annotations

from celery import chain

from taskstatus import State
from tests.probes import PROBE_LOG, publishing, wait_runs
from tests.queue_celery.app import count, explode
from tests.waiting import wait_state


def test_the_carrier_travels_and_postrun_follows_the_outcome(make_cell, tmp_path, uid):
    cell = make_cell("redis", "sqlite")
    log = tmp_path / "probe.log"
    cell.start_worker(env={PROBE_LOG: str(log)})
    with publishing(log):  # the publish side: this process
        done = count.delay(uid, 1).id
        failed = explode.delay(uid).id
        steps = chain(count.si(uid, 1), count.si(uid, 2)).apply_async()
        first, second = steps.parent.id, steps.id
    wait_state(failed, State.FAILED)
    seen = wait_runs(
        log,
        {
            done: ["prerun", "succeed", "postrun"],
            failed: ["prerun", "fail", "postrun"],
            first: ["prerun", "succeed", "postrun"],
            second: ["prerun", "succeed", "postrun"],
        },
    )
    workers = {pid for hooks in seen.values() for _, _, pid in hooks}
    assert cell.workers[0].proc.pid not in workers  # the pool's processes ran them
