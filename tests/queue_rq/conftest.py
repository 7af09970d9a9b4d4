"""RQ on a real Redis: jobs enqueued by the test process, run by real ``rq worker`` processes.

Each test gets its own queue (on Redis database 14) and a private store on SQLite and on
PostgreSQL (the web tests add MariaDB); ``work(...)`` runs a worker in burst mode (it exits
when the queue is empty), the forking ``taskstatus.queues.rq.Worker`` or ``SimpleWorker``;
``start(...)`` runs one until stopped.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue

import taskstatus
import taskstatus.queues.rq
from tests.conftest import private_store, require_server
from tests.waiting import TIMEOUT, uid  # noqa: F401  (fixture)
from tests.web.browser import browser, expect, screenshots  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[2]
RQ = Path(sys.executable).with_name("rq")
REDIS_URL = f"{os.environ.get('TASKSTATUS_TEST_REDIS', 'redis://127.0.0.1:6379')}/14"
WORKERS = {
    "fork": "taskstatus.queues.rq.Worker",
    "simple": "taskstatus.queues.rq.SimpleWorker",
    # The same, from a module that installs the Prometheus plugin when asked to.
    "fork+metrics": "tests.queue_rq.metrics_workers.Worker",
    "simple+metrics": "tests.queue_rq.metrics_workers.SimpleWorker",
}


@dataclass
class Cell:
    """One queue on Redis, one store, and the worker processes started for them."""

    queue: Queue
    store_url: str
    tmp: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: The Redis the workers take jobs from (the queue's).
    redis_url: str = REDIS_URL

    def _command(
        self, worker: str, burst: bool, extra_env: dict[str, str] | None = None
    ) -> tuple[list[str], dict[str, str]]:
        command = [str(RQ), "worker", "-w", WORKERS[worker], "--url", self.redis_url]
        command += ["--burst"] if burst else []
        command += [self.queue.name]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "TASKSTATUS_URL": self.store_url,
            "TASKSTATUS_ARTIFACT_STORAGE": str(self.tmp / "artifacts"),
            "TASKSTATUS_PROGRESS_INTERVAL": "0.1",
            **(extra_env or {}),
        }
        return command, env

    def work(self, worker: str = "fork", env: dict[str, str] | None = None) -> str:
        """Run a worker until the queue is empty (``env`` adds environment variables); its
        log."""
        command, env = self._command(worker, burst=True, extra_env=env)
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, timeout=TIMEOUT * 2, check=False
        )
        log = (done.stdout + done.stderr).decode(errors="replace")
        assert done.returncode == 0, log[-3000:]
        return log

    def start(
        self, worker: str = "fork", env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Run a worker until closed (``env`` adds environment variables)."""
        command, env = self._command(worker, burst=False, extra_env=env)
        log = (self.tmp / f"worker-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def children(proc: subprocess.Popen[bytes]) -> list[int]:
        """Pids of a worker's child processes (its work horse)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rpartition(")")[2].split()
                if int(fields[1]) == proc.pid:
                    pids.append(int(stat.parent.name))
        return pids

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.queue.empty()
        self.queue.delete()


#: The stores of the RQ tests; the web tests add MariaDB (``mysql``) by indirect
#: parametrisation of ``rq_cell``, so no other test runs on it.
STORES = ["sqlite", "postgresql"]
WEB_STORES = [*STORES, "mysql"]


@pytest.fixture(params=STORES)
def rq_cell(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cell]:
    require_server("Redis", REDIS_URL)
    taskstatus.queues.rq.install()
    with private_store(request.param, tmp_path) as url:
        tracker = taskstatus.configure(
            url=url, artifact_storage=str(tmp_path / "artifacts"), progress_interval=0.1
        )
        queue = Queue(f"ts-{uuid.uuid4().hex[:12]}", connection=Redis.from_url(REDIS_URL))
        cell = Cell(queue, url, tmp_path)
        try:
            yield cell
        finally:
            cell.close()
            tracker.close()


@pytest.fixture
def enqueue(rq_cell: Cell) -> Callable[..., object]:
    return rq_cell.queue.enqueue
