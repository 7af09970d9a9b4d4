"""Following the changes of statuses, written by any process: the ground of live events.

:func:`follow` (and :func:`follow_async` for an ASGI app) reads the store's change feed from a
position (see :mod:`taskstatus.changes` for why it is sound when workers write late and out of
order), waits between reads — on PostgreSQL for a NOTIFY from the store's writes, elsewhere
for ``poll_interval`` — and yields an :class:`Update` per change: the status and the position
after it, a URL-safe string to resume from (an SSE ``id:``).

A fast-ticking status is coalesced: at most one update per ``min_interval`` for each status;
a newer change replaces one held back, and a terminal state goes out at once. A position
yielded never covers a change still held back, so resuming from it loses nothing.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from .changes import Change, Position
from .models import TERMINAL_STATES, TaskStatus

if TYPE_CHECKING:
    from .tracker import Tracker

__all__ = ["Update", "follow", "follow_async"]

#: Changes read per store query.
PAGE = 500
#: Shortest time between two reads of a follower: on a busy store every write wakes every
#: follower of the process, which would otherwise read as often.
PACE = 0.1


@dataclass(frozen=True)
class Update:
    """One change delivered: the status as it is, and the position just after it."""

    status: TaskStatus
    position: str


class Follower:
    """The state of one follower, without I/O: what was read, held back and delivered."""

    def __init__(self, after: Position, min_interval: float) -> None:
        self.read = after  # the next store read starts here
        self.sent = after  # what the updates given out cover
        self.min_interval = min_interval
        self.held: dict[UUID, Change] = {}  # the newest change of each status not yet given
        self._last_given: dict[UUID, float] = {}

    def take(self, changes: Sequence[Change]) -> None:
        for change in changes:
            self.read = self.read.advanced(change)
            self.held[change.status.uuid] = change

    def due(self, now: float) -> list[Change]:
        """The held changes to give out now, oldest first; the others stay held."""
        ready = [
            c
            for uuid, c in self.held.items()
            if c.status.state in TERMINAL_STATES
            or now - self._last_given.get(uuid, -math.inf) >= self.min_interval
        ]
        ready.sort(key=lambda c: (c.changed, c.row))
        for change in ready:
            del self.held[change.status.uuid]
            self._last_given[change.status.uuid] = now
        self._last_given = {
            u: t for u, t in self._last_given.items() if now - t < self.min_interval
        }
        return ready

    def give(self, change: Change) -> str:
        """The position after ``change``, still covering every change held back."""
        keep = min((c.changed for c in self.held.values()), default=None)
        self.sent = self.sent.advanced(change, keep=keep)
        return str(self.sent)

    def wait(self, now: float, poll_interval: float) -> float:
        """How long to wait for the next change or the next held change to fall due."""
        due = [self._last_given.get(u, now) + self.min_interval for u in self.held]
        return max(0.0, min([now + poll_interval, *due]) - now)


def start(
    tracker: Tracker,
    after: str | Position | None,
    user_ids: list[str] | None = None,
    root: UUID | None = None,
) -> Position:
    """``after`` as a position: None is "from now on" for a stream of these filters;
    ValueError for a bad string."""
    if isinstance(after, Position):
        return after
    if after is not None:
        return Position.parse(after)
    tracker.recorder.drain()
    position = Position.at(tracker.store.last_changed())
    # Mark the window behind "now" delivered: from now on means changes not yet made. Only
    # the stream's own: a position keeps what it delivered until its window passes it.
    while changes := tracker.store.changes(position, PAGE, user_ids=user_ids, root=root):
        for change in changes:
            position = position.advanced(change)
    return position


def _step(
    tracker: Tracker,
    follower: Follower,
    user_ids: list[str] | None,
    root: UUID | None,
    clock: Callable[[], float],
) -> tuple[bool, list[Update]]:
    """One store read into ``follower``, and the updates now due; whether the page was full
    (more to read at once)."""
    changes = tracker.store.changes(follower.read, PAGE, user_ids=user_ids, root=root)
    follower.take(changes)
    due = follower.due(clock())
    statuses = tracker._bind([c.status for c in due])
    updates = [Update(s, follower.give(c)) for s, c in zip(statuses, due, strict=True)]
    return len(changes) == PAGE, updates


def owner_ids(user_id: object) -> list[str] | None:
    if user_id is None:
        return None
    if isinstance(user_id, (list, tuple, set, frozenset)):
        return [str(u) for u in user_id]
    return [str(user_id)]


def follow(
    tracker: Tracker,
    after: str | Position | None = None,
    *,
    user_id: object = None,
    root: UUID | None = None,
    poll_interval: float = 1.0,
    min_interval: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Update]:
    """Updates of the statuses changed after ``after`` (None: from this call on), forever.

    ``user_id``: one owner or a list of owners (None: everyone's); ``root``: a status and its
    descendants only. Close the iterator to stop."""
    owners = owner_ids(user_id)
    follower = Follower(start(tracker, after, owners, root), min_interval)
    return _follow(tracker, follower, owners, root, poll_interval, clock)


def _follow(
    tracker: Tracker,
    follower: Follower,
    owners: list[str] | None,
    root: UUID | None,
    poll_interval: float,
    clock: Callable[[], float],
) -> Iterator[Update]:
    signal = tracker.store.change_signal()
    while True:
        mark = signal.count if signal is not None else 0
        began = clock()
        more, updates = _step(tracker, follower, owners, root, clock)
        yield from updates
        if more:
            continue
        pause = follower.wait(clock(), poll_interval)
        if signal is not None:
            signal.wait(mark, pause)
            pause = began + PACE - clock()
        time.sleep(max(0.0, pause))


async def follow_async(
    tracker: Tracker,
    after: str | Position | None = None,
    *,
    user_id: object = None,
    root: UUID | None = None,
    poll_interval: float = 1.0,
    min_interval: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[Update]:
    """:func:`follow` for asyncio. The followers of a tracker in one event loop share one
    reader of the store (:class:`taskstatus.fanout.Hub`): a waiting follower holds no thread
    and costs no query, and the store's load does not grow with their number. Store reads
    run in a worker thread. ``after=None``: from the first iteration on."""
    import anyio.to_thread

    from .fanout import Hub, Subscription

    owners = owner_ids(user_id)
    hub = Hub.of(tracker)
    subscription = Subscription(owners, root, poll_interval)
    hub.subscribe(subscription)
    try:
        await hub.joined(subscription)
        position = await anyio.to_thread.run_sync(start, tracker, after, owners, root)
        if root is not None:
            subscription.enclose(await anyio.to_thread.run_sync(subtree, tracker, root))
        follower = Follower(position, min_interval)
        more = True
        while more:  # what was written before the hub's position, from the store
            more, updates = await anyio.to_thread.run_sync(
                _step, tracker, follower, owners, root, clock
            )
            for update in updates:
                yield update
        while True:  # then what the hub reads
            follower.take(follower.read.new(subscription.take()))
            due = follower.due(clock())
            if due:
                statuses = [copy.copy(c.status) for c in due]
                if any(s.is_container for s in statuses):
                    statuses = await anyio.to_thread.run_sync(tracker._bind, statuses)
                else:
                    statuses = tracker._bind(statuses)
                for status, change in zip(statuses, due, strict=True):
                    yield Update(status, follower.give(change))
            await subscription.wait(follower.wait(clock(), math.inf))
    finally:
        hub.unsubscribe(subscription)


def subtree(tracker: Tracker, root: UUID) -> set[UUID]:
    """The uuids of ``root`` and its descendants, as the store has them now."""
    found, position = {root}, Position()
    while True:
        changes = tracker.store.changes(position, PAGE, root=root)
        for change in changes:
            position = position.advanced(change)
            found.add(change.status.uuid)
        if len(changes) < PAGE:
            return found


def changes_after(
    tracker: Tracker,
    after: str | Position | None,
    limit: int,
    user_id: object,
    root: UUID | None,
) -> list[Update]:
    """Every change after ``after`` (None: from the start), up to ``limit``, uncoalesced."""
    if type(limit) is not int or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    position = Position() if after is None else start(tracker, after)
    tracker.recorder.drain()
    changes = tracker.store.changes(position, limit, user_ids=owner_ids(user_id), root=root)
    statuses = tracker._bind([c.status for c in changes])
    updates = []
    for status, change in zip(statuses, changes, strict=True):
        position = position.advanced(change)
        updates.append(Update(status, str(position)))
    return updates
