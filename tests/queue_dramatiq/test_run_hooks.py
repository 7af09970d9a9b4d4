"""A run's hooks on a ``dramatiq`` worker: the carrier its publish filled comes back, in
every step of a pipeline too, and prerun and postrun fire in the process that ran it."""

from __future__ import annotations

import dramatiq

import taskstatus
from tests.probes import PROBE_LOG, RunProbe, wait_runs
from tests.queue_dramatiq import actors


def test_the_carrier_travels_and_postrun_follows_the_outcome(make_cell, tmp_path, uid):
    cell = make_cell("redis", "sqlite")
    log = tmp_path / "probe.log"
    cell.start_worker(env={PROBE_LOG: str(log)})
    tracker = taskstatus.get_tracker()
    probe = RunProbe(log)
    tracker.register(probe)  # the publish side: this process
    try:
        done = actors.count.send(uid, 1).message_id
        failed = actors.explode.send(uid).message_id
        pipe = dramatiq.pipeline([actors.count.message(uid, 1), actors.add.message(2)])
        first, second = (m.message_id for m in pipe.messages)
        pipe.run()
    finally:
        tracker.pm.unregister(probe)
    wait_runs(
        log,
        {
            done: ["prerun", "succeed", "postrun"],
            failed: ["prerun", "fail", "postrun"],
            first: ["prerun", "succeed", "postrun"],
            second: ["prerun", "succeed", "postrun"],
        },
    )
