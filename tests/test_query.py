"""The query API: filters, ordering, pagination, ids."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from taskstatus import NotFound, State

from .helpers import event, publish


@pytest.fixture
def filled(tracker):
    publish(tracker, "e1", user_id="7", name="Export course 1")
    publish(tracker, "i1", user_id="7", name="Import grades")
    publish(tracker, "e2", user_id="8", name="export 100%_done")
    publish(tracker, "g", user_id="7", name="Nightly", container="taskstatus.group")
    publish(tracker, "g1", user_id="7", name="Nightly part", parent="g")
    tracker.lifecycle.start(event("i1"))
    return tracker


def ids(statuses):
    return [s.task_id for s in statuses]


def test_newest_first(filled):
    assert ids(filled.statuses()) == ["g1", "g", "e2", "i1", "e1"]


def test_owner_ids_are_text(filled):
    assert ids(filled.statuses(user_id=7)) == ids(filled.statuses(user_id="7"))
    assert ids(filled.statuses(user_id=8)) == ["e2"]
    assert filled.statuses(user_id=99) == []


def test_state_filter_accepts_member_value_or_name(filled):
    for value in (State.IN_PROGRESS, "In Progress", "in_progress"):
        assert ids(filled.statuses(state=value)) == ["i1"]
    with pytest.raises(ValueError, match="unknown state"):
        filled.statuses(state="Running")


def test_search_is_case_insensitive_and_literal(filled):
    assert ids(filled.statuses(search="EXPORT")) == ["e2", "e1"]
    assert ids(filled.statuses(search="100%_")) == ["e2"]
    assert ids(filled.statuses(search="%")) == ["e2"]


def test_parent_filter(filled):
    g = filled.get_by_task_id("g")
    assert ids(filled.statuses(parent=None)) == ["g", "e2", "i1", "e1"]
    assert ids(filled.statuses(parent=g.uuid)) == ["g1"]
    assert ids(filled.statuses(parent=str(g.uuid))) == ["g1"]
    with pytest.raises(ValueError, match="invalid parent id"):
        filled.statuses(parent="nope")


def test_created_range(filled):
    now = datetime.now(timezone.utc)
    assert len(filled.statuses(created_after=now - timedelta(minutes=5))) == 5
    assert filled.statuses(created_after=now + timedelta(minutes=5)) == []
    assert filled.statuses(created_before=now - timedelta(minutes=5)) == []
    with pytest.raises(TypeError, match="created_after must be a datetime"):
        filled.statuses(created_after="yesterday")


def test_pagination(filled):
    assert ids(filled.statuses(limit=2)) == ["g1", "g"]
    assert ids(filled.statuses(limit=2, offset=2)) == ["e2", "i1"]
    assert ids(filled.statuses(limit=2, offset=4)) == ["e1"]
    assert len(filled.statuses(limit=None)) == 5
    assert filled.count(user_id=7) == 4
    with pytest.raises(ValueError, match="limit"):
        filled.statuses(limit=-1)
    with pytest.raises(ValueError, match="offset"):
        filled.statuses(offset=-3)


def test_get_by_uuid_str_and_errors(filled):
    s = filled.get_by_task_id("e1")
    assert filled.get(s.uuid) == s
    assert filled.get(str(s.uuid)) == s
    with pytest.raises(ValueError, match="invalid status id 'not-a-uuid'"):
        filled.get("not-a-uuid")
    with pytest.raises(NotFound, match="no task status with uuid"):
        filled.get("00000000-0000-0000-0000-000000000000")
    with pytest.raises(NotFound, match="task_id 'missing'"):
        filled.get_by_task_id("missing")
    with pytest.raises(NotFound, match="no artifact"):
        filled.get_artifact("00000000-0000-0000-0000-000000000000")


def test_module_level_api(make_url, tmp_path, monkeypatch):
    import taskstatus

    url = make_url("sqlite")
    tracker = taskstatus.configure(url=url, artifact_storage=str(tmp_path / "files"))
    try:
        assert taskstatus.get_tracker() is tracker
        with taskstatus.group("Batch", user_id=5) as g:
            publish(tracker, "x", user_id="5")
        assert taskstatus.get_by_task_id("x").parent_uuid == g.uuid
        assert taskstatus.get(g.uuid).name == "Batch"
        assert ids(taskstatus.statuses(user_id=5, parent=None)) == [g.task_id]
        taskstatus.cancel(g.uuid)
        assert taskstatus.get_by_task_id("x").state is State.CANCELED
        assert taskstatus.purge(older_than=timedelta(0)) == 2
        publish(tracker, "y")
        taskstatus.delete(taskstatus.get_by_task_id("y").uuid)
        assert taskstatus.statuses() == []
    finally:
        tracker.close()


def steps(statuses):
    return {s.task_id: (s.completed_steps, s.total_steps) for s in statuses}


def test_container_steps_agree_between_list_get_and_children(tracker):
    """A container's steps are the sums over its leaf descendants, however it is read; a
    container with none has 0/0, whatever was published for it."""
    publish(tracker, "chord", container="celery.chord", sequential=True, total_steps=1)
    publish(tracker, "header", parent="chord", container="celery.group", total_steps=1)
    publish(tracker, "h1", parent="header", total_steps=2)
    publish(tracker, "h2", parent="header", total_steps=3)
    publish(tracker, "body", parent="chord", total_steps=1)
    publish(tracker, "empty", parent="chord", container="celery.group", total_steps=1)
    tracker.lifecycle.end(tracker.lifecycle.start(event("h1")))
    expected = {
        "chord": (2, 6),
        "header": (2, 5),
        "empty": (0, 0),
        "h1": (2, 2),
        "h2": (0, 3),
        "body": (0, 1),
    }
    assert steps(tracker.statuses()) == expected
    assert steps(tracker.statuses(parent=None)) == {"chord": (2, 6)}
    assert steps(tracker.statuses(search="e")) == {t: expected[t] for t in expected if "e" in t}
    assert steps(tracker.get_by_task_id(t) for t in expected) == expected
    chord = tracker.get(tracker.get_by_task_id("chord").uuid)
    assert steps(chord.children()) == {t: expected[t] for t in ("header", "body", "empty")}


def test_several_states_queue_and_task_class(filled):
    assert ids(filled.statuses(state=["Pending", State.IN_PROGRESS], parent=None)) == [
        "g",
        "e2",
        "i1",
        "e1",
    ]
    assert ids(filled.statuses(state=[State.IN_PROGRESS])) == ["i1"]
    assert filled.statuses(state=[]) == []
    assert ids(filled.statuses(task_class="taskstatus.group")) == ["g"]
    assert ids(filled.statuses(queue="test", user_id=8)) == ["e2"]
    assert filled.statuses(queue="celery") == []
    assert ids(filled.statuses(user_ids=[8, "9"])) == ["e2"]
    assert ids(filled.statuses(user_ids=[8, 7], user_id=8)) == ["e2"]
    assert filled.statuses(user_ids=[7], user_id=8) == []
    assert filled.statuses(user_ids=[]) == []
    with pytest.raises(ValueError, match="unknown state"):
        filled.statuses(state=["Pending", "Done"])


def _walk(tracker, page_size, between_pages=lambda: None, **filters):
    """Every status, page by page by key; ``between_pages`` runs after each page."""
    seen, after = [], None
    while True:
        page = tracker.statuses(limit=page_size, after=after, **filters)
        seen += ids(page)
        if len(page) < page_size:
            return seen
        after = page[-1]
        between_pages()


def test_keyset_pages_are_stable_while_statuses_arrive(tracker):
    old = [publish(tracker, f"old-{n}").task_id for n in range(23)]
    fresh = iter(range(1000))
    seen = _walk(tracker, 5, lambda: publish(tracker, f"new-{next(fresh)}"))
    assert seen == list(reversed(old))


def test_keyset_orders_statuses_of_the_same_time_by_insertion(tracker):
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc)
    tracker.recorder.clock = lambda: moment
    same = [publish(tracker, f"same-{n}").task_id for n in range(7)]
    tracker.recorder.clock = lambda: moment - timedelta(seconds=1)
    older = publish(tracker, "older").task_id
    assert _walk(tracker, 2) == [*reversed(same), older]
    assert _walk(tracker, 3, user_id=7, state=["Pending"]) == [*reversed(same), older]


def test_keyset_after_a_deleted_status_goes_on_with_older_ones(tracker):
    statuses = [publish(tracker, f"t{n}") for n in range(4)]
    tracker.delete(statuses[2])
    assert ids(tracker.statuses(after=statuses[2])) == ["t1", "t0"]


def test_keyset_after_must_be_a_status_or_key(tracker):
    with pytest.raises(TypeError, match="after"):
        tracker.statuses(after="yesterday")
    with pytest.raises(ValueError, match="timezone-aware"):
        tracker.statuses(after=(datetime(2026, 1, 1), publish(tracker).uuid))


def test_artifacts_by_owner_paged_by_key(tracker):
    mine, theirs = publish(tracker, "mine"), publish(tracker, "theirs", user_id="8")
    texts = [tracker.add_artifact(mine, text=f"a{n}") for n in range(5)]
    tracker.add_artifact(theirs, text="not yours")
    first = tracker.query_artifacts(user_ids=[7], limit=3)
    assert [a.text for a in first] == ["a4", "a3", "a2"]
    rest = tracker.query_artifacts(user_ids=["7", "9"], limit=3, after=first[-1])
    assert [a.text for a in rest] == ["a1", "a0"]
    assert [a.text for a in tracker.query_artifacts(status=theirs)] == ["not yours"]
    assert len(tracker.query_artifacts()) == 6
    assert tracker.query_artifacts(user_ids=[]) == []
    assert texts[0].uuid == rest[-1].uuid


def test_order_of_the_same_time_survives_a_delete(tracker):
    """Insertion order breaks ties of ``created`` also after a status was deleted."""
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc)
    tracker.recorder.clock = lambda: moment
    first = publish(tracker, "first")
    publish(tracker, "second")
    tracker.delete(first)
    publish(tracker, "third")
    assert ids(tracker.statuses()) == ["third", "second"]
    assert _walk(tracker, 1) == ["third", "second"]
