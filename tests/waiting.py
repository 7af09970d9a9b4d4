"""Waiting for statuses that real workers write, from the test process (both queues)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

import taskstatus
from taskstatus import NotFound, State, TaskStatus

T = TypeVar("T")

#: Seconds any single wait in these tests may take.
TIMEOUT = 30.0


@pytest.fixture
def uid() -> int:
    """An owner id of this test alone: its statuses are ``statuses(user_id=uid)``."""
    return uuid.uuid4().int % 10**12


def poll(
    fetch: Callable[[], T], until: Callable[[T], bool], what: str, timeout: float = TIMEOUT
) -> T:
    """Call ``fetch`` until ``until`` accepts its value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}; last seen: {value!r}")
        time.sleep(0.05)


def find(task_id: str) -> TaskStatus | None:
    """The status of a task id, or None while there is none."""
    try:
        return taskstatus.get_by_task_id(task_id)
    except NotFound:
        return None


def wait_state(task_id: str, state: State, timeout: float = TIMEOUT) -> TaskStatus:
    """The status of ``task_id`` once it is in ``state``."""
    return poll(
        lambda: find(task_id),
        lambda s: s is not None and s.state is state,
        f"task {task_id} to be {state.value}",
        timeout,
    )  # type: ignore[return-value]


def wait_stage_shown(task_id: str, stage: str, marker: Path, within: float) -> TaskStatus:
    """The status of a task that leaves ``marker`` and then sets ``stage`` and goes quiet:
    the stage must show within ``within`` seconds of the marker appearing."""
    poll(marker.exists, bool, f"task {task_id} to leave {marker}")
    return poll(
        lambda: find(task_id),
        lambda s: s is not None and s.state_text == stage,
        f"task {task_id} to show the stage {stage!r}",
        within,
    )  # type: ignore[return-value]


def wait_failed(task_id: str, timeout: float = TIMEOUT) -> TaskStatus:
    """The status of ``task_id`` once it is Failed and its Error artifact written (a moment
    later: the artifact is not part of the state change)."""
    return poll(
        lambda: find(task_id),
        lambda s: s is not None and s.state is State.FAILED and bool(error_texts(s)),
        f"task {task_id} to be Failed with an Error artifact",
        timeout,
    )  # type: ignore[return-value]


def wait_retrying(task_id: str, timeout: float = TIMEOUT) -> TaskStatus:
    """The status of ``task_id`` once it is Retrying and its traceback written (a moment
    later, as for a failure's Error artifact)."""
    return poll(
        lambda: find(task_id),
        lambda s: s is not None and s.state is State.RETRYING and s.traceback is not None,
        f"task {task_id} to be Retrying with a traceback",
        timeout,
    )  # type: ignore[return-value]


def settled(user_id: int, timeout: float = TIMEOUT) -> TaskStatus:
    """The single top-level status of an owner, once all of the owner's statuses have ended."""
    poll(
        lambda: taskstatus.statuses(user_id=user_id, limit=None),
        lambda found: bool(found) and all(s.is_terminal for s in found),
        f"every status of owner {user_id} to end",
        timeout,
    )
    return only_root(user_id)


def only_root(user_id: int) -> TaskStatus:
    """The single top-level status of an owner."""
    roots = taskstatus.statuses(user_id=user_id, parent=None)
    assert len(roots) == 1, roots
    return roots[0]


def shape(status: TaskStatus) -> tuple[object, ...]:
    """A status and its descendants as nested (task_class, name, state, children) tuples."""
    kids = tuple(shape(child) for child in status.children())
    return (status.task_class, status.name, status.state, kids)


def error_texts(status: TaskStatus) -> list[str | None]:
    return [a.text for a in status.artifacts if a.name == "Error"]
