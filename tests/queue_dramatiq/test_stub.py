"""The Dramatiq adapter on a StubBroker with an in-process worker: fast checks of every path."""

from __future__ import annotations

from pathlib import Path

import dramatiq
import pytest

import taskstatus
from taskstatus import State
from taskstatus.queues.dramatiq import install, named
from tests.queue_dramatiq import actors
from tests.waiting import error_texts, only_root, poll

pytestmark = pytest.mark.timeout(90)


def test_progress_and_success(stub, uid):
    message = actors.count.send(uid, 3)
    stub.join()
    status = taskstatus.get_by_task_id(message.message_id)
    assert (status.state, status.name, status.user_id) == (State.SUCCEEDED, "Count to 3", str(uid))
    assert (status.completed_steps, status.total_steps, status.attempts) == (3, 3, 1)
    assert status.queue == "dramatiq"
    assert status.task_class == "tests.queue_dramatiq.actors.count"


def test_failure_keeps_an_error_and_the_traceback(stub, uid):
    message = actors.explode.send(uid, "bad header")
    stub.join()
    status = taskstatus.get_by_task_id(message.message_id)
    assert status.state is State.FAILED
    assert error_texts(status) == ["ValueError: bad header"]
    assert "ValueError: bad header" in (status.traceback or "")


def test_retry_counts_an_attempt(stub, uid, tmp_path: Path):
    message = actors.flaky.send(uid, str(tmp_path / "marker"))
    stub.join()
    status = taskstatus.get_by_task_id(message.message_id)
    assert (status.state, status.attempts) == (State.SUCCEEDED, 2)
    assert error_texts(status) == []


def test_retries_exhausted_fail_once(stub, uid):
    message = actors.add.send(1, "x", user_id=uid)  # TypeError every run; one retry
    stub.join()
    status = taskstatus.get_by_task_id(message.message_id)
    assert (status.state, status.attempts) == (State.FAILED, 2)
    assert len(error_texts(status)) == 1


def test_custom_stage_and_artifacts(stub, uid):
    message = actors.stages.send(uid)
    stub.join()
    status = taskstatus.get_by_task_id(message.message_id)
    assert status.state is State.SUCCEEDED
    by_name = {a.name: a for a in status.artifacts}
    assert by_name["Report"].open().read() == b"a,b\n1,2\n"
    assert by_name["Link"].url == "https://example.com/r/1"
    assert by_name["Summary"].text == "2 rows"


def test_missing_owner_raises_and_sends_nothing(stub):
    with pytest.raises(TypeError, match="user_id"):
        actors.add.send(1, 2)
    assert stub.broker.queues[actors.QUEUE].qsize() == 0
    assert taskstatus.statuses(limit=None) == []


def test_untracked_actor_is_untouched(stub):
    actors.untracked.send(4)
    stub.join()
    assert taskstatus.statuses(limit=None) == []


def test_cancel_pending_never_runs_the_body(stub, uid, tmp_path: Path):
    stub.worker.pause()
    marker = tmp_path / "ran"
    message = actors.long_running.send(uid, str(marker), seconds=0.1)
    taskstatus.get_by_task_id(message.message_id).cancel()
    stub.worker.resume()
    stub.join()
    assert not marker.exists()
    status = taskstatus.get_by_task_id(message.message_id)
    assert status.state is State.CANCELED and status.started_at is None
    assert error_texts(status) == []


def test_cancel_running_stops_at_the_next_progress_call(stub, uid, tmp_path: Path):

    marker = tmp_path / "running"
    message = actors.long_running.send(uid, str(marker), seconds=20)
    poll(marker.exists, bool, "the task to start")
    taskstatus.get_by_task_id(message.message_id).cancel()
    stub.join()  # long before 20 s
    status = taskstatus.get_by_task_id(message.message_id)
    assert status.state is State.CANCELED
    assert status.completed_steps < 1000
    assert error_texts(status) == []
    assert stub.broker.dead_letters == []  # canceled: not failed, not retried


def test_pipeline_is_a_container(stub, uid):
    named(
        dramatiq.pipeline([actors.add.message(1, 2, user_id=uid), actors.add.message(3)]), "Sum"
    ).run()
    stub.join()
    root = only_root(uid)
    assert (root.task_class, root.name, root.state) == ("dramatiq.pipeline", "Sum", State.SUCCEEDED)
    assert root.sequential  # as the adapter declared it
    steps = root.children()
    assert [(s.state, s.user_id) for s in steps] == [(State.SUCCEEDED, str(uid))] * 2


def test_failed_pipeline_step_cancels_the_rest(stub, uid):
    dramatiq.pipeline(
        [
            actors.add.message(1, 2, user_id=uid),
            actors.explode.message_with_options(args=(uid, "no"), pipe_ignore=True),
            actors.add.message(3),
        ]
    ).run()
    stub.join()
    root = only_root(uid)
    assert (root.task_class, root.state) == ("dramatiq.pipeline", State.FAILED)
    assert sorted((s.task_class.rsplit(".", 1)[-1], s.state) for s in root.children()) == [
        ("add", State.CANCELED),
        ("add", State.SUCCEEDED),
        ("explode", State.FAILED),
    ]
    assert error_texts(root) == ["ValueError: no"]


