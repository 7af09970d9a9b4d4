"""Many processes opening one new, empty store at the same moment: exactly one creates the
schema, the others wait for it and start on it; none fails."""

from __future__ import annotations

import multiprocessing
import traceback
from pathlib import Path

import pytest

from taskstatus import Settings, State, Tracker

from .helpers import event

pytestmark = pytest.mark.timeout(300)

PROCESSES = 8


def _start(url: str, index: int, barrier: multiprocessing.synchronize.Barrier, out) -> None:
    try:
        barrier.wait(30)
        tracker = Tracker(Settings(url=url))
        tracker.open()
        task_id = f"first-{index}"
        tracker.lifecycle.publish(event(task_id, user_id="7"))
        tracker.lifecycle.end(tracker.lifecycle.start(event(task_id)))
        out.put((index, tracker.get_by_task_id(task_id).state.value))
        tracker.close()
    except BaseException:
        out.put((index, traceback.format_exc()))


def _start_together(url: str) -> list[str]:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(PROCESSES)
    out = ctx.Queue()
    processes = [ctx.Process(target=_start, args=(url, i, barrier, out)) for i in range(PROCESSES)]
    for process in processes:
        process.start()
    results = dict(out.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(30)
    return [results[i] for i in range(PROCESSES)]


def test_processes_starting_on_one_new_sqlite_file_all_start(tmp_path: Path) -> None:
    for trial in range(20):
        url = f"sqlite:///{tmp_path / f'new-{trial}.db'}"
        assert _start_together(url) == [State.SUCCEEDED.value] * PROCESSES, f"trial {trial}"


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_processes_starting_on_one_new_server_database_all_start(make_url, backend) -> None:
    for trial in range(3):
        url = make_url(backend)
        assert _start_together(url) == [State.SUCCEEDED.value] * PROCESSES, f"trial {trial}"
