"""A run's hooks on a ``dramatiq`` worker: the carrier its publish filled comes back, in
every step of a pipeline too, and prerun and postrun fire in the process that ran it."""

from __future__ import annotations

import dramatiq

from tests.probes import PROBE_LOG, publishing, wait_runs
from tests.queue_dramatiq import actors


def test_the_carrier_travels_and_postrun_follows_the_outcome(make_cell, tmp_path, uid):
    cell = make_cell("redis", "sqlite")
    log = tmp_path / "probe.log"
    cell.start_worker(env={PROBE_LOG: str(log)})
    with publishing(log):  # the publish side: this process
        done = actors.count.send(uid, 1).message_id
        failed = actors.explode.send(uid).message_id
        pipe = dramatiq.pipeline([actors.count.message(uid, 1), actors.add.message(2)])
        first, second = (m.message_id for m in pipe.messages)
        pipe.run()
    wait_runs(
        log,
        {
            done: ["prerun", "succeed", "postrun"],
            failed: ["prerun", "fail", "postrun"],
            first: ["prerun", "succeed", "postrun"],
            second: ["prerun", "succeed", "postrun"],
        },
    )
