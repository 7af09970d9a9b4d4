"""prometheus_client values for a worker that forks a child per task, one child at a time
(RQ's forking ``Worker``): ``install(sequential_children=True)`` in :mod:`.prometheus`.

prometheus_client's multiprocess mode names its files after each process: a forked child opens
a set of its own and rebuilds every value of the metrics on its first write, 1-2 ms that a
worker forking per job pays on every job, leaving a set of files per job. Here the worker opens
its children's set once, and every child inherits it open, with the places of the values found
by the children before it. Each set has one writer at a time: the worker writes its own (its
threads one after another), the children theirs (one child after another; a child that would
write it while another still does gets a set of its own, see :class:`SequentialChildren`). So
a value is read from the file at each write instead of kept in memory, where the worker's copy
would not see its children's counts. The files keep prometheus_client's format, so its
``MultiProcessCollector`` reads them with everyone else's.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client.mmap_dict import mmap_key

__all__ = ["SequentialChildren"]

#: The header: bytes used (entries start at 8); each entry: key length, the key padded to a
#: multiple of 8 bytes counting the length, then value and timestamp.
_INT = struct.Struct("<i")
_DOUBLES = struct.Struct("<dd")
_INITIAL_SIZE = 1 << 16
#: A process id in shared memory.
_PID = struct.Struct("<q")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _create(path: str) -> int:
    """A new, empty file of values, sized and with its header before it shows under its
    name: a scrape, which reads every ``*.db`` file, never meets half of one."""
    draft = f"{path}.{os.getpid()}.draft"
    fd = os.open(draft, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, _INITIAL_SIZE)
        os.pwrite(fd, _INT.pack(8), 0)
        os.link(draft, path)
    except FileExistsError:  # made meanwhile by another process of the same owner
        os.close(fd)
        return os.open(path, os.O_RDWR)
    except BaseException:
        os.close(fd)
        raise
    finally:
        os.unlink(draft)
    return fd


class _File:
    """One file of values: prometheus_client's format, appended to by one process at a time."""

    def __init__(self, path: str) -> None:
        try:
            self._fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            self._fd = _create(path)
        self._map = mmap.mmap(self._fd, os.fstat(self._fd).st_size)
        self._used = 8
        self._positions: dict[str, int] = {}
        self.catch_up()

    def catch_up(self) -> None:
        """Learn the entries another process appended since this one last looked."""
        used = _INT.unpack_from(self._map, 0)[0]
        if used > len(self._map):
            self._map.close()
            self._map = mmap.mmap(self._fd, os.fstat(self._fd).st_size)
        pos = self._used
        while pos < used:
            length = _INT.unpack_from(self._map, pos)[0]
            key = bytes(self._map[pos + 4 : pos + 4 + length]).decode()
            pos += 4 + length + (8 - (length + 4) % 8)
            self._positions[key] = pos
            pos += 16
        self._used = used

    def position(self, key: str) -> int:
        """Where the value of ``key`` is, appending it (zero) if it is new."""
        pos = self._positions.get(key)
        if pos is None:
            self.catch_up()
            pos = self._positions.get(key)
        if pos is None:
            encoded = key.encode()
            entry = _INT.pack(len(encoded)) + encoded + b" " * (8 - (len(encoded) + 4) % 8)
            entry += _DOUBLES.pack(0.0, 0.0)
            end = self._used + len(entry)
            if end > len(self._map):
                size = len(self._map)
                while end > size:
                    size *= 2
                os.ftruncate(self._fd, size)
                self._map.close()
                self._map = mmap.mmap(self._fd, size)
            self._map[self._used : end] = entry
            self._map[0:4] = _INT.pack(end)  # after the entry: a reader never sees half of one
            pos = end - 16
            self._positions[key] = pos
            self._used = end
        return pos

    def read(self, pos: int) -> tuple[float, float]:
        value, timestamp = _DOUBLES.unpack_from(self._map, pos)
        return value, timestamp

    def write(self, pos: int, value: float, timestamp: float) -> None:
        # One slice assignment: a reader never sees a value half written.
        self._map[pos : pos + 16] = _DOUBLES.pack(value, timestamp)

    def zero_all(self) -> None:
        self.catch_up()
        for pos in self._positions.values():
            self.write(pos, 0.0, 0.0)


