"""Status model and state machine: pure Python, no I/O.

Every rule about how a status may change lives here as data. A :class:`Transition` names the
states it may start from and the fields it touches; each store compiles it into one conditional
write (``UPDATE ... WHERE state IN sources``) and :func:`apply` is the same rule in Python, used
by the in-memory store and by the model tests. Container rules (how a group ends, what a
container whose children run in order does) are plain functions of child states and of what
the container's adapter declared when it published it (:attr:`TaskStatus.sequential`).
"""

from __future__ import annotations

import enum
import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlsplit
from uuid import UUID

__all__ = [
    "ACTIVE_STATES",
    "MAX_STEPS",
    "MAX_TEXT",
    "MAX_URL",
    "TERMINAL_STATES",
    "Artifact",
    "Attempt",
    "State",
    "TaskStatus",
    "Transition",
    "apply",
    "check_key",
    "check_text",
    "clean_text",
    "container_outcome",
]

#: Step counters are signed 64-bit integers in every store.
MAX_STEPS = 2**63 - 1
#: Characters of a name, a stage, an owner id or an artifact name (VARCHAR(255) columns).
MAX_TEXT = 255
#: Characters of an artifact URL (its column's size).
MAX_URL = 2048


class State(str, enum.Enum):
    """The states of a status; the values are django-user-tasks' display strings."""

    PENDING = "Pending"
    IN_PROGRESS = "In Progress"
    RETRYING = "Retrying"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @classmethod
    def parse(cls, value: str | State) -> State:
        """Accept a member, its value (``"In Progress"``) or its name (``"IN_PROGRESS"``)."""
        if isinstance(value, State):
            return value
        if not isinstance(value, str):
            raise TypeError(f"state must be a State or str, got {type(value).__name__}")
        for member in cls:
            if value in (member.value, member.name) or value.upper() == member.name:
                return member
        choices = ", ".join(repr(m.value) for m in cls)
        raise ValueError(f"unknown state {value!r}; expected one of {choices}")


TERMINAL_STATES = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELED})
ACTIVE_STATES = frozenset(State) - TERMINAL_STATES


class Attempts(enum.Enum):
    KEEP = "keep"
    INCREMENT = "increment"
    #: A task that starts while already In Progress was redelivered (its worker died).
    INCREMENT_IF_RUNNING = "increment_if_running"


class Steps(enum.Enum):
    KEEP = "keep"
    #: A new run starts counting from zero, so a retry or redelivery never counts steps twice.
    RESTART = "restart"
    COMPLETE = "complete"
    #: A run that started and ended in one write: its planned steps, all done.
    PLANNED = "planned"


@dataclass(frozen=True)
class Transition:
    """One state change, as data: the states it may leave and the fields it sets."""

    name: str
    target: State
    sources: frozenset[State]
    set_started: bool = False
    set_finished: bool = False
    attempts: Attempts = Attempts.KEEP
    steps: Steps = Steps.KEEP
    clear_stage: bool = True
    #: The running worker's proof of life starts now.
    set_heartbeat: bool = False


START = Transition(
    "start",
    State.IN_PROGRESS,
    frozenset({State.PENDING, State.RETRYING, State.IN_PROGRESS}),
    set_started=True,
    attempts=Attempts.INCREMENT_IF_RUNNING,
    steps=Steps.RESTART,
    set_heartbeat=True,
)
#: A container starts when its first child does; later children change nothing.
START_CONTAINER = Transition(
    "start", State.IN_PROGRESS, frozenset({State.PENDING, State.RETRYING}), set_started=True
)
RETRY = Transition(
    "retry",
    State.RETRYING,
    # Not from Retrying: a duplicate retry event for the same failure must not count twice.
    frozenset({State.PENDING, State.IN_PROGRESS}),
    attempts=Attempts.INCREMENT,
)
SUCCEED = Transition(
    "succeed", State.SUCCEEDED, ACTIVE_STATES, set_finished=True, steps=Steps.COMPLETE
)
FAIL = Transition("fail", State.FAILED, ACTIVE_STATES, set_finished=True)
CANCEL = Transition("cancel", State.CANCELED, ACTIVE_STATES, set_finished=True)
#: A task recorded for a message that was never sent: only while nothing ran it.
UNSENT = Transition("unsent", State.FAILED, frozenset({State.PENDING}), set_finished=True)

#: START then SUCCEED as one write, for a short task whose start was not written yet (a
#: worker's batch) and which reported no progress.
RUN = Transition(
    "run",
    State.SUCCEEDED,
    START.sources,
    set_started=True,
    set_finished=True,
    attempts=Attempts.INCREMENT_IF_RUNNING,
    steps=Steps.PLANNED,
)


