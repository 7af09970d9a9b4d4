"""Real ``celery worker`` processes on real brokers, sharing a real store with the test process.

A *cell* is one broker (Redis or RabbitMQ) and one store (SQLite, PostgreSQL or MariaDB) with a
private database, artifact folder and queue names. The ``cell`` fixture runs every test using it
on each of the four combinations of SQLite or PostgreSQL (the web tests add MariaDB), against
one prefork worker per combination; ``make_cell`` gives a test its own cell without a worker,
for tests that start, stop or kill workers themselves.
Results always go to Redis. On a failure the report shows the tail of each worker's log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import kombu
import pytest
from celery.utils.nodenames import gethostname

import taskstatus
from tests.conftest import private_store, require_server, show_on_failure
from tests.queue_celery.app import app
from tests.waiting import (  # noqa: F401  (re-exported for the test modules)
    TIMEOUT,
    error_texts,
    find,
    only_root,
    poll,
    settled,
    shape,
    uid,
    wait_failed,
    wait_retrying,
    wait_state,
)

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
CELERY = Path(sys.executable).with_name("celery")
REDIS_URL = os.environ.get("TASKSTATUS_TEST_REDIS", "redis://127.0.0.1:6379")
BROKER_URLS = {
    "redis": f"{REDIS_URL}/11",
    "rabbitmq": os.environ.get("TASKSTATUS_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//"),
}
#: The result backend of every cell: a Redis database apart from the broker's.
BACKEND_URL = f"{REDIS_URL}/12"
CELLS = [(b, s) for b in ("redis", "rabbitmq") for s in ("sqlite", "postgresql")]
#: The cells of the web tests, which also check the MariaDB store (``mysql``) under real
#: workers: by indirect parametrisation of ``cell``, so no other test runs on it.
WEB_CELLS = [*CELLS, ("redis", "mysql")]
#: Each store behind one broker, for web tests whose subject is the store's change feed.
STORE_CELLS = [("redis", s) for s in ("sqlite", "postgresql", "mysql")]
#: How often a running task writes its progress (and looks for a cancel request).
PROGRESS_INTERVAL = "0.1"

app.conf.result_backend = BACKEND_URL
#: Keys (``_kombu.<kind>.<queue>``) in which the Redis transport keeps a queue's bindings.
_BINDINGS = ("binding", "binding_permanent")
#: The test process's connection pools of each broker URL it has used.
_pools: dict[str, tuple[object, object]] = {}


# -- workers ---------------------------------------------------------------------------------------
class Worker:
    """A ``celery worker`` subprocess, leader of its own process group."""

    def __init__(self, env: dict[str, str], queue: str, log: Path, pool: str, concurrency: int):
        self.node = f"w{uuid.uuid4().hex[:8]}"
        self.hostname = f"{self.node}@{gethostname()}"
        self.log = log
        self._log_file = log.open("wb")
        command = [
            str(CELERY),
            "-A",
            "tests.queue_celery.app",
            "worker",
            "-Q",
            queue,
            "-n",
            f"{self.node}@%h",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while b" ready." not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"celery worker {self.node} did not start:\n{self.tail()}")
            time.sleep(0.1)

    def wait_log(self, text: str, timeout: float = TIMEOUT) -> None:
        """Wait until the worker has logged ``text``."""
        poll(
            lambda: text in self.log.read_text(errors="replace"),
            bool,
            f"{text!r} in the log",
            timeout,
        )

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def children(self) -> list[int]:
        """Pids of the worker's pool processes."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rpartition(")")[2].split()
                if int(fields[1]) == self.proc.pid:
                    pids.append(int(stat.parent.name))
        return pids

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown, no acknowledgement, nothing."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=TIMEOUT)

    def shut_down(self) -> None:
        """Ask for a warm shutdown (it takes a few seconds) without waiting for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """Warm shutdown, then SIGKILL for whatever is left of the group."""
        self.shut_down()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.kill()
        self._log_file.close()


# -- cells -----------------------------------------------------------------------------------------
class Cell:
    """One broker and one store shared by the test process and the workers it starts."""

    def __init__(self, broker: str, store_url: str, tmp: Path, broker_url: str | None = None):
        self.broker = broker
        self.broker_url = broker_url or BROKER_URLS[broker]
        self.store_url = store_url
        self.tmp = tmp
        self.artifacts = tmp / "artifacts"
        self.queues: list[str] = []
        self.queue = self.new_queue()
        self.workers: list[Worker] = []

    def new_queue(self) -> str:
        """A queue name no other test uses (deleted from the broker when the cell closes)."""
        name = f"ts-{uuid.uuid4().hex[:12]}"
        self.queues.append(name)
        return name

    def activate(self) -> None:
        """Point the test process (producer and reader) at this cell."""
        if app.conf.broker_url != self.broker_url:
            # Keep each broker's connection pools: kombu shares them by URL.
            _pools[app.conf.broker_url] = (app._pool, app.amqp._producer_pool)
            app._pool, app.amqp._producer_pool = _pools.get(self.broker_url, (None, None))
            app.conf.broker_url = self.broker_url
        app.conf.task_default_queue = self.queue
        tracker = taskstatus._default
        if tracker is None or tracker.settings.url != self.store_url:
            taskstatus.configure(
                url=self.store_url,
                artifact_storage=str(self.artifacts),
                progress_interval=float(PROGRESS_INTERVAL),
            )

    def start_worker(
        self,
        queue: str | None = None,
        *,
        pool: str = "prefork",
        concurrency: int = 2,
        env: Mapping[str, str] | None = None,
    ) -> Worker:
        """Start a worker consuming ``queue`` (default: the cell's) and wait until it is ready;
        ``env`` adds environment variables."""
        queue = queue or self.queue
        env = {
            **os.environ,
            **(env or {}),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "TS_TEST_BROKER": self.broker_url,
            "TS_TEST_BACKEND": BACKEND_URL,
            "TS_TEST_QUEUE": queue,
            "TS_TEST_STORE": self.store_url,
            "TS_TEST_ARTIFACTS": str(self.artifacts),
            "TS_TEST_PROGRESS_INTERVAL": PROGRESS_INTERVAL,
        }
        log = self.tmp / f"worker-{len(self.workers)}-{pool}.log"
        worker = Worker(env, queue, log, pool, concurrency)
        self.workers.append(worker)
        worker.wait_ready()
        return worker

    def running(self) -> set[str] | None:
        """Ids of the tasks the cell's live workers are executing; None unless all replied."""
        names = [w.hostname for w in self.workers if w.proc.poll() is None]
        replies = app.control.inspect(names, timeout=1.0).active() or {}
        if set(replies) != set(names):
            return None
        return {task["id"] for tasks in replies.values() for task in tasks}

    def wait_stopped(self, task_id: str, timeout: float = 10.0) -> None:
        """Wait until no worker of the cell is executing ``task_id`` any more."""
        poll(
            self.running,
            lambda ids: ids is not None and task_id not in ids,
            f"the workers to stop running {task_id}",
            timeout,
        )

    def queue_length(self, queue: str) -> int:
        """Messages waiting in ``queue`` (declares it, as Celery would)."""
        with kombu.Connection(self.broker_url) as conn:
            ok = conn.default_channel.queue_declare(queue=queue, durable=True, auto_delete=False)
            return int(ok.message_count)

    def close(self) -> None:
        for worker in self.workers:
            worker.shut_down()  # all at once
        for worker in self.workers:
            worker.stop()
        with kombu.Connection(self.broker_url) as conn:
            if self.broker == "redis":  # a queue is a list, plus the keys of its bindings
                keys = [(q, *(f"_kombu.{kind}.{q}" for kind in _BINDINGS)) for q in self.queues]
                conn.default_channel.client.delete(*(key for group in keys for key in group))
            else:
                for queue in self.queues:
                    conn.default_channel.queue_delete(queue)


@contextlib.contextmanager
def open_cell(broker: str, store: str, tmp: Path) -> Iterator[Cell]:
    """A cell with a new, empty store whose schema exists before any worker starts."""
    require_server("Redis", REDIS_URL)
    if broker == "rabbitmq":
        require_server("RabbitMQ", BROKER_URLS["rabbitmq"])
    with private_store(store, tmp) as url, contextlib.ExitStack() as stack:
        cell = Cell(broker, url, tmp)
        stack.callback(cell.close)
        cell.activate()  # creates the schema
        yield cell


def _watch(request: pytest.FixtureRequest, cell: Cell) -> None:
    """Show the logs of the cell's workers in this test's report if it fails."""
    show_on_failure(
        request, lambda: [(f"celery worker {w.node} log", w.tail()) for w in cell.workers]
    )


@pytest.fixture(scope="session")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, str], Cell]]:
    """``cells(broker, store)`` -> the session's cell of that kind, with one prefork worker.

    Cells are opened on first use and kept until the end of the session, so that tests of
    different cells may run in any order without restarting workers.
    """
    opened: dict[tuple[str, str], Cell] = {}
    with contextlib.ExitStack() as stack:

        def get(broker: str, store: str) -> Cell:
            if (broker, store) not in opened:
                tmp = tmp_path_factory.mktemp(f"{broker}-{store}")
                cell = stack.enter_context(open_cell(broker, store, tmp))
                cell.start_worker()
                opened[broker, store] = cell
            cell = opened[broker, store]
            cell.activate()
            return cell

        yield get
        for cell in opened.values():
            for worker in cell.workers:
                worker.shut_down()  # all at once


def cell_ids(cells: list[tuple[str, str]]) -> list[str]:
    return ["-".join(c) for c in cells]


@pytest.fixture(params=CELLS, ids=cell_ids(CELLS))
def cell(request: pytest.FixtureRequest, cells: Callable[[str, str], Cell]) -> Cell:
    """Each broker x store combination in turn, active in the test process."""
    cell = cells(*request.param)
    _watch(request, cell)
    return cell


@pytest.fixture
def one_cell(request: pytest.FixtureRequest, cells: Callable[[str, str], Cell]) -> Cell:
    """The Redis + SQLite cell, for tests whose subject does not depend on the combination."""
    cell = cells("redis", "sqlite")
    _watch(request, cell)
    return cell


@pytest.fixture
def make_cell(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[str, str], Cell]]:
    """``make_cell(broker, store)`` -> an active cell of this test alone, with no worker yet."""
    with contextlib.ExitStack() as stack:

        def make(broker: str, store: str) -> Cell:
            tmp = tmp_path / f"{broker}-{store}"
            tmp.mkdir()
            cell = stack.enter_context(open_cell(broker, store, tmp))
            _watch(request, cell)
            return cell

        yield make
