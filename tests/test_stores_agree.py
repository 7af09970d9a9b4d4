"""Differential test: random lifecycle sequences give the same statuses on every SQL store, and
on a store written against the store core alone (the test's ``DictStore``, and each SQL store
with its fast paths taken back to the base's), as on the in-memory store, which applies the
model's rules directly. The SQL store's fast paths are checked against the base's methods over
its own primitives, and must cover every method of the base but those listed."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskstatus import Settings, State, Store, TaskCanceledException, TaskStatus, Tracker
from taskstatus.backends.base import BaseStore
from taskstatus.backends.sqlalchemy import SQLAlchemyStore
from taskstatus.changes import Position
from taskstatus.store import StatusQuery, StoreCore

from .conftest import SQL_BACKENDS
from .helpers import event, publish

pytestmark = pytest.mark.timeout(300)

CHILDREN = ["a", "b", "c"]
EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["begin", "progress", "stage", "retry", "succeed", "fail", "cancel"]),
        st.sampled_from([*CHILDREN, "box"]),
        st.integers(min_value=0, max_value=3),
    ),
    max_size=14,
)


#: The methods of BaseStore that the SQL store takes as they are, each because SQL would
#: answer it no faster: ``children`` is its own ``query`` of one parent (indexed, reversed),
#: ``ancestors`` a ``get`` per level. A method added to BaseStore fails the test below until
#: it is either overridden with SQL or listed here.
SQL_TAKES_FROM_BASE = {"children", "ancestors"}
#: Overridden, but not fast paths: what the base does there would be wrong for a database.
SQL_LIFECYCLE = {"open", "close"}


def _base_methods() -> set[str]:
    """What BaseStore builds on the primitives (not the primitives it inherits)."""
    return {name for name, f in vars(BaseStore).items() if inspect.isfunction(f) and name[0] != "_"}


def _protocol_members(protocol: type) -> set[str]:
    return {
        name
        for name in vars(protocol)
        if not name.startswith("_") and callable(getattr(protocol, name))
    }


def test_the_sql_store_overrides_every_fast_path_of_the_base():
    assert issubclass(SQLAlchemyStore, BaseStore)
    assert not SQLAlchemyStore.__abstractmethods__  # every primitive of StoreCore written
    # The base states the whole protocol: every method comes from it or from the core.
    assert _protocol_members(Store) <= _base_methods() | _protocol_members(StoreCore)
    taken = {
        name
        for name in _base_methods()
        if getattr(SQLAlchemyStore, name) is getattr(BaseStore, name)
    }
    assert taken == SQL_TAKES_FROM_BASE


class CoreSQLStore(SQLAlchemyStore):
    """The SQL store with every fast path taken back to the base's: its primitives alone."""


for _name in _base_methods() - SQL_TAKES_FROM_BASE - SQL_LIFECYCLE:
    setattr(CoreSQLStore, _name, getattr(BaseStore, _name))


@pytest.fixture(params=[*SQL_BACKENDS, "core", *(f"{b}-core" for b in SQL_BACKENDS)])
def new_tracker(request, make_url, make_tracker, tmp_path) -> Callable[..., Tracker]:
    """``new_tracker(**settings)`` on each SQL store, on the core-only ``tests.dict_store``,
    and on each SQL store through its primitives alone (``CoreSQLStore``)."""
    backend, _, core = request.param.partition("-")
    if backend == "core":
        return lambda **settings: make_tracker("dict://", **settings)
    url = make_url(backend)
    if not core:
        return lambda **settings: make_tracker(url, **settings)

    def make(**settings: object) -> Tracker:
        settings.setdefault("artifact_storage", str(tmp_path / "artifacts"))
        tracker = Tracker(Settings(url=url, **settings), store=CoreSQLStore(url))  # type: ignore[arg-type]
        request.addfinalizer(tracker.close)
        return tracker.open()

    return make


#: A chain and a group, as their adapter declares them.
KINDS = [("celery.chain", True), ("celery.group", False)]


