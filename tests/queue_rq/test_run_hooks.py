"""A run's hooks on an ``rq worker``: the carrier its publish filled comes back; prerun and
postrun fire in the process that ran the job, the work horse of a forking worker, whose
worker then reports the success."""

from __future__ import annotations

import pytest

from tests.probes import PROBE_LOG, publishing, wait_runs
from tests.queue_rq import jobs


@pytest.mark.parametrize("rq_cell", ["sqlite"], indirect=True)
@pytest.mark.parametrize("worker", ["fork", "simple"])
def test_the_carrier_travels_and_postrun_pairs_with_prerun(rq_cell, tmp_path, uid, worker):
    log = tmp_path / "probe.log"
    with publishing(log):  # the publish side: this process
        done = rq_cell.queue.enqueue(jobs.count, uid, 1).id
        failed = rq_cell.queue.enqueue(jobs.explode, uid).id
    rq_cell.work(worker, env={PROBE_LOG: str(log)})
    handed_back = worker == "fork"
    seen = wait_runs(
        log,
        {
            done: ["prerun", "postrun", "succeed"]
            if handed_back
            else ["prerun", "succeed", "postrun"],
            failed: ["prerun", "fail", "postrun"],
        },
    )
    ran = {hook: pid for hook, _, pid in seen[done]}
    assert (ran["succeed"] != ran["prerun"]) is handed_back
