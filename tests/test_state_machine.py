"""Every transition of the state machine, through the lifecycle API, on every store."""

from __future__ import annotations

import pytest

import taskstatus
from taskstatus import State, TaskCanceledException

from .helpers import event, publish, state

pytestmark = pytest.mark.timeout(60)


class Stopped:
    """Plugin recording every taskstatus_stopped call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    @taskstatus.hookimpl
    def taskstatus_stopped(self, status: taskstatus.TaskStatus) -> None:
        self.calls.append((status.task_id, status.state.value))


@pytest.fixture
def stopped(tracker):
    plugin = Stopped()
    tracker.register(plugin)
    return plugin


def test_publish_creates_pending_with_fields(tracker):
    s = publish(tracker, "t1", user_id="7", total_steps=5, name="Export 3")
    assert s.state is State.PENDING
    assert s.state_text == "Pending"
    assert (s.task_id, s.queue, s.task_class, s.name, s.user_id) == (
        "t1",
        "test",
        "tests.task",
        "Export 3",
        "7",
    )
    assert (s.completed_steps, s.total_steps, s.attempts) == (0, 5, 1)
    assert s.created is not None and s.created.tzinfo is not None
    assert s.started_at is None and s.finished_at is None
    assert not s.is_container and s.parent_uuid is None


def test_republish_keeps_first_record(tracker):
    first = publish(tracker, "t1", name="first")
    again = publish(tracker, "t1", name="second")
    assert again.uuid == first.uuid and again.name == "first"
    assert tracker.count() == 1


def test_prerun_starts(tracker):
    publish(tracker, "t1")
    tracker.lifecycle.start(event("t1"))
    s = tracker.get_by_task_id("t1")
    assert s.state is State.IN_PROGRESS and s.started_at is not None and s.attempts == 1


def test_prerun_without_publish_records_the_task(tracker):
    # Eager mode and producers without install() fire no publish.
    tracker.lifecycle.start(event("eager", name="Eager task", user_id="3", total_steps=2))
    s = tracker.get_by_task_id("eager")
    assert s.state is State.IN_PROGRESS and s.user_id == "3" and s.total_steps == 2


def test_success_completes_steps(tracker, stopped):
    publish(tracker, "t1", total_steps=10)
    live = tracker.lifecycle.start(event("t1"))
    live.increment_completed_steps(3)
    tracker.lifecycle.end(live)
    s = tracker.get_by_task_id("t1")
    assert s.state is State.SUCCEEDED
    assert s.completed_steps == s.total_steps == 10
    assert s.finished_at is not None and s.finished_at >= s.started_at
    assert stopped.calls == [("t1", "Succeeded")]


def test_failure_records_error_artifact_and_traceback(tracker, stopped):
    publish(tracker, "t1")
    live = tracker.lifecycle.start(event("t1"))
    try:
        raise ValueError("the CSV has no header")
    except ValueError as exc:
        tracker.lifecycle.end(live, exception=exc)
    s = tracker.get_by_task_id("t1")
    assert s.state is State.FAILED
    [error] = s.artifacts
    assert error.name == "Error" and error.text == "ValueError: the CSV has no header"
    assert "Traceback" in (s.traceback or "") and "the CSV has no header" in s.traceback
    assert stopped.calls == [("t1", "Failed")]


def test_failure_message_given_by_adapter(tracker):
    publish(tracker, "t1")
    tracker.lifecycle.end(
        tracker.lifecycle.start(event("t1")), exception=RuntimeError("x"), message="Import failed"
    )
    assert tracker.get_by_task_id("t1").artifacts[0].text == "Import failed"


def test_retry_counts_attempts_and_restarts_steps(tracker):
    publish(tracker, "t1", total_steps=10)
    live = tracker.lifecycle.start(event("t1"))
    live.increment_completed_steps(4)
    tracker.lifecycle.end(live, exception=OSError("timeout"), retrying=True)
    s = tracker.get_by_task_id("t1")
    assert s.state is State.RETRYING and s.attempts == 2 and s.completed_steps == 4
    # Duplicate retry event for the same failure does not count twice.
    tracker.hook.taskstatus_retry(event=event("t1"))
    assert tracker.get_by_task_id("t1").attempts == 2
    live = tracker.lifecycle.start(event("t1"))
    s = tracker.get_by_task_id("t1")
    assert s.state is State.IN_PROGRESS and s.completed_steps == 0 and s.attempts == 2
    live.increment_completed_steps(4)
    live.flush()
    assert tracker.get_by_task_id("t1").completed_steps == 4
    tracker.lifecycle.end(live)
    s = tracker.get_by_task_id("t1")
    assert s.state is State.SUCCEEDED and s.completed_steps == 10 and s.attempts == 2


def test_redelivery_counts_a_new_attempt_without_double_steps(tracker):
    publish(tracker, "t1", total_steps=10)
    live = tracker.lifecycle.start(event("t1"))
    live.increment_completed_steps(7)
    live.flush()
    # The worker dies; the queue redelivers the same message: prerun while In Progress.
    live2 = tracker.lifecycle.start(event("t1"))
    s = tracker.get_by_task_id("t1")
    assert s.attempts == 2 and s.completed_steps == 0 and s.state is State.IN_PROGRESS
    live2.increment_completed_steps(10)
    tracker.lifecycle.end(live2)
    s = tracker.get_by_task_id("t1")
    assert s.state is State.SUCCEEDED and s.completed_steps == 10


def test_increment_total_steps_restarts_from_planned_on_retry(tracker):
    publish(tracker, "t1", total_steps=2)
    live = tracker.lifecycle.start(event("t1"))
    live.increment_total_steps(3)
    tracker.lifecycle.end(live, exception=OSError(), retrying=True)
    assert tracker.get_by_task_id("t1").total_steps == 5
    tracker.lifecycle.start(event("t1"))
    assert tracker.get_by_task_id("t1").total_steps == 2


def test_custom_stage(tracker):
    publish(tracker, "t1")
    live = tracker.lifecycle.start(event("t1"))
    live.set_state("Sending emails")
    live.flush()
    s = tracker.get_by_task_id("t1")
    assert s.state is State.IN_PROGRESS and s.state_text == "Sending emails"
    assert tracker.statuses(state=State.IN_PROGRESS)[0].task_id == "t1"
    tracker.lifecycle.end(live)
    s = tracker.get_by_task_id("t1")
    assert s.state_text == "Succeeded" and s.stage is None


def test_cancel_pending_skips_the_task(tracker, stopped):
    publish(tracker, "t1")
    s = tracker.get_by_task_id("t1")
    s.cancel()
    assert s.state is State.CANCELED and s.finished_at is not None
    with pytest.raises(TaskCanceledException):
        tracker.lifecycle.start(event("t1"))
    assert state(tracker, "t1") == "Canceled"
    assert stopped.calls == [("t1", "Canceled")]


def test_cancel_running_is_noticed_at_next_progress_write(tracker):
    publish(tracker, "t1", total_steps=100)
    live = tracker.lifecycle.start(event("t1"))
    taskstatus_cancel = tracker.get_by_task_id("t1").cancel
    taskstatus_cancel()
    with pytest.raises(TaskCanceledException):
        live.increment_completed_steps()
        live.check_canceled()
    # Every later call raises too.
    with pytest.raises(TaskCanceledException):
        live.check_canceled()
    with pytest.raises(TaskCanceledException) as info:
        live.set_state("still going?")
        live.check_canceled()
    tracker.lifecycle.end(live, exception=info.value)
    s = tracker.get_by_task_id("t1")
    assert s.state is State.CANCELED
    assert [a.name for a in s.artifacts] == []


def test_cancel_noticed_by_stage_write(tracker):
    publish(tracker, "t1")
    live = tracker.lifecycle.start(event("t1"))
    tracker.cancel(tracker.get_by_task_id("t1").uuid)
    live.set_state("Stage 2")
    with pytest.raises(TaskCanceledException):
        live.flush(final=False)


def test_terminal_states_are_final(tracker, stopped):
    publish(tracker, "t1")
    tracker.lifecycle.end(tracker.lifecycle.start(event("t1")))
    s = tracker.get_by_task_id("t1")
    before = (s.state, s.finished_at, s.completed_steps, s.attempts)
    # Late and duplicate events are ignored, not errors.
    tracker.hook.taskstatus_fail(event=event("t1", message="late"))
    tracker.hook.taskstatus_retry(event=event("t1"))
    tracker.hook.taskstatus_cancel(event=event("t1"))
    tracker.hook.taskstatus_succeed(event=event("t1"))
    tracker.hook.taskstatus_prerun(event=event("t1"))
    tracker.hook.taskstatus_progress(event=event("t1", completed_delta=5, stage="x"))
    s.cancel()
    s = tracker.get_by_task_id("t1")
    assert (s.state, s.finished_at, s.completed_steps, s.attempts) == before
    assert s.artifacts == []
    assert stopped.calls == [("t1", "Succeeded")]


def test_django_user_tasks_method_names_on_a_status(tracker):
    s = publish(tracker, "t1", total_steps=3)
    s.start()
    assert s.state is State.IN_PROGRESS
    s.increment_completed_steps()
    s.increment_total_steps(2)
    assert (s.completed_steps, s.total_steps) == (1, 5)
    s.set_state("Halfway")
    assert s.state_text == "Halfway"
    s.set_name("Renamed")
    assert s.name == "Renamed"
    s.retry()
    assert s.state is State.RETRYING and s.attempts == 2
    s.start()
    s.fail("boom")
    assert s.state is State.FAILED and s.artifacts[0].text == "boom"


def test_canceled_status_raises_on_direct_increment(tracker):
    s = publish(tracker, "t1")
    s.start()
    tracker.cancel(s.uuid)
    with pytest.raises(TaskCanceledException):
        s.increment_completed_steps()


# -- containers ------------------------------------------------------------------------------
def test_group_succeeds_when_all_children_have(tracker, stopped):
    g = publish(tracker, "g", container="celery.group")
    publish(tracker, "a", parent="g", total_steps=2)
    publish(tracker, "b", parent="g", total_steps=3)
    assert tracker.get(g.uuid).total_steps == 5
    la = tracker.lifecycle.start(event("a"))
    assert state(tracker, "g") == "In Progress"
    la.increment_completed_steps(1)
    la.flush()
    g_now = tracker.get(g.uuid)
    assert (g_now.completed_steps, g_now.total_steps) == (1, 5)
    tracker.lifecycle.end(la)
    assert state(tracker, "g") == "In Progress"
    tracker.lifecycle.end(tracker.lifecycle.start(event("b")))
    g_now = tracker.get(g.uuid)
    assert g_now.state is State.SUCCEEDED and (g_now.completed_steps, g_now.total_steps) == (5, 5)
    assert [c.task_id for c in g_now.children()] == ["a", "b"]
    assert stopped.calls == [("a", "Succeeded"), ("b", "Succeeded"), ("g", "Succeeded")]


def test_child_failure_fails_group_but_siblings_run_on(tracker):
    publish(tracker, "g", container="celery.group")
    publish(tracker, "a", parent="g")
    publish(tracker, "b", parent="g")
    tracker.lifecycle.start(event("b"))
    tracker.lifecycle.end(
        tracker.lifecycle.start(event("a")), exception=KeyError("k"), message="bad row"
    )
    g = tracker.get_by_task_id("g")
    assert g.state is State.FAILED and g.artifacts[0].text == "bad row"
    assert state(tracker, "b") == "In Progress"
    tracker.lifecycle.end(tracker.lifecycle.start(event("b")))
    assert state(tracker, "b") == "Succeeded" and state(tracker, "g") == "Failed"


def test_canceled_child_lets_group_end_canceled(tracker):
    publish(tracker, "g", container="dramatiq.group")
    publish(tracker, "a", parent="g")
    publish(tracker, "b", parent="g")
    tracker.cancel(tracker.get_by_task_id("a").uuid)
    assert state(tracker, "g") == "Pending"
    tracker.lifecycle.end(tracker.lifecycle.start(event("b")))
    assert state(tracker, "g") == "Canceled"


def test_chain_failure_cancels_later_steps(tracker, stopped):
    publish(tracker, "c", container="celery.chain", sequential=True)
    for step in ("s1", "s2", "s3"):
        publish(tracker, step, parent="c")
    tracker.lifecycle.end(tracker.lifecycle.start(event("s1")))
    tracker.lifecycle.end(tracker.lifecycle.start(event("s2")), exception=ValueError("no"))
    assert [state(tracker, t) for t in ("s1", "s2", "s3", "c")] == [
        "Succeeded",
        "Failed",
        "Canceled",
        "Failed",
    ]
    assert tracker.get_by_task_id("c").artifacts[0].text == "ValueError: no"
    # The step that never runs is skipped if its message still arrives.
    with pytest.raises(TaskCanceledException):
        tracker.lifecycle.start(event("s3"))
    assert sorted(stopped.calls) == sorted(
        [("s1", "Succeeded"), ("s2", "Failed"), ("c", "Failed"), ("s3", "Canceled")]
    )


def test_chain_step_canceled_cancels_the_rest_and_the_chain(tracker):
    publish(tracker, "c", container="dramatiq.pipeline", sequential=True)
    publish(tracker, "s1", parent="c")
    publish(tracker, "s2", parent="c")
    live = tracker.lifecycle.start(event("s1"))
    tracker.cancel(tracker.get_by_task_id("s1").uuid)
    with pytest.raises(TaskCanceledException) as info:
        live.check_canceled()
    tracker.lifecycle.end(live, exception=info.value)
    assert [state(tracker, t) for t in ("s1", "s2", "c")] == ["Canceled", "Canceled", "Canceled"]


def test_cancel_container_cancels_children_recursively(tracker, stopped):
    publish(tracker, "outer", container="taskstatus.group")
    publish(tracker, "chain", parent="outer", container="celery.chain", sequential=True)
    publish(tracker, "a", parent="chain")
    publish(tracker, "b", parent="outer")
    tracker.lifecycle.end(tracker.lifecycle.start(event("b")))
    tracker.cancel(tracker.get_by_task_id("outer").uuid)
    assert [state(tracker, t) for t in ("outer", "chain", "a", "b")] == [
        "Canceled",
        "Canceled",
        "Canceled",
        "Succeeded",
    ]
    assert sorted(t for t, _ in stopped.calls) == ["a", "b", "chain", "outer"]


def test_nested_containers_aggregate_and_end(tracker):
    publish(tracker, "chord", container="celery.chord", sequential=True)
    publish(tracker, "header", parent="chord", container="celery.group")
    publish(tracker, "h1", parent="header", total_steps=2)
    publish(tracker, "h2", parent="header", total_steps=2)
    publish(tracker, "body", parent="chord", total_steps=1)
    assert tracker.get_by_task_id("chord").total_steps == 5
    for t in ("h1", "h2"):
        tracker.lifecycle.end(tracker.lifecycle.start(event(t)))
    assert state(tracker, "header") == "Succeeded"
    assert state(tracker, "chord") == "In Progress"
    tracker.lifecycle.end(tracker.lifecycle.start(event("body")))
    chord = tracker.get_by_task_id("chord")
    assert chord.state is State.SUCCEEDED and (chord.completed_steps, chord.total_steps) == (5, 5)


def test_chord_header_failure_cancels_body(tracker):
    publish(tracker, "chord", container="celery.chord", sequential=True)
    publish(tracker, "header", parent="chord", container="celery.group")
    publish(tracker, "h1", parent="header")
    publish(tracker, "body", parent="chord")
    tracker.lifecycle.end(tracker.lifecycle.start(event("h1")), exception=RuntimeError("x"))
    assert [state(tracker, t) for t in ("h1", "header", "body", "chord")] == [
        "Failed",
        "Failed",
        "Canceled",
        "Failed",
    ]


def test_stage_propagates_to_non_group_ancestors(tracker):
    publish(tracker, "g", container="celery.group")
    publish(tracker, "c", parent="g", container="celery.chain", sequential=True)
    publish(tracker, "s1", parent="c")
    live = tracker.lifecycle.start(event("s1"))
    live.set_state("Uploading")
    live.flush()
    assert tracker.get_by_task_id("c").state_text == "Uploading"
    assert tracker.get_by_task_id("g").state_text == "In Progress"


def test_set_name_renames_ancestors(tracker):
    publish(tracker, "c", container="celery.chain", sequential=True)
    publish(tracker, "s1", parent="c")
    live = tracker.lifecycle.start(event("s1"))
    live.set_name("Import of 42 rows")
    assert tracker.get_by_task_id("c").name == "Import of 42 rows"
    assert tracker.get_by_task_id("s1").name == "Import of 42 rows"


def test_retry_does_not_touch_containers(tracker):
    publish(tracker, "c", container="celery.chain", sequential=True)
    publish(tracker, "s1", parent="c")
    tracker.lifecycle.start(event("s1"))
    tracker.hook.taskstatus_retry(event=event("s1"))
    tracker.hook.taskstatus_retry(event=event("c"))
    assert state(tracker, "s1") == "Retrying" and state(tracker, "c") == "In Progress"
    assert tracker.get_by_task_id("c").attempts == 1


# -- taskstatus.group ------------------------------------------------------------------------
def test_group_context_collects_children_and_ends_after_the_block(tracker):
    with tracker.group("Nightly import", user_id=7) as g:
        publish(tracker, "a")
        tracker.lifecycle.end(tracker.lifecycle.start(event("a")))
        # A finished child does not end a group whose block is still open.
        assert tracker.get(g.uuid).state is State.IN_PROGRESS
        with tracker.group("Inner", user_id=7) as inner:
            publish(tracker, "b")
        publish(tracker, "c")
    g = tracker.get(g.uuid)
    assert (g.queue, g.task_class, g.is_container, g.user_id) == (
        "taskstatus",
        "taskstatus.group",
        True,
        "7",
    )
    assert [c.task_id for c in g.children()] == ["a", inner.task_id, "c"]
    assert tracker.get_by_task_id("b").parent_uuid == inner.uuid
    assert g.state is State.IN_PROGRESS
    tracker.lifecycle.end(tracker.lifecycle.start(event("b")))
    tracker.lifecycle.end(tracker.lifecycle.start(event("c")))
    assert tracker.get(inner.uuid).state is State.SUCCEEDED
    assert tracker.get(g.uuid).state is State.SUCCEEDED


def test_empty_group_succeeds_and_failed_block_cancels(tracker):
    with tracker.group("Nothing", user_id=1) as g:
        pass
    assert tracker.get(g.uuid).state is State.SUCCEEDED
    with pytest.raises(ZeroDivisionError), tracker.group("Broken", user_id=1) as broken:
        1 / 0  # noqa: B018
    assert tracker.get(broken.uuid).state is State.CANCELED


def test_group_needs_an_owner(tracker):
    with pytest.raises(TypeError, match="user_id"), tracker.group("x", user_id=None):
        pass
    assert tracker.count() == 0
