"""Whether a container runs its children one after another is declared by the adapter that
publishes it and stored with its status: core knows no kind of container by name."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from taskstatus import Settings, Tracker

from .helpers import event, publish, state

pytestmark = pytest.mark.timeout(60)


def publish_sequence(tracker, *, sequential: bool) -> None:
    """A container of a kind core does not know, published as a third-party adapter does,
    with three steps."""
    tracker.lifecycle.publish_container(
        "seq",
        queue="myqueue",
        kind="myqueue.sequence",
        name="Sequence",
        user_id="7",
        sequential=sequential,
    )
    for step in ("s1", "s2", "s3"):
        publish(tracker, step, parent="seq")


@pytest.mark.parametrize("sequential", [True, False])
def test_the_adapter_declares_whether_a_failed_step_cancels_the_waiting_ones(tracker, sequential):
    publish_sequence(tracker, sequential=sequential)
    assert tracker.get_by_task_id("seq").sequential is sequential
    tracker.lifecycle.end(tracker.lifecycle.start(event("s1")), exception=ValueError("no"))
    waiting = "Canceled" if sequential else "Pending"
    assert [state(tracker, t) for t in ("s1", "s2", "s3", "seq")] == [
        "Failed",
        waiting,
        waiting,
        "Failed",
    ]


@pytest.mark.parametrize("sequential", [True, False])
def test_the_adapter_declares_whether_a_steps_stage_shows_on_the_container(tracker, sequential):
    publish_sequence(tracker, sequential=sequential)
    live = tracker.lifecycle.start(event("s1"))
    live.set_state("Uploading")
    live.flush()
    expected = "Uploading" if sequential else "In Progress"
    assert tracker.get_by_task_id("seq").state_text == expected


def test_a_process_without_the_adapter_applies_its_rule(sql_url, make_tracker):
    """The web server cancels a step of a chain that a worker's adapter published: the
    stored declaration, not the code that made it, cancels the steps after it."""
    publish_sequence(make_tracker(sql_url), sequential=True)
    server = make_tracker(sql_url)
    server.cancel(server.get_by_task_id("s1").uuid)
    assert [state(server, t) for t in ("s1", "s2", "s3", "seq")] == ["Canceled"] * 4


# -- migration 0007: statuses recorded before it ---------------------------------------------
#: task_id -> (task_class, is a container, parent task_id, state)
OLD_ROWS = {
    "chain": ("celery.chain", True, None, "In Progress"),
    "chain-1": ("app.step", False, "chain", "In Progress"),
    "chain-2": ("app.step", False, "chain", "Pending"),
    "chord": ("celery.chord", True, None, "Pending"),
    "pipeline": ("dramatiq.pipeline", True, None, "Pending"),
    "group": ("celery.group", True, None, "In Progress"),
    "group-1": ("app.step", False, "group", "In Progress"),
    "group-2": ("app.step", False, "group", "Pending"),
    "dramatiq-group": ("dramatiq.group", True, None, "Pending"),
    "block": ("taskstatus.group", True, None, "Pending"),
    "task": ("app.step", False, None, "Pending"),
}


def insert_old_rows(engine: sa.Engine) -> None:
    """The statuses of OLD_ROWS, written as the schema of 0006 takes them."""
    insert = sa.text(
        "INSERT INTO taskstatus_status (uuid, task_id, queue, task_class, name, parent_uuid, "
        "is_container, sealed, state, completed_steps, total_steps, planned_steps, attempts, "
        "created, modified, changed) VALUES (:uuid, :task_id, 'celery', :task_class, "
        ":task_id, :parent, :container, :t, :state, 0, 1, 1, 1, :now, :now, :now)"
    )
    uuids = {task_id: f"{n:032x}" for n, task_id in enumerate(OLD_ROWS)}
    with engine.begin() as conn:
        for task_id, (task_class, container, parent, status_state) in OLD_ROWS.items():
            conn.execute(
                insert,
                {
                    "uuid": uuids[task_id],
                    "task_id": task_id,
                    "task_class": task_class,
                    "parent": uuids[parent] if parent else None,
                    "container": container,
                    "t": True,
                    "state": status_state,
                    "now": "2026-01-01 00:00:00",
                },
            )


def test_upgrade_declares_the_chains_chords_and_pipelines_recorded_before(sql_url):
    from taskstatus.backends import migrate
    from taskstatus.backends.sqlalchemy import SQLAlchemyStore

    store = SQLAlchemyStore(sql_url)
    migrate.upgrade(store.engine, "0006")
    insert_old_rows(store.engine)
    migrate.upgrade(store.engine)
    store.close()
    tracker = Tracker(Settings(url=sql_url)).open()
    try:
        sequential = {t for t in OLD_ROWS if tracker.get_by_task_id(t).sequential}
        assert sequential == {"chain", "chord", "pipeline"}
        # The rules follow: a failed step of the old chain cancels the one still waiting; a
        # failed member of the old group leaves its sibling to run.
        for failed in ("chain-1", "group-1"):
            tracker.hook.taskstatus_fail(event=event(failed, message="no"))
        assert (state(tracker, "chain-2"), state(tracker, "group-2")) == ("Canceled", "Pending")
    finally:
        tracker.close()


def test_downgrade_drops_the_declaration_and_upgrade_restores_it(sql_url):
    from alembic import command

    from taskstatus.backends import migrate
    from taskstatus.backends.sqlalchemy import SQLAlchemyStore

    store = SQLAlchemyStore(sql_url)
    migrate.upgrade(store.engine)
    insert_old_rows(store.engine)
    command.downgrade(migrate.alembic_config(store.engine), "0006")
    columns = {c["name"] for c in sa.inspect(store.engine).get_columns("taskstatus_status")}
    assert "sequential" not in columns
    migrate.upgrade(store.engine)
    assert migrate.current_revision(store.engine) == migrate.head_revision()
    assert {t for t in OLD_ROWS if store.get_by_task_id(t).sequential} == {
        "chain",
        "chord",
        "pipeline",
    }
    store.close()
