"""Servers of a fault test's own: a PostgreSQL cluster and a redis-server on free loopback
ports, which the test stops and starts to play an outage. The shared servers are never touched.

Each is started from scratch in a temporary folder (PostgreSQL: ``initdb`` without fsync, trust
auth; Redis: nothing kept on disk, or every write in an append-only file) and removed when the
test ends.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..conftest import unavailable
from ..ports import free_port

__all__ = ["PrivatePostgres", "PrivateRedis", "free_port", "missing"]


def missing(program: str) -> str | None:
    """Why ``program`` cannot run here, or None."""
    if program == "postgres":
        return None if _pg_bin() is not None else "PostgreSQL's initdb/pg_ctl are not installed"
    return None if shutil.which(program) else f"{program} is not installed"


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _wait_for_port(port: int, up: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} still {'closed' if up else 'open'} after {timeout} s")


class PrivatePostgres:
    """A PostgreSQL cluster of one test. ``stop()`` shuts it down at once, dropping every
    connection (``mode="immediate"``: a crash, which loses the commits not yet flushed by
    sessions with ``synchronous_commit=off``, as taskstatus's are; see docs/storage.md);
    ``start()`` brings it back on the same port with the same data."""

    def __init__(self) -> None:
        bin_dir = _pg_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL's server programs are not installed")
        self._bin = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="taskstatus-pg-"))
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0  # the server refuses to run as root
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.folder / "data"), "-U", "postgres", "-A", "trust",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self._bin / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off "
            f"-c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.folder / "data"), "-l", str(self.folder / "log"),
            "-o", options, "-w", "-t", "30", "start",
        )  # fmt: skip
        _wait_for_port(self.port, up=True, timeout=30)

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", mode, "-w", "stop")
        _wait_for_port(self.port, up=False, timeout=30)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class PrivateRedis:
    """A redis-server of one test: ``stop()`` kills it (SIGKILL), ``start()`` starts it again
    on the same port: empty, or ``durable`` with every write it acknowledged (an append-only
    file synced at each write, as a broker that keeps its messages)."""

    def __init__(self, *, durable: bool = False) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None
        self.folder = Path(tempfile.mkdtemp(prefix="taskstatus-redis-")) if durable else None
        self.kills: list[int] = []

    def start(self) -> None:
        keep = (
            ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder)]
            if self.folder is not None
            else ["--appendonly", "no"]
        )
        self._process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", *keep, "--daemonize", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for_port(self.port, up=True, timeout=15)

    def stop(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(15)
            self._process = None
            if self.folder is not None:
                self.kills.append(len(self.commands()))
        _wait_for_port(self.port, up=False, timeout=15)

    def commands(self) -> list[list[bytes]]:
        """Every write a ``durable`` server acknowledged, in order, from its append-only
        files: what the broker itself did with each message (a read such as BRPOP is logged
        as the write it made, RPOP). ``kills`` holds how many were logged at each ``stop()``."""
        assert self.folder is not None, "only a durable server logs its writes"
        folder = self.folder / "appendonlydir"
        manifest = (folder / "appendonly.aof.manifest").read_text().split("\n")
        logged: list[list[bytes]] = []
        for entry in (line.split() for line in manifest if line):
            if dict(zip(entry[::2], entry[1::2], strict=True))["type"] == "i":
                logged.extend(_resp_arrays((folder / entry[1]).read_bytes()))
        return logged

    def remove(self) -> None:
        if self._process is not None:
            self.stop()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _resp_arrays(data: bytes) -> Iterator[list[bytes]]:
    """The commands of an append-only file: RESP arrays of bulk strings, one after another,
    up to the last one written whole (a running server may be writing the next)."""
    at = 0

    def header(kind: bytes) -> int:
        nonlocal at
        end = data.find(b"\r\n", at)
        if end < 0:
            raise EOFError
        assert data[at : at + 1] == kind, f"expected {kind!r} at byte {at}"
        value = int(data[at + 1 : end])
        at = end + 2
        return value

    while at < len(data):
        args = []
        try:
            for _ in range(header(b"*")):
                size = header(b"$")
                args.append(data[at : at + size])
                at += size + 2
        except EOFError:
            return
        if at > len(data):
            return
        yield args


def require(program: str) -> None:
    """Fail under CI, skip loudly elsewhere, when ``program`` cannot run here."""
    reason = missing(program)
    if reason is not None:
        unavailable(reason)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    require("postgres")
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@contextlib.contextmanager
def private_redis(*, durable: bool = False) -> Iterator[PrivateRedis]:
    require("redis-server")
    server = PrivateRedis(durable=durable)
    try:
        server.start()
        yield server
    finally:
        server.remove()
