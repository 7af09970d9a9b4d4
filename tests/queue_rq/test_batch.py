"""Enqueuing many RQ jobs with one write: ``enqueue_many`` (also a group's) and ``enqueue()``
inside ``taskstatus.batch()`` record every status, in one multi-row INSERT, before the Redis
writes that let a worker take the first job; a store that refuses the records saves no job."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from rq import Queue
from rq.group import Group
from rq.job import Job

import taskstatus
from taskstatus import State, StoreError
from tests.helpers import sql_statements
from tests.queue_rq import jobs
from tests.queue_rq.conftest import Cell

pytestmark = pytest.mark.timeout(180)

#: Jobs per publish on the real workers.
MEMBERS = 8


def seen(status: taskstatus.TaskStatus) -> int:
    """How many statuses of its owner the census that ``status`` tracks found as it ran."""
    (text,) = [a.text for a in status.artifacts if a.name == "seen"]
    assert text is not None
    return int(text)


def data(queue: Queue, uid: int, n: int, **options: object) -> list[object]:
    return [queue.prepare_data(jobs.census, (uid,), **options) for _ in range(n)]  # type: ignore[arg-type]


def enqueue_many(queue: Queue, uid: int, n: int) -> list[Job]:
    return queue.enqueue_many(data(queue, uid, n))


def group_enqueue_many(queue: Queue, uid: int, n: int) -> list[Job]:
    return Group.create(connection=queue.connection).enqueue_many(queue, data(queue, uid, n))


def enqueue_loop(queue: Queue, uid: int, n: int) -> list[Job]:
    before = (taskstatus.get_tracker().count(user_id=uid), queue.count)
    with taskstatus.batch():
        enqueued = [queue.enqueue(jobs.census, uid) for _ in range(n)]
        # Collected, not written; held, not saved.
        assert (taskstatus.get_tracker().count(user_id=uid), queue.count) == before
    return enqueued


PUBLISHERS = [enqueue_many, group_enqueue_many, enqueue_loop]
PUBLISHER_IDS = ["enqueue_many", "group", "batch-of-enqueues"]


@pytest.mark.parametrize("publish", PUBLISHERS, ids=PUBLISHER_IDS)
def test_every_job_is_recorded_before_the_first_runs(
    rq_cell: Cell, uid: int, publish: Callable[[Queue, int, int], list[Job]]
):
    enqueued = publish(rq_cell.queue, uid, MEMBERS)
    assert len(enqueued) == MEMBERS
    rq_cell.work()
    statuses = [taskstatus.get_by_task_id(job.id) for job in enqueued]
    assert {s.state for s in statuses} == {State.SUCCEEDED}
    # The first job to run found every job of its publish recorded already.
    assert [seen(s) for s in statuses] == [MEMBERS] * MEMBERS


def test_a_container_counts_the_jobs_of_enqueue_many(rq_cell: Cell, uid: int):
    queue = rq_cell.queue
    with taskstatus.group("Import", user_id=uid):
        queue.enqueue_many(data(queue, uid, MEMBERS))
    with taskstatus.group("Failing import", user_id=uid):
        queue.enqueue_many(
            [*data(queue, uid, MEMBERS - 1), queue.prepare_data(jobs.census, (uid, True))]  # type: ignore[arg-type]
        )
    rq_cell.work()
    failing, fine = sorted(taskstatus.statuses(user_id=uid, parent=None), key=lambda s: s.name)
    assert (failing.name, failing.state) == ("Failing import", State.FAILED)
    assert (fine.name, fine.state) == ("Import", State.SUCCEEDED)
    assert len(fine.children()) == len(failing.children()) == MEMBERS
    assert (fine.completed_steps, fine.total_steps) == (MEMBERS, MEMBERS)


def test_dependencies_in_enqueue_many_are_recorded_before_they_are_saved(rq_cell: Cell, uid: int):
    queue = rq_cell.queue
    first = queue.enqueue(jobs.census, uid)
    enqueued = queue.enqueue_many(data(queue, uid, MEMBERS - 1, depends_on=first))
    rq_cell.work()
    statuses = [taskstatus.get_by_task_id(job.id) for job in [first, *enqueued]]
    assert {s.state for s in statuses} == {State.SUCCEEDED}
    assert [seen(s) for s in statuses[1:]] == [MEMBERS] * (MEMBERS - 1)


# -- a store that refuses the records ------------------------------------------------------------
@pytest.mark.parametrize("rq_cell", ["postgresql"], indirect=True)
@pytest.mark.parametrize("publish", PUBLISHERS, ids=PUBLISHER_IDS)
def test_a_store_that_refuses_the_records_saves_no_job(
    rq_cell: Cell, uid: int, publish: Callable[[Queue, int, int], list[Job]]
):
    engine = taskstatus.get_tracker().store.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(
            sa.text("ALTER TABLE taskstatus_status ADD CONSTRAINT refuse CHECK (false) NOT VALID")
        )
    queue = rq_cell.queue
    made: list[str] = []
    create_job = Queue.create_job

    def noting(self: Queue, *args: object, **kwargs: object) -> Job:
        job = create_job(self, *args, **kwargs)
        made.append(job.id)
        return job

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Queue, "create_job", noting)
        with pytest.raises(StoreError, match=r"cannot record \d+ tasks"):
            publish(queue, uid, MEMBERS)
    assert len(made) == MEMBERS
    assert queue.count == 0
    assert [Job.exists(job_id, connection=queue.connection) for job_id in made] == [False] * MEMBERS
    assert taskstatus.statuses(user_id=uid, limit=None) == []


# -- statements ---------------------------------------------------------------------------------


@pytest.mark.parametrize("publish", PUBLISHERS, ids=PUBLISHER_IDS)
def test_many_jobs_cost_one_chunked_insert_and_no_select_each(
    rq_cell: Cell, uid: int, publish: Callable[[Queue, int, int], list[Job]]
):
    engine = taskstatus.get_tracker().store.engine  # type: ignore[attr-defined]
    queue = rq_cell.queue
    publish(queue, uid, 2)  # the store's first statements (schema checks) come before
    with sql_statements(engine) as few:
        publish(queue, uid, 10)
    with sql_statements(engine) as many:
        publish(queue, uid, 1200)
    assert many["insert"] == [500, 500, 200]
    assert len(many["select"]) == len(few["select"])  # none per job
    assert queue.count == 2 + 10 + 1200
