"""``task_always_eager``: tasks run in the calling process and are tracked all the same."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import chain

import taskstatus
from taskstatus import State
from tests.queue_celery import app as tasks

from .conftest import error_texts, only_root


@pytest.fixture(params=["sqlite", "postgresql"])
def eager(
    request: pytest.FixtureRequest, make_url: Callable[[str], str], tmp_path: Path
) -> Iterator[None]:
    """Eager mode on a private store of each kind."""
    tracker = taskstatus.configure(
        url=make_url(request.param), artifact_storage=str(tmp_path / "artifacts")
    )
    tasks.app.conf.task_always_eager = True
    try:
        yield
    finally:
        tasks.app.conf.task_always_eager = False
        tasks.app.conf.task_eager_propagates = False
        tracker.close()


def test_success(eager: None, uid: int) -> None:
    result = tasks.count.delay(uid, 3)
    assert result.get() == 3
    status = taskstatus.get_by_task_id(result.id)
    assert (status.state, status.name, status.user_id) == (State.SUCCEEDED, "Count to 3", str(uid))
    assert (status.completed_steps, status.total_steps, status.attempts) == (3, 3, 1)
    assert status.started_at is not None
    assert status.finished_at is not None
    assert status.queue == "celery"


def test_failure(eager: None, uid: int) -> None:
    result = tasks.explode.delay(uid, "bad header")
    assert result.failed()
    status = taskstatus.get_by_task_id(result.id)
    assert status.state is State.FAILED
    assert error_texts(status) == ["ValueError: bad header"]
    assert status.traceback is not None
    assert "ValueError: bad header" in status.traceback


def test_failure_propagated_to_the_caller(eager: None, uid: int) -> None:
    tasks.app.conf.task_eager_propagates = True
    with pytest.raises(ValueError, match="bad header"):
        tasks.explode.delay(uid, "bad header")
    status = only_root(uid)
    assert status.state is State.FAILED
    assert error_texts(status) == ["ValueError: bad header"]


def test_retry(eager: None, uid: int) -> None:
    result = tasks.flaky.delay(uid, fail_times=2)
    assert result.get() == 2
    status = taskstatus.get_by_task_id(result.id)
    assert (status.state, status.attempts) == (State.SUCCEEDED, 3)


def test_untracked_task_is_untouched(eager: None) -> None:
    assert tasks.untracked.delay(4).get() == 8
    assert taskstatus.statuses(limit=None) == []


# -- eager runs are recorded as if they had been published ------------------------------------
def test_missing_owner_raises_at_the_call(eager: None) -> None:
    with pytest.raises(TypeError, match="user_id"):
        tasks.add.delay(1, 2)


def test_task_inside_taskstatus_group_is_its_child(eager: None, uid: int) -> None:
    with taskstatus.group("Nightly", user_id=uid) as container:
        assert tasks.add.delay(1, 2, user_id=uid).get() == 3
    root = only_root(uid)
    assert root.uuid == container.uuid
    assert [c.task_class for c in root.children()] == ["tests.queue_celery.app.add"]
    assert root.state is State.SUCCEEDED


def test_missing_owner_raises_from_apply(eager: None) -> None:
    with pytest.raises(TypeError, match="user_id"):
        tasks.add.apply((1, 2))
    assert taskstatus.statuses(limit=None) == []


def test_chain_step_takes_its_owner_from_the_chain(eager: None, uid: int) -> None:
    result = chain(tasks.add.s(1, 2, user_id=uid), tasks.add.s(3)).apply_async()
    assert result.get() == 6
    root = only_root(uid)
    assert (root.task_class, root.state) == ("celery.chain", State.SUCCEEDED)
    steps = root.children()
    assert [(s.state, s.user_id) for s in steps] == [(State.SUCCEEDED, str(uid))] * 2
    assert {s.task_id for s in steps} == {result.id, result.parent.id}


def test_failed_chain_step_cancels_the_rest(eager: None, uid: int) -> None:
    canvas = chain(tasks.add.s(1, 2, user_id=uid), tasks.explode.si(uid, "no"), tasks.add.s(3))
    with pytest.raises(ValueError, match="no"):  # eager Celery raises when the next step reads it
        canvas.apply_async()
    root = only_root(uid)
    assert (root.task_class, root.state) == ("celery.chain", State.FAILED)
    by_class = [(s.task_class.rsplit(".", 1)[-1], s.state) for s in root.children()]
    assert sorted(by_class) == [
        ("add", State.CANCELED),
        ("add", State.SUCCEEDED),
        ("explode", State.FAILED),
    ]


def test_calling_apply_twice_records_two_runs(eager: None, uid: int) -> None:
    assert tasks.add.apply((1, 2), {"user_id": uid}).get() == 3
    assert tasks.add.apply((3, 4), {"user_id": uid}).get() == 7
    assert [s.state for s in taskstatus.statuses(user_id=uid)] == [State.SUCCEEDED] * 2


def test_group_is_a_container(eager: None, uid: int) -> None:
    from celery import group

    assert group(tasks.add.s(i, i, user_id=uid) for i in range(3)).apply_async().get() == [0, 2, 4]
    root = only_root(uid)
    assert (root.task_class, root.state) == ("celery.group", State.SUCCEEDED)
    assert [s.state for s in root.children()] == [State.SUCCEEDED] * 3


def test_chord_tasks_are_recorded(eager: None, uid: int) -> None:
    from celery import chord

    result = chord(
        [tasks.add.s(i, i, user_id=uid) for i in range(2)], tasks.total.s(user_id=uid)
    ).apply_async()
    assert result.get() == 2
    assert {s.state for s in taskstatus.statuses(user_id=uid, limit=None)} == {State.SUCCEEDED}


def test_only_the_attempt_sent_again_for_the_store_goes_unrecorded():
    """The mark of a message sent again while the store was down stays in its headers; a
    retry the task asks for later is a new attempt, recorded as such."""
    from taskstatus.queues.celery.tasks import DEFERRED_HEADER, deferred_again

    mark = {DEFERRED_HEADER: {"retries": 1, "deferrals": 2}}
    assert deferred_again({"retries": 1, **mark})
    assert not deferred_again({"retries": 2, **mark})
    assert not deferred_again({"retries": 0})


def test_tasks_in_a_batch_are_recorded_before_they_run_here(eager: None, uid: int) -> None:
    from celery import group

    with taskstatus.batch():
        assert tasks.count.delay(uid, 2).get() == 2
        assert group(tasks.add.s(i, i, user_id=uid) for i in range(3)).apply_async().get() == [
            0,
            2,
            4,
        ]
    statuses = taskstatus.statuses(user_id=uid, limit=None)
    assert [s.state for s in statuses] == [State.SUCCEEDED] * 5


def test_chunks_are_one_tracked_task_each(eager: None, uid: int) -> None:
    result = tasks.count.chunks([(uid, 2), (uid, 3), (uid, 4)], 2).apply_async()
    assert result.get() == [[2, 3], [4]]
    root = only_root(uid)
    chunks = root.children()
    assert sorted((c.name, c.completed_steps, c.total_steps, c.state) for c in chunks) == [
        ("Count to 2 (and 1 more)", 5, 5, State.SUCCEEDED),
        ("Count to 4", 4, 4, State.SUCCEEDED),
    ]


def test_a_chunk_item_without_its_owner_sends_nothing(eager: None, uid: int) -> None:
    with pytest.raises(TypeError, match="user_id"):
        tasks.add.chunks([(1, 1, uid), (2, 2)], 1).apply_async()
    assert taskstatus.statuses(limit=None) == []


def test_a_tracked_task_called_as_a_function_runs_untracked(eager: None, uid: int) -> None:
    sent = tasks.add.delay(1, 2, user_id=uid)  # its run is instrumented by now
    assert tasks.add(3, 4, user_id=uid) == 7
    assert [s.task_id for s in taskstatus.statuses(limit=None)] == [sent.id]
