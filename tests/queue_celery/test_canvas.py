"""Chains, groups, chords and ``taskstatus.group`` on a real worker: their containers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from celery import chain, chord, group

import taskstatus
from taskstatus import State
from taskstatus.models import ACTIVE_STATES
from tests.queue_celery import app as tasks

from .conftest import (
    TIMEOUT,
    Cell,
    error_texts,
    find,
    only_root,
    poll,
    settled,
    shape,
    wait_failed,
    wait_state,
)

pytestmark = pytest.mark.timeout(90)

S, F, C = State.SUCCEEDED, State.FAILED, State.CANCELED
ADD, COUNT, EXPLODE = (f"tests.queue_celery.app.{n}" for n in ("add", "count", "explode"))
GATED, SLEEPY, TOTAL = (f"tests.queue_celery.app.{n}" for n in ("gated", "sleepy", "total"))


def test_chain(cell: Cell, uid: int) -> None:
    result = chain(
        tasks.add.s(1, 2, user_id=uid), tasks.add.s(10), tasks.count.si(uid, 2)
    ).apply_async()
    assert result.get(timeout=TIMEOUT) == 2
    root = settled(uid)
    assert shape(root) == (
        "celery.chain",
        "Add 1+2",
        S,
        (
            (ADD, "Add 1+2", S, ()),
            (ADD, "Add <previous result>+10", S, ()),
            (COUNT, "Count to 2", S, ()),
        ),
    )
    assert (root.completed_steps, root.total_steps) == (4, 4)
    assert root.is_container and root.sequential  # as the adapter declared it
    assert root.started_at is not None
    assert root.finished_at is not None
    steps = root.children()
    assert {s.parent_uuid for s in steps} == {root.uuid}
    # The middle step gets its owner from the chain.
    assert {s.user_id for s in [root, *steps]} == {str(uid)}


def test_chain_failing_step_cancels_later_steps(cell: Cell, uid: int, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    chain(
        tasks.count.si(uid, 2),
        tasks.explode.si(uid, "step 2 broke"),
        tasks.sleepy.si(uid, 0.1, str(marker)),
    ).apply_async()
    root = settled(uid)
    assert shape(root) == (
        "celery.chain",
        "Count to 2",
        F,
        ((COUNT, "Count to 2", S, ()), (EXPLODE, "Explode", F, ()), (SLEEPY, SLEEPY, C, ())),
    )
    first, broken, never = root.children()
    assert error_texts(root) == ["ValueError: step 2 broke"]
    assert error_texts(broken) == ["ValueError: step 2 broke"]
    assert error_texts(first) == error_texts(never) == []
    assert never.started_at is None
    assert not marker.exists()


def test_cancel_chain_stops_running_step_and_skips_the_rest(
    cell: Cell, uid: int, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    chain(
        tasks.gated.si(uid, str(tmp_path / "gate")), tasks.sleepy.si(uid, 0.1, str(marker))
    ).apply_async()
    root = only_root(uid)
    running = wait_state(root.children()[0].task_id, State.IN_PROGRESS)
    root.cancel()
    assert root.state is C
    cell.wait_stopped(running.task_id)
    root = settled(uid)
    assert shape(root) == (
        "celery.chain",
        GATED,
        C,
        ((GATED, GATED, C, ()), (SLEEPY, SLEEPY, C, ())),
    )
    assert not marker.exists()
    assert error_texts(root) == []


def test_group(cell: Cell, uid: int) -> None:
    result = group(tasks.add.s(1, 2, user_id=uid), tasks.count.si(uid, 3)).apply_async()
    assert result.get(timeout=TIMEOUT) == [3, 3]
    root = settled(uid)
    assert shape(root) == (
        "celery.group",
        "celery.group",
        S,
        ((ADD, "Add 1+2", S, ()), (COUNT, "Count to 3", S, ())),
    )
    assert (root.completed_steps, root.total_steps) == (4, 4)


def test_group_fails_at_once_and_its_other_members_finish(
    cell: Cell, uid: int, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    result = group(tasks.explode.si(uid, "bad row"), tasks.gated.si(uid, str(gate))).apply_async()
    root = only_root(uid)
    slow = result.results[1]
    wait_state(slow.id, State.IN_PROGRESS)
    failed = wait_state(result.results[0].id, F)
    wait_state(root.task_id, F)
    assert find(slow.id).state is State.IN_PROGRESS  # type: ignore[union-attr]

    gate.touch()
    assert slow.get(timeout=TIMEOUT) == "opened"
    root = settled(uid)
    assert shape(root) == (
        "celery.group",
        "celery.group",
        F,
        ((EXPLODE, "Explode", F, ()), (GATED, GATED, S, ())),
    )
    assert error_texts(root) == error_texts(failed) == ["ValueError: bad row"]


def test_chord(cell: Cell, uid: int) -> None:
    result = chord(
        [tasks.add.s(1, 2, user_id=uid), tasks.add.s(3, 4, user_id=uid)],
        tasks.total.s(user_id=uid),
    ).apply_async()
    assert result.get(timeout=TIMEOUT) == 10
    root = settled(uid)
    header = ("celery.group", "celery.group", S, ((ADD, "Add 1+2", S, ()), (ADD, "Add 3+4", S, ())))
    assert shape(root) == ("celery.chord", "celery.chord", S, (header, (TOTAL, TOTAL, S, ())))
    assert (root.completed_steps, root.total_steps) == (3, 3)
    # The header runs, then the body; the header's members side by side.
    assert (root.sequential, root.children()[0].sequential) == (True, False)


def test_chord_with_a_failing_member_never_runs_its_body(cell: Cell, uid: int) -> None:
    chord(
        [tasks.add.s(1, 2, user_id=uid), tasks.explode.si(uid, "no rows")],
        tasks.total.s(user_id=uid),
    ).apply_async()
    root = wait_failed(settled(uid).task_id)  # its Error artifact follows the state change
    header = (
        "celery.group",
        "celery.group",
        F,
        ((ADD, "Add 1+2", S, ()), (EXPLODE, "Explode", F, ())),
    )
    assert shape(root) == ("celery.chord", "celery.chord", F, (header, (TOTAL, TOTAL, C, ())))
    assert root.children()[1].started_at is None
    # Its text depends on a race: see test_group_failure_message_does_not_depend_on_timing.
    assert len(error_texts(root)) == 1


def test_taskstatus_group_ends_with_its_last_child(cell: Cell, uid: int, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with taskstatus.group("Nightly", user_id=uid) as container:
        quick = tasks.add.delay(1, 2, user_id=uid)
        steps = chain(tasks.add.s(5, 5, user_id=uid), tasks.add.s(1)).delay()
        slow = tasks.gated.delay(uid, str(gate))
    assert (container.queue, container.task_class, container.is_container) == (
        "taskstatus",
        "taskstatus.group",
        True,
    )
    assert not container.sequential
    assert quick.get(timeout=TIMEOUT) == 3
    assert steps.get(timeout=TIMEOUT) == 11
    wait_state(slow.id, State.IN_PROGRESS)
    # A container starts in the write after its first child's start.
    poll(lambda: taskstatus.get(container.uuid).state, State.IN_PROGRESS.__eq__, "the group")

    gate.touch()
    assert slow.get(timeout=TIMEOUT) == "opened"
    root = settled(uid)
    assert root.uuid == container.uuid
    assert shape(root) == (
        "taskstatus.group",
        "Nightly",
        S,
        (
            (ADD, "Add 1+2", S, ()),
            (
                "celery.chain",
                "Add 5+5",
                S,
                ((ADD, "Add 5+5", S, ()), (ADD, "Add <previous result>+1", S, ())),
            ),
            (GATED, GATED, S, ()),
        ),
    )


# -- known adapter bugs (one cell: they do not depend on the broker or the store) --------------
def test_chain_inside_a_group_is_a_child_of_the_group(one_cell: Cell, uid: int) -> None:
    result = group(
        chain(tasks.add.s(1, 2, user_id=uid), tasks.add.s(3)), tasks.add.s(5, 5, user_id=uid)
    ).apply_async()
    assert result.get(timeout=TIMEOUT) == [6, 10]
    root = settled(uid)
    steps = ((ADD, "Add 1+2", S, ()), (ADD, "Add <previous result>+3", S, ()))
    assert shape(root) == (
        "celery.group",
        "celery.group",
        S,
        (("celery.chain", "Add 1+2", S, steps), (ADD, "Add 5+5", S, ())),
    )


def test_group_ends_after_its_last_member(one_cell: Cell, uid: int) -> None:
    result = group(tasks.add.s(1, 2, user_id=uid), tasks.slow_named.s(uid, pause=2.0)).apply_async()
    assert result.get(timeout=TIMEOUT) == [3, 2.0]
    root = settled(uid)
    last = max(child.finished_at for child in root.children())  # type: ignore[type-var]
    assert root.finished_at >= last  # type: ignore[operator]


@pytest.mark.parametrize("canvas", ["group", "chord"])
def test_group_with_a_member_missing_its_owner_sends_nothing(
    one_cell: Cell, uid: int, canvas: str
) -> None:
    queue = one_cell.new_queue()  # nobody consumes it
    members = [tasks.add.s(1, 2, user_id=uid), tasks.add.s(3, 4)]
    sig = group(members) if canvas == "group" else chord(members, tasks.total.s(user_id=uid))
    with pytest.raises(TypeError, match="user_id"):
        sig.apply_async(queue=queue)
    assert one_cell.queue_length(queue) == 0
    assert taskstatus.statuses(user_id=uid) == []


def test_group_step_of_a_chain_takes_its_owner_from_the_chain(one_cell: Cell, uid: int) -> None:
    result = chain(
        tasks.add.s(1, 2, user_id=uid), group(tasks.add.s(1), tasks.add.s(2))
    ).apply_async()
    root = settled(uid, timeout=5)
    assert result.get(timeout=TIMEOUT) == [4, 5]
    members = ((ADD, "Add 3+1", S, ()), (ADD, "Add 3+2", S, ()))
    assert shape(root) == (
        "celery.chain",
        "Add 1+2",
        S,
        ((ADD, "Add 1+2", S, ()), ("celery.group", "celery.group", S, members)),
    )


def test_group_failure_message_does_not_depend_on_timing(make_cell, uid: int) -> None:  # type: ignore[no-untyped-def]
    cell: Cell = make_cell("redis", "sqlite")
    # Its taskstatus_stopped plugin takes a second over the failed member before the group
    # hears of the failure; meanwhile the other member succeeds.
    cell.start_worker(env={"TS_TEST_SLOW_NOTIFIER": "1"})
    group(tasks.explode.si(uid, "bad row"), tasks.count.si(uid, 3, delay=0.1)).apply_async()
    root = settled(uid)
    assert root.state is F
    assert error_texts(root) == ["ValueError: bad row"]


def test_many_chords_with_a_failing_member_cancel_every_body(make_cell, uid: int) -> None:  # type: ignore[no-untyped-def]
    # Two pool processes end the two members of each header. The worker's notifier takes a
    # second over each failed member before its chord hears of it (as a loaded machine may):
    # meanwhile the other process writes the member that succeeded, sees the failure and
    # ends the header itself, inside its batched write.
    cell: Cell = make_cell("rabbitmq", "postgresql")
    cell.start_worker(concurrency=2, env={"TS_TEST_SLOW_NOTIFIER": "1"})
    chords = 24
    for i in range(chords):
        chord(
            [tasks.add.s(i, 1, user_id=uid), tasks.explode.si(uid, "no rows")],
            tasks.total.s(user_id=uid),
        ).apply_async()
    counts = poll(
        lambda: Counter(
            (s.task_class.rpartition(".")[2], s.state.value)
            for s in taskstatus.statuses(user_id=uid, limit=None)
        ),
        lambda seen: (
            seen.total() == 5 * chords
            and not any(State(state) in ACTIVE_STATES for _, state in seen)
        ),
        "every chord, member and body to end",
    )
    assert counts == {
        ("chord", "Failed"): chords,
        ("group", "Failed"): chords,
        ("add", "Succeeded"): chords,
        ("explode", "Failed"): chords,
        ("total", "Canceled"): chords,
    }
