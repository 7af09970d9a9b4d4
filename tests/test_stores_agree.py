"""Differential test: random lifecycle sequences give the same statuses on every SQL store, and
on a store written against the store core alone, as on the in-memory store, which applies the
model's rules directly."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskstatus import TaskCanceledException

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


@pytest.fixture(params=[*SQL_BACKENDS, "core"])
def store_url(request, make_url) -> str:
    """Each SQL store, and the core-only ``tests.dict_store``."""
    return "dict://" if request.param == "core" else make_url(request.param)


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
def test_store_matches_model(kind, store_url, make_tracker, memory_tracker):
    tracker = make_tracker(store_url)

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
def test_batched_writes_match_immediate_writes(kind, store_url, make_tracker, memory_tracker):
    """A worker's batched starts and successes end where writing each at once ends."""
    batched = make_tracker(store_url, write_interval=5)
    batched.batch_writes()

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