def play(tracker, kind: tuple[str, bool], steps: list[tuple[str, str, int]]) -> list[tuple]:
    prefix = uuid.uuid4().hex[:8]

    def tid(name: str) -> str:
        return f"{prefix}-{name}"

    publish(tracker, tid("box"), container=kind[0], sequential=kind[1])
    for child in CHILDREN:
        publish(tracker, tid(child), parent=tid("box"), total_steps=3)
    for action, who, n in steps:
        e = event(tid(who))
        try:
            if action == "begin":
                tracker.hook.taskstatus_prerun(event=e)
            elif action == "progress":
                tracker.hook.taskstatus_progress(event=event(tid(who), completed_delta=n))
            elif action == "stage":
                tracker.hook.taskstatus_progress(event=event(tid(who), stage=f"stage {n}"))
            else:
                getattr(tracker.hook, f"taskstatus_{action}")(event=e)
        except TaskCanceledException:
            pass
    result = []
    for name in ["box", *CHILDREN]:
        s = tracker.get_by_task_id(tid(name))
        result.append(
            (
                name,
                s.state.value,
                s.state_text,
                s.completed_steps,
                s.total_steps,
                s.attempts,
                s.sequential,
                [a.name for a in s.artifacts],
            )
        )
    return result


@pytest.mark.parametrize("kind", KINDS, ids=[k for k, _ in KINDS])
def test_store_matches_model(kind, new_tracker, memory_tracker):
    tracker = new_tracker()

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(steps=EVENTS)
    def check(steps):
        assert play(tracker, kind, steps) == play(memory_tracker, kind, steps)

    check()


@pytest.mark.parametrize("kind", KINDS, ids=[k for k, _ in KINDS])
def test_batched_writes_match_immediate_writes(kind, new_tracker, memory_tracker):
    """A worker's batched starts and successes end where writing each at once ends."""
    batched = new_tracker(write_interval=5)
    batched.lifecycle.batch_writes()

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(steps=EVENTS)
    def check(steps):
        # Workers start and finish tasks, never containers (the recorder ends those).
        steps = [s for s in steps if not (s[0] in ("begin", "succeed") and s[1] == "box")]
        assert play(batched, kind, steps) == play(memory_tracker, kind, steps)

    check()


def test_sql_reads_match_the_base_over_its_primitives(sql_url, make_tracker):
    """Each read the SQL store answers in SQL, answered again by the base by scanning the
    same database: a tree in every state, with artifacts."""
    tracker = make_tracker(sql_url)
    store = tracker.store
    start = datetime.now(timezone.utc)
    outer = publish(tracker, container="celery.group", name="Nightly 50%_import")
    inner = publish(tracker, parent=outer.task_id, container="celery.chain", user_id="8")
    leaves = [publish(tracker, parent=inner.task_id, total_steps=4) for _ in range(3)]
    leaves += [publish(tracker, parent=outer.task_id, total_steps=2, user_id=None)]
    alone = publish(tracker, name="alone")
    for leaf in leaves[:3]:
        tracker.hook.taskstatus_prerun(event=event(leaf.task_id))
    tracker.hook.taskstatus_progress(event=event(leaves[0].task_id, completed_delta=3))
    tracker.hook.taskstatus_progress(event=event(leaves[1].task_id, stage="Sending"))
    tracker.hook.taskstatus_fail(event=event(leaves[2].task_id, exception=ValueError("bad")))
    tracker.cancel(leaves[3])
    tracker.add_artifact(alone, text="hello")
    tracker.add_artifact(alone, name="Link", url="https://example.com/a")
    statuses = [tracker.get_by_task_id(s.task_id) for s in [outer, inner, *leaves, alone]]
    uuids = [s.uuid for s in statuses]
    artifacts = store.artifacts(uuids)
    assert len(artifacts) >= 3  # the failure's Error too

    def agree(name: str, *args, **kwargs) -> object:
        fast = getattr(store, name)(*args, **kwargs)
        assert fast == getattr(BaseStore, name)(store, *args, **kwargs), name
        return fast

    queries = [
        StatusQuery(),
        StatusQuery(user_ids=["7"], limit=None),
        StatusQuery(user_ids=["7", "8"], parent=None),
        StatusQuery(parent=outer.uuid, limit=2, offset=1),
        StatusQuery(states=frozenset({State.IN_PROGRESS, State.FAILED}), search="task"),
        StatusQuery(state=State.CANCELED, created_after=start),
        StatusQuery(search="50%_", created_before=datetime.now(timezone.utc)),
        StatusQuery(queue="test", task_class="tests.task", after=(statuses[3].created, uuids[3])),
    ]
    for query in queries:
        assert agree("query", query)
        assert agree("count", query)
    for container in [outer, inner]:
        assert agree("child_states", container.uuid)
    assert agree("step_sums", uuids)
    assert agree("step_sums", [outer.uuid])
    assert agree("artifacts", uuids)
    newest = artifacts[-1]
    assert agree("get_artifact", newest.uuid)
    assert agree("get_artifact", uuid.uuid4()) is None
    assert agree("artifact_query", None, None, 10, 0)
    assert agree("artifact_query", [alone.uuid], ["7"], 1, 1)
    assert agree("artifact_query", None, ["7"], 10, 0, after=(newest.created, newest.uuid))
    assert agree("canceled_unstarted", start)
    assert agree("lost", datetime.now(timezone.utc) + timedelta(hours=1), 2)
    assert agree("changes", Position(), 100)
    assert agree("changes", Position(), 3, user_ids=["8"], root=outer.uuid)
    assert agree("last_changed")
    assert agree("summary").oldest_in_progress is not None
    assert len(store.changes(Position(), 100)) == len(statuses)