def transition_to(state: State) -> Transition:
    """The transition of a container that settles in ``state``."""
    return {State.SUCCEEDED: SUCCEED, State.FAILED: FAIL, State.CANCELED: CANCEL}[state]


def container_outcome(child_states: Iterable[State]) -> State | None:
    """How a sealed container ends, or None while any child is still active.

    Any failure fails it; otherwise any cancellation cancels it; otherwise it succeeded (an
    empty container succeeds with nothing to do).
    """
    states = set(child_states)
    if states & ACTIVE_STATES:
        return None
    if State.FAILED in states:
        return State.FAILED
    if State.CANCELED in states:
        return State.CANCELED
    return State.SUCCEEDED


def cancels_waiting_siblings(container: TaskStatus) -> bool:
    """Whether a failed or canceled child means the container's waiting children never run:
    they would have run after it."""
    return container.sequential


def shares_stage(container: TaskStatus) -> bool:
    """Whether a child's custom stage text is shown on this container too: a sequential
    container is at the stage of its running step; a group runs several at once."""
    return container.sequential


class StatusManager(Protocol):
    """What a bound :class:`TaskStatus` delegates its I/O to (the Tracker)."""

    def start(self, status: TaskStatus) -> TaskStatus: ...
    def succeed(self, status: TaskStatus) -> TaskStatus: ...
    def fail(self, status: TaskStatus, message: str) -> TaskStatus: ...
    def retry(self, status: TaskStatus) -> TaskStatus: ...
    def cancel(self, status: TaskStatus, *, terminate: bool = False) -> TaskStatus: ...
    def set_state(self, status: TaskStatus, text: str) -> TaskStatus: ...
    def set_name(self, status: TaskStatus, name: str) -> TaskStatus: ...
    def increment_steps(self, status: TaskStatus, completed: int, total: int) -> TaskStatus: ...
    def add_artifact(
        self,
        status: TaskStatus,
        *,
        name: str = "Output",
        file: bytes | BinaryIO | None = None,
        filename: str | None = None,
        url: str | None = None,
        text: str | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> Artifact: ...
    def delete(self, status: TaskStatus) -> None: ...
    def children(self, status: TaskStatus) -> list[TaskStatus]: ...
    def artifacts(self, status: TaskStatus) -> list[Artifact]: ...
    def open_artifact(self, artifact: Artifact) -> BinaryIO: ...
    def refresh(self, status: TaskStatus) -> TaskStatus: ...


def _bound(manager: StatusManager | None) -> StatusManager:
    if manager is None:
        raise RuntimeError(
            "this object is not bound to a tracker; get it through taskstatus.get() or a Tracker"
        )
    return manager


@dataclass
class TaskStatus:
    """The status of one task or container, with django-user-tasks' method names.

    Instances returned by the query API are bound to their tracker: methods write through it
    and then refresh the fields of this object.
    """

    uuid: UUID
    task_id: str
    queue: str
    task_class: str
    name: str
    user_id: str | None = None
    parent_uuid: UUID | None = None
    is_container: bool = False
    state: State = State.PENDING
    stage: str | None = None
    completed_steps: int = 0
    total_steps: int = 1
    attempts: int = 1
    created: datetime | None = None
    modified: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: When the current attempt started (``started_at`` is the first attempt's start).
    attempt_started_at: datetime | None = None
    #: The total as computed at publish; a new run restarts from it.
    planned_steps: int = 1
    #: False while a container may still receive children (``taskstatus.group`` block open).
    sealed: bool = True
    #: Operator-only detail of a failure (never shown to the owner by default).
    traceback: str | None = field(default=None, repr=False)
    #: Last proof of life of the worker running it (refreshed every heartbeat_interval).
    heartbeat_at: datetime | None = None
    #: Whether the queue runs it again if its worker dies (Retrying then, not Failed).
    redeliver_on_loss: bool = False
    #: A container whose children run one after another (a chain, a pipeline), as its
    #: adapter declared: a failed or canceled step cancels the steps still waiting, and a
    #: running step's custom stage shows on the container. False for groups and tasks.
    sequential: bool = False
    _manager: StatusManager | None = field(default=None, repr=False, compare=False)

    @property
    def state_text(self) -> str:
        """The custom stage of a running task, else the state's display text."""
        if self.stage and self.state is State.IN_PROGRESS:
            return self.stage
        return self.state.value

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def bind(self, manager: StatusManager | None) -> TaskStatus:
        self._manager = manager
        return self

    def _take(self, other: TaskStatus) -> TaskStatus:
        for name in self.__dataclass_fields__:
            if name != "_manager":
                setattr(self, name, getattr(other, name))
        return self

    # -- django-user-tasks-compatible mutators ------------------------------------------------
    def start(self) -> None:
        self._take(_bound(self._manager).start(self))

    def succeed(self) -> None:
        self._take(_bound(self._manager).succeed(self))

    def fail(self, message: str) -> None:
        self._take(_bound(self._manager).fail(self, message))

    def retry(self) -> None:
        self._take(_bound(self._manager).retry(self))

    def cancel(self, *, terminate: bool = False) -> None:
        """Request cancellation (see the state machine); ``terminate`` asks the queue for a
        hard stop where it has one."""
        self._take(_bound(self._manager).cancel(self, terminate=terminate))

    def set_state(self, text: str) -> None:
        self._take(_bound(self._manager).set_state(self, text))

    def set_name(self, name: str) -> None:
        self._take(_bound(self._manager).set_name(self, name))

    def increment_completed_steps(self, steps: int = 1) -> None:
        self._take(_bound(self._manager).increment_steps(self, steps, 0))

    def increment_total_steps(self, steps: int) -> None:
        self._take(_bound(self._manager).increment_steps(self, 0, steps))

    def add_artifact(
        self,
        *,
        name: str = "Output",
        file: bytes | BinaryIO | None = None,
        filename: str | None = None,
        url: str | None = None,
        text: str | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> Artifact:
        return _bound(self._manager).add_artifact(
            self, name=name, file=file, filename=filename, url=url, text=text, path=path
        )

    def delete(self) -> None:
        _bound(self._manager).delete(self)

    def refresh(self) -> TaskStatus:
        return self._take(_bound(self._manager).refresh(self))

    # -- navigation ---------------------------------------------------------------------------
    def children(self) -> list[TaskStatus]:
        return _bound(self._manager).children(self)

    @property
    def artifacts(self) -> list[Artifact]:
        return _bound(self._manager).artifacts(self)


@dataclass
class Artifact:
    """Something a task produced: exactly one of a stored file, a URL or a text."""

    uuid: UUID
    status_uuid: UUID
    name: str = "Output"
    file: str | None = None
    url: str | None = None
    text: str | None = None
    created: datetime | None = None
    modified: datetime | None = None
    _manager: StatusManager | None = field(default=None, repr=False, compare=False)

    @property
    def filename(self) -> str | None:
        """The file's name as given by the task (the last part of its storage path)."""
        return posixpath.basename(self.file) if self.file else None

    def bind(self, manager: StatusManager | None) -> Artifact:
        self._manager = manager
        return self

    def open(self) -> BinaryIO:
        """Open the stored file for reading (binary)."""
        if self.file is None:
            raise ValueError(f"artifact {self.uuid} ({self.name!r}) has no file")
        return _bound(self._manager).open_artifact(self)


@dataclass(frozen=True)
class Attempt:
    """One run of a task that ended in a retry (or in a redelivery after its worker was
    lost): the history behind :attr:`TaskStatus.attempts`."""

    #: 1 for the first run.
    number: int
    #: When it started; None if it never did (retried while Pending) or is not known.
    started_at: datetime | None
    retried_at: datetime
    #: What went wrong, as an ``Error`` artifact would say it (no traceback).
    message: str | None = None


# -- transitions applied in Python ------------------------------------------------------------
def apply(
    status: TaskStatus, transition: Transition, now: datetime, started: datetime | None = None
) -> TaskStatus | None:
    """The status after ``transition`` at ``now`` (``started``: the start time of a
    transition that also ends the task), or None when the rule does not allow it.

    This is the reference semantics that the SQL store compiles into a single UPDATE.
    """
    if status.state not in transition.sources:
        return None
    changes: dict[str, Any] = {"state": transition.target, "modified": now}
    if transition.set_started:
        changes["attempt_started_at"] = started or now
        if status.started_at is None:
            changes["started_at"] = started or now
    if transition.set_finished:
        changes["finished_at"] = now
    if transition.attempts is Attempts.INCREMENT or (
        transition.attempts is Attempts.INCREMENT_IF_RUNNING and status.state is State.IN_PROGRESS
    ):
        changes["attempts"] = status.attempts + 1
    if transition.steps is Steps.RESTART:
        changes["completed_steps"] = 0
        changes["total_steps"] = status.planned_steps
    elif transition.steps is Steps.COMPLETE:
        changes["completed_steps"] = status.total_steps
    elif transition.steps is Steps.PLANNED:
        changes["completed_steps"] = changes["total_steps"] = status.planned_steps
    if transition.clear_stage:
        changes["stage"] = None
    if transition.set_heartbeat:
        changes["heartbeat_at"] = now
    return replace(status, **changes)


def ended_attempt(status: TaskStatus, now: datetime, message: str | None) -> Attempt:
    """The attempt that a retry of ``status`` (as it was before the retry) ends at ``now``:
    the one it is on, which the retry then counts."""
    return Attempt(status.attempts, status.attempt_started_at, now, message)


def is_lost(status: TaskStatus, before: datetime) -> bool:
    """A task whose worker has not shown a sign of life since ``before``: one running, or
    one Pending or Retrying that a worker held (stamped after it entered that state, e.g.
    its start not written yet) and that its queue will not deliver again. A task waiting in
    its queue (a retry's countdown, a message not delivered yet) is never stamped in that
    state, so it is never lost."""
    if status.is_container or status.heartbeat_at is None or status.heartbeat_at >= before:
        return False
    if status.state is State.IN_PROGRESS:
        return True
    return (
        status.state in (State.PENDING, State.RETRYING)
        and not status.redeliver_on_loss
        and status.modified is not None
        and status.heartbeat_at > status.modified
    )


def add_steps(value: int, delta: int) -> int:
    """A step counter after adding ``delta``, kept within 0..MAX_STEPS."""
    return max(0, min(MAX_STEPS, value + delta))


# -- validation of what callers hand in --------------------------------------------------------
#: What no store keeps alike: NUL (refused by PostgreSQL, kept by SQLite and MariaDB) and lone
#: surrogates (no UTF-8 encoding: refused by every driver). In a ``str`` every code point in
#: the surrogate range is a lone one: a pair is one code point above U+FFFF.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clean_text(text: str, limit: int | None = None) -> str:
    """``text`` as every store keeps it: NUL and lone surrogates replaced by U+FFFD, cut to
    ``limit`` characters. What a running task reports is made storable, never refused: a
    task must not fail over its progress text."""
    text = _UNSTORABLE.sub("\ufffd", text)
    return text if limit is None else text[:limit]


def check_text(value: object, what: str, limit: int | None = MAX_TEXT) -> str:
    """A non-empty str argument, cleaned (:func:`clean_text`); TypeError/ValueError name
    ``what``."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    return clean_text(value, limit)


def check_key(value: object, what: str, limit: int | None = MAX_TEXT) -> str:
    """An identifier (owner id, task id, filter text) compared as stored: it is not changed,
    so what cannot be stored alike is refused."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if _UNSTORABLE.search(value):
        raise ValueError(f"{what} must not contain NUL or lone surrogates, got {value!r}")
    if limit is not None and len(value) > limit:
        raise ValueError(f"{what} must be at most {limit} characters, got {len(value)}")
    return value


def check_steps(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_STEPS:
        raise ValueError(f"{what} must be between 0 and {MAX_STEPS}, got {value}")
    return value


def check_artifact_payload(
    *, file: object, url: object, text: object, filename: object, path: object = None
) -> None:
    """Exactly one of file/path/url/text; bytes or a binary file object for ``file``;
    http(s) URLs only; plain file names only."""
    given = [
        n
        for n, v in (("file", file), ("path", path), ("url", url), ("text", text))
        if v is not None
    ]
    if len(given) != 1:
        found = ", ".join(given) if given else "none"
        raise ValueError(f"an artifact needs exactly one of file, path, url or text (got {found})")
    if isinstance(file, (str, os.PathLike)):
        raise TypeError(
            "add_artifact(file=...) takes bytes or a binary file object; for a local file "
            "use path=..."
        )
    if (
        file is not None
        and not isinstance(file, (bytes, bytearray, memoryview))
        and not callable(getattr(file, "read", None))
    ):
        raise TypeError(
            f"add_artifact(file=...) takes bytes or a binary file object, got {type(file).__name__}"
        )
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"add_artifact(path=...) takes a str or path, got {type(path).__name__}")
    if text is not None and not isinstance(text, str):
        raise TypeError(f"artifact text must be a str, got {type(text).__name__}")
    if url is not None:
        check_url(url)
    if filename is not None:
        check_filename(filename)
    if filename is not None and file is None and path is None:
        raise ValueError("filename is only meaningful with file= or path=")


def check_url(url: object) -> str:
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    url = url.strip()
    if len(url) > MAX_URL:
        raise ValueError(f"artifact url must be at most {MAX_URL} characters, got {len(url)}")
    if _UNSTORABLE.search(url) or any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError(f"artifact url must not contain control characters: {url!r}")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"artifact url must be an absolute http or https URL, got {url!r}")
    return url


def check_filename(filename: object) -> str:
    if not isinstance(filename, str):
        raise TypeError(f"filename must be a str, got {type(filename).__name__}")
    if (
        not filename
        or filename in (".", "..")
        or "/" in filename
        or "\\" in filename
        or any(ord(c) < 32 or ord(c) == 127 for c in filename)
        or _UNSTORABLE.search(filename)
        or len(filename) > 200
    ):
        raise ValueError(
            f"artifact filename must be a plain file name (no directories, '..', control "
            f"characters such as NUL, CR or LF, at most 200 characters), got {filename!r}"
        )
    return filename
