from taskstatus import State

from .helpers import event, publish


def test_publish_run_succeed(tracker):
    publish(tracker, "a", total_steps=4)
    live = tracker.lifecycle.start(event("a"))
    live.increment_completed_steps(2)
    tracker.lifecycle.end(live)
    s = tracker.get_by_task_id("a")
    assert s.state is State.SUCCEEDED
    assert (s.completed_steps, s.total_steps) == (4, 4)