def test_group_is_a_container(stub, uid):
    named(dramatiq.group(actors.add.message(i, i, user_id=uid) for i in range(3)), "Adds").run()
    stub.join()
    root = only_root(uid)
    assert (root.task_class, root.name, root.state) == ("dramatiq.group", "Adds", State.SUCCEEDED)
    assert not root.sequential
    assert [s.state for s in root.children()] == [State.SUCCEEDED] * 3


def test_group_checks_every_owner_before_sending(stub, uid):
    with pytest.raises(TypeError, match="user_id"):
        dramatiq.group([actors.add.message(1, 1, user_id=uid), actors.add.message(2, 2)]).run()
    assert stub.broker.queues[actors.QUEUE].qsize() == 0
    assert taskstatus.statuses(limit=None) == []


def test_taskstatus_group(stub, uid):
    with taskstatus.group("Nightly", user_id=uid) as container:
        actors.count.send(uid, 2)
        actors.add.send(1, 2, user_id=uid)
    stub.join()
    root = only_root(uid)
    assert root.uuid == container.uuid
    assert root.state is State.SUCCEEDED
    assert len(root.children()) == 2


def test_time_limit_ends_failed(stub, uid):
    message = actors.too_slow.send_with_options(args=(uid,), time_limit=200)
    stub.join()
    status = taskstatus.get_by_task_id(message.message_id)
    assert status.state is State.FAILED
    assert error_texts(status) == ["The task took too long and was stopped."]


def test_install_twice_returns_the_same_middleware(stub):
    assert install(stub.broker) is install(stub.broker)
    kinds = [type(m).__name__ for m in stub.broker.middleware]
    assert kinds.count("TaskstatusMiddleware") == 1
    assert kinds.index("TaskstatusMiddleware") == kinds.index("Retries") - 1


def test_a_start_the_store_cannot_record_runs_again_later(stub, uid, monkeypatch):
    from taskstatus import StoreUnavailable
    from taskstatus.lifecycle import Lifecycle

    real_start = Lifecycle.start
    calls: list[str] = []

    def start_once_unavailable(self, event):
        calls.append(event.task_id)
        if len(calls) == 1:
            raise StoreUnavailable("database error: server closed the connection")
        return real_start(self, event)

    monkeypatch.setattr(Lifecycle, "start", start_once_unavailable)
    message = actors.count.send(uid, 2)
    stub.join()
    status = taskstatus.get_by_task_id(message.message_id)
    assert calls == [message.message_id] * 2  # not run untracked: retried
    assert (status.state, status.completed_steps) == (State.SUCCEEDED, 2)


def test_a_message_option_names_the_status(stub, uid):
    message = actors.count.send_with_options(args=(uid, 1), taskstatus_name="Warm-up count")
    stub.join()
    assert taskstatus.get_by_task_id(message.message_id).name == "Warm-up count"


def test_a_message_is_acknowledged_only_once_its_outcome_is_stored(stub, uid):
    store = taskstatus.get_tracker().store
    at_ack: list[State] = []

    class Witness(dramatiq.Middleware):
        def after_ack(self, broker, message):
            at_ack.append(store.get_by_task_id(message.message_id).state)

    stub.broker.add_middleware(Witness())
    for i in range(20):
        actors.add.send(i, i, user_id=uid)
    stub.join()
    poll(lambda: len(at_ack), lambda n: n == 20, "every acknowledgement")  # after_ack: a bit later
    assert at_ack == [State.SUCCEEDED] * 20


def test_worker_shutdown_ends_an_interrupted_task(stub, uid, tmp_path: Path):
    marker = tmp_path / "running"
    message = actors.interruptible.send(uid, str(marker))
    poll(marker.exists, bool, "the task to start")
    stub.worker.stop()  # Dramatiq raises Shutdown into the actor (notify_shutdown=True)
    status = poll(
        lambda: taskstatus.get_by_task_id(message.message_id),
        lambda s: s.is_terminal,
        "the interrupted task to end",
    )
    assert status.state is State.FAILED
    assert error_texts(status) == ["The worker shut down while the task was running."]


def test_a_pipeline_step_is_stored_before_the_next_step_is_sent(tmp_path, uid):
    """The next step may run in another worker process and fail there: the step before must
    be stored Succeeded by then, or that failure would cancel it as a step still waiting."""
    from dramatiq import Message

    from taskstatus.queues.dramatiq import PARENT_OPTION
    from tests.conftest import private_store
    from tests.helpers import event, publish

    with private_store("sqlite", tmp_path) as url:
        tracker = taskstatus.configure(url=url, write_interval=5, artifact_storage=None)
        try:
            broker = actors.make_broker(None)
            middleware = install(broker)
            tracker.lifecycle.batch_writes()  # as in a worker: the success waits in a batch
            publish(tracker, "pipe", container="dramatiq.pipeline", sequential=True)
            publish(tracker, "first", parent="pipe")
            tracker.lifecycle.end(tracker.lifecycle.start(event("first")))
            assert tracker.store.get_by_task_id("first").state is State.PENDING  # queued
            step = Message(
                queue_name=actors.QUEUE,
                actor_name="add",
                args=(3,),
                kwargs={},
                options={PARENT_OPTION: "dramatiq.pipeline:pipe"},
            )
            middleware.before_enqueue(broker, step, 0)
            assert tracker.store.get_by_task_id("first").state is State.SUCCEEDED
        finally:
            tracker.close()
