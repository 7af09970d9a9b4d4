"""Dramatiq workers for the tests: in-process on a StubBroker, and real ``dramatiq`` processes.

``stub`` runs a test against an in-process ``dramatiq.Worker`` (2 threads) on a fresh
StubBroker, with the store on SQLite and PostgreSQL. ``cell`` runs it against a real
``dramatiq tests.queue_dramatiq.actors`` worker (2 processes of 2 threads) on Redis and RabbitMQ,
with the store on SQLite and PostgreSQL: one worker per combination for the whole session,
each with its own queue and private store. ``make_cell`` gives a test a worker of its own
(to kill it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import dramatiq
import pytest

import taskstatus
from tests.conftest import private_store, require_server, show_on_failure
from tests.queue_dramatiq import actors
from tests.waiting import TIMEOUT, poll, uid  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]
DRAMATIQ = Path(sys.executable).with_name("dramatiq")
REDIS_URL = os.environ.get("TASKSTATUS_TEST_REDIS", "redis://127.0.0.1:6379")
BROKER_URLS = {
    "redis": f"{REDIS_URL}/13",
    # pika spells the default virtual host "%2F" (kombu: "//").
    "rabbitmq": os.environ.get(
        "TASKSTATUS_TEST_RABBITMQ_PIKA", "amqp://guest:guest@127.0.0.1:5672/%2F"
    ),
}
CELLS = [(b, s) for b in ("redis", "rabbitmq") for s in ("sqlite", "postgresql")]


def use_store(url: str, tmp: Path) -> taskstatus.Tracker:
    """Point the test process's default tracker at ``url`` (its schema is made now)."""
    return taskstatus.configure(
        url=url, artifact_storage=str(tmp / "artifacts"), progress_interval=0.1
    )


# -- in-process --------------------------------------------------------------------------------
class Stub:
    """A StubBroker with an in-process worker."""

    def __init__(self) -> None:
        self.broker = actors.make_broker(None)
        actors.bind(self.broker)
        self.worker = dramatiq.Worker(self.broker, worker_threads=2, worker_timeout=50)
        self.worker.start()

    def join(self) -> None:
        """Wait until every message (retries included) has been processed."""
        self.broker.join(actors.QUEUE, timeout=int(TIMEOUT * 1000), fail_fast=False)
        self.worker.join()

    def close(self) -> None:
        self.worker.stop()
        actors.bind(actors.broker)


@pytest.fixture(params=["sqlite", "postgresql"])
def stub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stub]:
    with private_store(request.param, tmp_path) as url:
        tracker = use_store(url, tmp_path)
        stub = Stub()
        try:
            yield stub
        finally:
            stub.close()
            tracker.close()


# -- real worker processes ---------------------------------------------------------------------
class Cell:
    """One broker and one store, a queue of its own, and ``dramatiq`` worker processes."""

    def __init__(
        self, broker: str, store_url: str, tmp: Path, broker_url: str | None = None
    ) -> None:
        self.broker_name = broker
        self.broker_url = broker_url or BROKER_URLS[broker]
        self.store_url = store_url
        self.tmp = tmp
        self.queue = f"ts-{uuid.uuid4().hex[:12]}"
        self.broker = actors.make_broker(self.broker_url)
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_worker(
        self, env: Mapping[str, str] | None = None, args: Sequence[str] = ()
    ) -> subprocess.Popen[bytes]:
        """Start a worker (``env`` adds environment variables, ``args`` options of the
        ``dramatiq`` command) and wait until it is ready."""
        log = self.tmp / f"worker-{len(self.workers)}.log"
        env = {
            **os.environ,
            **(env or {}),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "TS_DQ_BROKER": self.broker_url,
            "TS_DQ_QUEUE": self.queue,
            "TS_DQ_STORE": self.store_url,
            "TS_DQ_ARTIFACTS": str(self.tmp / "artifacts"),
        }
        command = [str(DRAMATIQ), "tests.queue_dramatiq.actors"]
        command += ["--processes", "2", "--threads", "2", "--queues", self.queue, *args]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append(proc)
        poll(
            lambda: "ready for action" in log.read_text(errors="replace"),
            bool,
            f"dramatiq worker to start:\n{log.read_text(errors='replace')[-3000:]}",
        )
        return proc

    def activate(self) -> None:
        """Send to this cell's broker and queue, and read its store, from the test process."""
        actors.bind(self.broker, self.queue)
        tracker = taskstatus._default
        if tracker is None or tracker.settings.url != self.store_url:
            use_store(self.store_url, self.tmp)

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
            self.kill(proc)
        with contextlib.suppress(Exception):
            self.broker.flush(self.queue)
        self.broker.close()
        actors.bind(actors.broker)


@contextlib.contextmanager
def open_cell(broker: str, store: str, tmp: Path) -> Iterator[Cell]:
    require_server("Redis", REDIS_URL)
    if broker == "rabbitmq":
        require_server("RabbitMQ", BROKER_URLS["rabbitmq"])
    with private_store(store, tmp) as url:
        use_store(url, tmp)  # the schema exists before a worker starts
        cell = Cell(broker, url, tmp)
        try:
            yield cell
        finally:
            cell.close()


@pytest.fixture(scope="session")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, str], Cell]]:
    """One running cell per (broker, store), started on first use."""
    with contextlib.ExitStack() as stack:
        made: dict[tuple[str, str], Cell] = {}

        def get(broker: str, store: str) -> Cell:
            if (broker, store) not in made:
                tmp = tmp_path_factory.mktemp(f"dq-{broker}-{store}")
                cell = stack.enter_context(open_cell(broker, store, tmp))
                cell.start_worker()
                made[broker, store] = cell
            return made[broker, store]

        yield get


@pytest.fixture(params=CELLS, ids=["-".join(c) for c in CELLS])
def cell(request: pytest.FixtureRequest, cells: Callable[[str, str], Cell]) -> Cell:
    cell = cells(*request.param)
    cell.activate()
    return cell


@pytest.fixture
def make_cell(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[str, str], Cell]]:
    """A cell of the test's own, without a worker yet; its workers' logs show in the report
    of a failing test."""
    with contextlib.ExitStack() as stack:

        def make(broker: str, store: str) -> Cell:
            cell = stack.enter_context(open_cell(broker, store, tmp_path))
            cell.activate()
            show_on_failure(
                request,
                lambda: [
                    (f"dramatiq worker log {log.name}", log.read_text(errors="replace")[-5000:])
                    for log in sorted(cell.tmp.glob("worker-*.log"))
                ],
            )
            return cell

        yield make
