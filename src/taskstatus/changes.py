"""Positions in the change feed of statuses: what a follower has seen, as an opaque string.

Why not ``modified > cursor``: ``modified`` is when a task's event happened by the clock of
the worker that saw it, and a worker writes its starts and successes in batches, late (longer
while the database refuses them). Transactions also commit out of order. A row can therefore
become visible with a ``modified`` older than rows a reader has already passed, and a plain
cursor would skip it, terminal states included.

So every write of a status row also stamps ``changed`` with the *database's* clock at the
moment the row is written, and counts the row's ``version`` (see ``backends/tables.py``). A row
is visible at most :data:`SETTLE` after its stamp (the rest of a short store transaction), so
a reader re-reads a window of :data:`SETTLE` behind the newest stamp it has seen and skips the
row versions it has already delivered. A :class:`Position` is that: the ``floor`` of the
window and the (row, version) pairs delivered within it. Nothing is missed, and a change is
delivered twice only when it is a newer version of the row, which shows its current state.

The window's assumption: no store write commits more than :data:`SETTLE` after it stamped a
row (the store's transactions are single statements or short batches), and, on SQLite, the
host's clock does not step back by more than that. PostgreSQL stamps a row when it writes it
(after any wait for its lock); MariaDB/MySQL stamp a statement when it starts, so there a
statement must also not wait longer than that for a row lock (the store's batches lock their
rows first, in a statement of their own).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from .models import TaskStatus

__all__ = ["SETTLE", "Change", "ChangeSignal", "Position"]

#: How long after its stamp a change may still become visible: the re-read window.
SETTLE = timedelta(seconds=5)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FORMAT = 1  # first byte of an encoded position, for later formats


@dataclass(frozen=True)
class Change:
    """A status as one write left it: its row (the store's key), the row's write count and
    the database time of that write."""

    status: TaskStatus
    row: int
    version: int
    changed: datetime


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class Position:
    """Where a follower is in the change feed; ``str()`` gives its URL-safe form and
    :meth:`parse` reads it back. ``Position()`` is the start: every status, as it is now."""

    #: Changes stamped before this are all delivered (None: nothing delivered yet).
    floor: datetime | None = None
    #: row -> (version, stamp) of the changes delivered at or after ``floor``.
    seen: dict[int, tuple[int, datetime]] = field(default_factory=dict, compare=False)

    @classmethod
    def at(cls, newest: datetime | None) -> Position:
        """A position whose window ends at ``newest``, nothing in it delivered."""
        return cls() if newest is None else cls(newest - SETTLE)

    def new(self, changes: Iterable[Change]) -> list[Change]:
        """Those of ``changes`` not yet delivered, in their order: at or after :attr:`floor`
        and newer than the version of their row delivered there."""
        return [
            c
            for c in changes
            if (self.floor is None or c.changed >= self.floor)
            and c.version > self.seen.get(c.row, (0, _EPOCH))[0]
        ]

    def advanced(self, change: Change, *, keep: datetime | None = None) -> Position:
        """The position once ``change`` is delivered too; ``keep``: the stamp of the oldest
        change read but held back, which the window must still cover."""
        floor = change.changed - SETTLE
        if keep is not None:
            floor = min(floor, keep)
        if self.floor is not None:
            floor = max(floor, self.floor)
        seen = {row: v for row, v in self.seen.items() if v[1] >= floor}
        if change.changed >= floor:  # else below the window: never read again anyway
            seen[change.row] = (change.version, change.changed)
        return Position(floor, seen)

    def __str__(self) -> str:
        data = bytearray([_FORMAT])
        if self.floor is None:
            _varint(data, 0)
            base = _EPOCH
        else:
            _varint(data, _micros(self.floor) + 1)
            base = self.floor
        for row, (version, changed) in sorted(self.seen.items()):
            _varint(data, row)
            _varint(data, version)
            _varint(data, _micros(changed) - _micros(base))
        return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode("ascii")

    @classmethod
    def parse(cls, text: str) -> Position:
        """Read back ``str(position)``; ValueError for anything else."""
        if not isinstance(text, str) or not text or len(text) > 65536:
            raise ValueError(f"not a change position: {text!r:.80}")
        try:
            data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            if not text.isascii() or "=" in text or data[0] != _FORMAT:
                raise ValueError
            numbers = _varints(data, 1)
            floor_us, entries = numbers[0], numbers[1:]
            if len(entries) % 3:
                raise ValueError
            floor = None if floor_us == 0 else _EPOCH + timedelta(microseconds=floor_us - 1)
            base = _EPOCH if floor is None else floor
            seen: dict[int, tuple[int, datetime]] = {}
            for i in range(0, len(entries), 3):
                row, version, offset = entries[i : i + 3]
                if version < 1 or row in seen:
                    raise ValueError
                seen[row] = (version, base + timedelta(microseconds=offset))
            return cls(floor, seen)
        except (ValueError, IndexError, OverflowError, binascii.Error):
            raise ValueError(f"not a change position: {text!r:.80}") from None


class ChangeSignal:
    """Wakes followers when a store knows that statuses changed (PostgreSQL's NOTIFY, the
    memory store's own writes). A follower notes :attr:`count` before it reads, then waits for
    it to move on, so a change signalled during the read is not slept through."""

    def __init__(self) -> None:
        self.count = 0
        self._cond = threading.Condition()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    def fire(self) -> None:
        with self._cond:
            self.count += 1
            self._cond.notify_all()
            waiters, self._waiters = self._waiters, set()
        for loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future)

    def wait(self, count: int, timeout: float) -> None:
        """Block until :attr:`count` is no longer ``count``, at most ``timeout`` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self.count != count, timeout)

    async def wait_async(self, count: int, timeout: float) -> None:
        """:meth:`wait` without a thread: the loop is woken by the signalling thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = (loop, future)
        with self._cond:
            if self.count != count:
                return
            self._waiters.add(waiter)
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._cond:
                self._waiters.discard(waiter)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError("negative")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _varints(data: Sequence[int], start: int) -> list[int]:
    values: list[int] = []
    value = shift = 0
    for byte in data[start:]:
        value |= (byte & 0x7F) << shift
        shift += 7
        if shift > 70:
            raise ValueError
        if not byte & 0x80:
            values.append(value)
            value = shift = 0
    if shift or not values:
        raise ValueError
    return values
