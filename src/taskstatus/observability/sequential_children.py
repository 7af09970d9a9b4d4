"""prometheus_client values for a worker that forks a child per task, one child at a time
(RQ's forking ``Worker``): ``install(sequential_children=True)`` in :mod:`.prometheus`.

prometheus_client's multiprocess mode names its files after each process: a forked child opens
a set of its own and rebuilds every value of the metrics on its first write, 1-2 ms that a
worker forking per job pays on every job, leaving a set of files per job. Here the worker opens
its children's set once, and every child inherits it open, with the places of the values found
by the children before it. Each set has one writer at a time: the worker writes its own (its
threads one after another), the children theirs (one child after another). So a value is read
from the file at each write instead of kept in memory, where the worker's copy would not see
its children's counts. The files keep prometheus_client's format, so its
``MultiProcessCollector`` reads them with everyone else's.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from typing import Any

from prometheus_client.mmap_dict import mmap_key

__all__ = ["SequentialChildren"]

#: The header: bytes used (entries start at 8); each entry: key length, the key padded to a
#: multiple of 8 bytes counting the length, then value and timestamp.
_INT = struct.Struct("<i")
_DOUBLES = struct.Struct("<dd")
_INITIAL_SIZE = 1 << 16


class _File:
    """One file of values: prometheus_client's format, appended to by one process at a time."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        size = os.fstat(self._fd).st_size
        if size == 0:
            os.ftruncate(self._fd, _INITIAL_SIZE)
            size = _INITIAL_SIZE
        self._map = mmap.mmap(self._fd, size)
        self._used = 8
        self._positions: dict[str, int] = {}
        if _INT.unpack_from(self._map, 0)[0] == 0:
            self._map[0:4] = _INT.pack(8)
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


class SequentialChildren:
    """The value class (prometheus_client's ``values.ValueClass``) of a worker process and of
    the children it forks one at a time, each set of files written by its owner only:
    ``<kind>_<worker pid>.db`` by the worker, ``<kind>_<worker pid>-child.db`` by its
    children. A child's own children (a task that forks) get a set of their own, as
    prometheus_client would give them.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.worker = os.getpid()
        self.child = f"{self.worker}-child"
        #: Whose files this process writes.
        self.owner = str(self.worker)
        self._lock = threading.Lock()
        self._files: dict[tuple[str, str], _File] = {}
        #: The kinds of file the values of this process live in.
        self._kinds: set[str] = set()
        #: In a child, until its first write: the children's live gauges need zeroing.
        self._stale_gauges = False
        os.register_at_fork(
            before=self._before_fork,
            after_in_parent=self._after_fork_in_parent,
            after_in_child=self._after_fork_in_child,
        )

    def file(self, owner: str, kind: str) -> _File:
        found = self._files.get((owner, kind))
        if found is None:
            path = os.path.join(self.directory, f"{kind}_{owner}.db")
            found = self._files[(owner, kind)] = _File(path)
        return found

    def _before_fork(self) -> None:
        self._lock.acquire()  # no write is ever caught halfway in the child
        if os.getpid() == self.worker:
            # No counting child runs now (the last one has ended): open the children's files
            # once, for every child to inherit, and take what the last child appended, so the
            # next one starts up to date.
            for kind in self._kinds:
                self.file(self.child, kind).catch_up()

    def _after_fork_in_parent(self) -> None:
        self._lock.release()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        if self.owner != str(self.worker):
            self.owner = str(os.getpid())  # a child's child: a set of its own
            return
        self.owner = self.child
        self._stale_gauges = True

    def _drop_stale_gauges(self) -> None:
        """At a child's first write. Nothing of the children runs before this one: a gauge the
        last child left (it was killed in the middle of a task) is stale; counters and
        histograms carry on. (Not at the fork: a child that never counts, such as RQ's
        scheduler process, may start while a work horse runs.)"""
        self._stale_gauges = False
        suffix = f"_{self.child}.db"
        for name in os.listdir(self.directory):
            if name.startswith("gauge_live") and name.endswith(suffix):
                self.file(self.child, name.removesuffix(suffix)).zero_all()

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
                owner = family.owner
                if owner != self._owner or self._file is None:
                    if family._stale_gauges:
                        family._drop_stale_gauges()
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