class _Children:
    """What a process keeps for its children: the name of their shared set of files, the pid
    of the child that writes it (in memory shared with them), and a lock file to decide it."""

    def __init__(self, directory: str) -> None:
        self.name = f"{os.getpid()}-child"
        self.writer = mmap.mmap(-1, _PID.size)  # anonymous: shared with the children
        _PID.pack_into(self.writer, 0, 0)
        self.lock_path = os.path.join(directory, f"{self.name}.lock")
        #: Opened before the first fork, inherited by the children.
        self.lock: int | None = None
        #: The children's files of live gauges, as the parent had them at the fork.
        self.live_gauges: list[_File] = []

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the POSIX lock on the lock file: held by a process (so not shared with the
        children that inherit the file), and dropped should that process die."""
        assert self.lock is not None
        fcntl.lockf(self.lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self.lock, fcntl.LOCK_UN)

    def free_if_ended(self, values: SequentialChildren) -> bool:
        """Whether no child writes the set now (with the lock held). If the last one has
        ended, its live gauges are stale (it may have been killed in the middle of a task):
        they are zeroed and the set freed. Counters and histograms carry on."""
        last = _PID.unpack_from(self.writer)[0]
        if not last:
            return True
        if _alive(last):
            return False
        for gauges in self.live_gauges or values.live_gauges_on_disk(self.name):
            gauges.zero_all()
        _PID.pack_into(self.writer, 0, 0)
        return True


class SequentialChildren:
    """The value class (prometheus_client's ``values.ValueClass``) of a worker process and of
    the children it forks one at a time.

    Each process writes one set of files, named after its owner: the worker its own
    (``<kind>_<pid>.db``); a child, at its first write, the set its parent keeps for its
    children (``<kind>_<parent pid>-child.db``) unless another child that counts still runs
    (then a set of its own, as prometheus_client would give it). So work horses forked one
    after another share one set, a child that never counts (RQ's scheduler process) takes
    nothing from them, and children that run side by side (``rq worker-pool``'s workers)
    never write one set together. Every process is in turn the worker of its own children.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._files: dict[tuple[str, str], _File] = {}
        #: The kinds of file the values of this process live in.
        self._kinds: set[str] = set()
        #: Whose files this process writes; None in a child until its first write.
        self._owner: str | None = str(os.getpid())
        #: What this process keeps for its children; in a child, also its parent's.
        self._children = _Children(directory)
        self._siblings: _Children | None = None
        os.register_at_fork(
            before=self._before_fork,
            after_in_parent=self._lock.release,
            after_in_child=self._after_fork_in_child,
        )

    def file(self, owner: str, kind: str) -> _File:
        found = self._files.get((owner, kind))
        if found is None:
            path = os.path.join(self.directory, f"{kind}_{owner}.db")
            found = self._files[(owner, kind)] = _File(path)
        return found

    def owner(self) -> str:
        """Whose files this process writes (with the lock held)."""
        owner = self._owner
        if owner is None:
            owner = self._owner = self._claim()
        return owner

    def _before_fork(self) -> None:
        self._lock.acquire()  # no write is ever caught halfway in the child
        # Get everything ready here, warm, rather than in each child, where every first touch
        # of memory costs: the children's files, open, up to date with what the last child
        # appended; and if that child has ended, its set free and its live gauges zeroed.
        children = self._children
        name = children.name
        for kind in self._kinds:
            self.file(name, kind).catch_up()
        children.live_gauges = [
            file
            for (owner, kind), file in self._files.items()
            if owner == name and kind.startswith("gauge_live")
        ]
        if children.lock is None:
            children.lock = os.open(children.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        with children.locked():
            children.free_if_ended(self)

    def _after_fork_in_child(self) -> None:
        # register_at_fork keeps the parent's lock; its twin in the child is released here.
        self._lock.release()
        self._siblings = self._children
        self._owner = None
        self._children = _Children(self.directory)

    def _claim(self) -> str:
        """A child's first write: the children's set of its parent, unless another child
        that counts into it still runs (then a set of its own)."""
        siblings = self._siblings
        assert siblings is not None
        with siblings.locked():
            if not siblings.free_if_ended(self):
                return str(os.getpid())
            _PID.pack_into(siblings.writer, 0, os.getpid())
        return siblings.name

    def live_gauges_on_disk(self, owner: str) -> list[_File]:
        """``owner``'s files of gauges that count live processes only (``livesum``...), as
        the directory has them."""
        suffix = f"_{owner}.db"
        return [
            self.file(owner, name.removesuffix(suffix))
            for name in os.listdir(self.directory)
            if name.startswith("gauge_live") and name.endswith(suffix)
        ]

    def value_class(self) -> type[Any]:
        """The class to set as ``prometheus_client.values.ValueClass``."""
        family = self

        class Value:
            """One value of a metric: found again in the file of each process that writes it."""

            _multiprocess = True

            def __init__(
                self,
                typ: str,
                metric_name: str,
                name: str,
                labelnames: Any,
                labelvalues: Any,
                help_text: str,
                multiprocess_mode: str = "",
                **kwargs: Any,
            ) -> None:
                self._kind = f"{typ}_{multiprocess_mode}" if typ == "gauge" else typ
                self._key = mmap_key(metric_name, name, labelnames, labelvalues, help_text)
                self._owner = ""
                self._file: _File | None = None
                self._pos = 0
                with family._lock:
                    family._kinds.add(self._kind)
                    self._place()  # a new value shows (as zero) from its creation

            def _place(self) -> _File:
                owner = family.owner()
                if owner != self._owner or self._file is None:
                    self._file = family.file(owner, self._kind)
                    self._pos = self._file.position(self._key)
                    self._owner = owner
                return self._file

            def inc(self, amount: float) -> None:
                with family._lock:
                    file = self._place()
                    file.write(self._pos, file.read(self._pos)[0] + amount, 0.0)

            def set(self, value: float, timestamp: float | None = None) -> None:
                with family._lock:
                    self._place().write(self._pos, value, timestamp or 0.0)

            def get(self) -> float:
                with family._lock:
                    return self._place().read(self._pos)[0]

            def set_exemplar(self, exemplar: Any) -> None:
                """Exemplars are not kept in multiprocess mode (as in prometheus_client)."""

            def get_exemplar(self) -> None:
                return None

        return Value
