"""One reader of the change feed for all the asyncio followers of a tracker in an event loop.

A live page holds a stream open per browser tab. Were each stream to read the store itself,
every write would cost a query per open stream (each of them woken by PostgreSQL's NOTIFY) and
an idle stream a query per poll: the store's load would grow with the number of pages open.
Instead the followers of one tracker in one event loop share a :class:`Hub`, one task that
reads each change once and hands it to the followers whose filters (owners, a subtree) let it
through. A waiting follower costs the store nothing.

A follower joins without a gap: it subscribes first (from then on the hub keeps the changes
for it), waits for the hub to have a position, and only then reads what it missed since its
own position, from the store and under its own filters. The two overlap; its position drops
what it has already delivered (:meth:`Position.new <taskstatus.changes.Position.new>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING
from uuid import UUID

from .changes import Change
from .feed import PACE, PAGE, start

if TYPE_CHECKING:
    from .tracker import Tracker

__all__ = ["Hub", "Subscription"]

#: The running hubs, by tracker and event loop.
_HUBS: dict[tuple[int, asyncio.AbstractEventLoop], Hub] = {}


class Subscription:
    """What one follower receives from its hub: the changes its filters let through, kept
    until it takes them."""

    def __init__(self, owners: Sequence[str] | None, root: UUID | None, poll_interval: float):
        self.owners = None if owners is None else frozenset(owners)
        self.root = root
        self.poll_interval = poll_interval
        #: The subtree of ``root`` known so far; None until :meth:`enclose` (or for no root).
        self.inside: set[UUID] | None = None
        self.error: BaseException | None = None
        self._pending: dict[int, Change] = {}
        self._wake = asyncio.Event()

    def offer(self, changes: Sequence[Change]) -> None:
        """Keep those of ``changes`` (one read, oldest first) that pass the filters."""
        kept = [c for c in changes if self.owners is None or c.status.user_id in self.owners]
        if self.root is not None and self.inside is not None:
            kept = self._within(kept)
        for change in kept:  # a slow follower holds one change per row, the newest
            self._pending.pop(change.row, None)
            self._pending[change.row] = change
        if kept:
            self._wake.set()

    def enclose(self, subtree: set[UUID]) -> None:
        """Now that the subtree of ``root`` is known, keep only what belongs to it."""
        self.inside = subtree
        self._pending = {c.row: c for c in self._within(list(self._pending.values()))}

    def _within(self, changes: Sequence[Change]) -> list[Change]:
        # A new descendant's parent is in the subtree already, or in the same read: the store
        # cannot write a row before its parent (a foreign key), nor show it sooner.
        assert self.inside is not None
        parents = {c.status.uuid: c.status.parent_uuid for c in changes}
        kept = []
        for change in changes:
            chain: list[UUID] = []
            uuid: UUID | None = change.status.uuid
            while uuid is not None and uuid not in self.inside and len(chain) <= len(parents):
                chain.append(uuid)
                uuid = parents.get(uuid)
            if uuid is not None and uuid in self.inside:
                self.inside.update(chain)
                kept.append(change)
        return kept

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._wake.set()

    def take(self) -> list[Change]:
        """The changes kept so far (raising the hub's error, if it failed)."""
        if self.error is not None:
            raise self.error
        taken, self._pending = list(self._pending.values()), {}
        self._wake.clear()
        return taken

    async def wait(self, timeout: float) -> None:
        """Until there is something to take, or ``timeout`` seconds."""
        if not math.isfinite(timeout):
            await self._wake.wait()
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)


class Hub:
    """The reader shared by the subscriptions of one tracker in one event loop; it runs while
    it has any."""

    def __init__(self, tracker: Tracker, key: tuple[int, asyncio.AbstractEventLoop]) -> None:
        self.tracker = tracker
        self._key = key
        self.subscriptions: set[Subscription] = set()
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, tracker: Tracker) -> Hub:
        """The hub of ``tracker`` in the running loop (a new one when it has none)."""
        key = (id(tracker), asyncio.get_running_loop())
        hub = _HUBS.get(key)
        if hub is None:
            hub = _HUBS[key] = cls(tracker, key)
        return hub

    def subscribe(self, subscription: Subscription) -> None:
        self.subscriptions.add(subscription)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)
        if not self.subscriptions:
            self._end()

    async def joined(self, subscription: Subscription) -> None:
        """Once the hub has a position: from then on ``subscription`` misses nothing."""
        await self.ready.wait()
        if subscription.error is not None:
            raise subscription.error

    def _end(self) -> None:
        """Out of the registry at once (a new follower starts a new hub), and stop reading."""
        if _HUBS.get(self._key) is self:
            del _HUBS[self._key]
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    async def _run(self) -> None:
        import anyio.to_thread

        store = self.tracker.store
        try:
            position = await anyio.to_thread.run_sync(start, self.tracker, None)
            self.ready.set()
            signal = store.change_signal()
            while self.subscriptions:
                mark = signal.count if signal is not None else 0
                began = time.monotonic()
                changes = await anyio.to_thread.run_sync(store.changes, position, PAGE)
                for change in changes:
                    position = position.advanced(change)
                for subscription in list(self.subscriptions):
                    subscription.offer(changes)
                if len(changes) == PAGE or not self.subscriptions:
                    continue
                interval = min(s.poll_interval for s in self.subscriptions)
                if signal is not None:
                    await signal.wait_async(mark, interval)
                    interval = began + PACE - time.monotonic()
                await asyncio.sleep(max(0.0, interval))
        except Exception as exc:  # the store failed: every follower of the hub learns it
            for subscription in self.subscriptions:
                subscription.fail(exc)
        finally:
            self._end()
            self.ready.set()