def test_which_rows_are_lost(any_url, make_tracker):
    """In Progress rows with an old stamp, and Pending/Retrying rows that a worker stamped in
    that state (it held them: e.g. their start was not written yet) and that their queue will
    not deliver again; never a task waiting in its queue. The SQL query and the base's rule
    (``models.is_lost``) agree."""
    tracker = make_tracker(any_url)
    store = tracker.store
    hook = tracker.hook

    def task(name: str, *, redeliver: bool = False) -> TaskStatus:
        tracker.lifecycle.publish(
            event(name, user_id="7", total_steps=1, redeliver_on_loss=redeliver)
        )
        return tracker.get_by_task_id(name)

    running = task("running")
    hook.taskstatus_prerun(event=event("running"))
    held = task("held")  # a worker holds it; its start is not written yet
    retried_held = task("retried-held")
    hook.taskstatus_prerun(event=event("retried-held"))
    hook.taskstatus_retry(event=event("retried-held"))
    waiting_retry = task("waiting-retry")  # a retry's countdown in the broker
    hook.taskstatus_prerun(event=event("waiting-retry"))
    hook.taskstatus_retry(event=event("waiting-retry"))
    task("never-delivered")
    redelivered = task("redelivered", redeliver=True)
    store.beat([held.uuid, retried_held.uuid, redelivered.uuid], datetime.now(timezone.utc))

    before = datetime.now(timezone.utc) + timedelta(seconds=1)
    lost = store.lost(before, 10)
    assert lost == BaseStore.lost(store, before, 10)
    assert {s.task_id for s in lost} == {"running", "held", "retried-held"}
    # Stamped since ``before``: nothing is lost.
    assert store.lost(datetime.now(timezone.utc) - timedelta(hours=1), 10) == []
    assert {running.uuid, waiting_retry.uuid}.isdisjoint(
        s.uuid for s in store.lost(before - timedelta(hours=1), 10)
    )

    assert tracker.reap_lost() == 0  # lost_after has not passed
    tracker.recorder.reap_lost(before)
    states = {s.task_id: s.state for s in tracker.statuses(user_id="7", limit=None)}
    assert states == {
        "running": State.FAILED,
        "held": State.FAILED,
        "retried-held": State.FAILED,
        "waiting-retry": State.RETRYING,
        "never-delivered": State.PENDING,
        "redelivered": State.PENDING,
    }
