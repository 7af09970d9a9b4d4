"""A plugin that shows, from real workers, what runs get from the lifecycle hooks.

It puts a value of its own in the carrier of each task published, and logs a line per run
hook to a file: the hook, the task id, the carrier's value that came back, and the process.
Workers load it when their test app finds the file's path in ``TS_TEST_PROBE_LOG``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import taskstatus
from tests.waiting import poll

#: The environment variable naming the log file of the workers' probe.
PROBE_LOG = "TS_TEST_PROBE_LOG"


def sent(task_id: str) -> str:
    """What the probe puts in the carrier of ``task_id``."""
    return f"from {task_id}"


class RunProbe:
    def __init__(self, log: str | os.PathLike[str]) -> None:
        self.log = Path(log)

    @taskstatus.hookimpl
    def taskstatus_publish(self, event: taskstatus.TaskEvent) -> None:
        if not event.is_container:
            event.carrier["probe"] = sent(event.task_id)

    def _write(self, hook: str, event: taskstatus.TaskEvent) -> None:
        line = json.dumps([hook, event.task_id, event.carrier.get("probe"), os.getpid()])
        with self.log.open("a") as log:  # one short append: whole lines from every process
            log.write(line + "\n")

    @taskstatus.hookimpl
    def taskstatus_prerun(self, event: taskstatus.TaskEvent) -> None:
        self._write("prerun", event)

    @taskstatus.hookimpl
    def taskstatus_postrun(self, event: taskstatus.TaskEvent) -> None:
        self._write("postrun", event)

    @taskstatus.hookimpl
    def taskstatus_succeed(self, event: taskstatus.TaskEvent) -> None:
        self._write("succeed", event)

    @taskstatus.hookimpl
    def taskstatus_fail(self, event: taskstatus.TaskEvent) -> None:
        self._write("fail", event)


def probe_from_env() -> list[RunProbe]:
    """The probe a worker's test app installs: one if the test asked for it."""
    log = os.environ.get(PROBE_LOG)
    return [RunProbe(log)] if log else []


@contextlib.contextmanager
def publishing(log: Path) -> Iterator[None]:
    """Fill the carrier of the tasks this process publishes in the block, as the workers'
    probe expects."""
    tracker = taskstatus.get_tracker()
    probe = RunProbe(log)
    tracker.register(probe)
    try:
        yield
    finally:
        tracker.pm.unregister(probe)


def runs(log: Path) -> dict[str, list[tuple[str, Any, int]]]:
    """(hook, carried value, pid) of each task id, in the order the hooks fired."""
    seen: dict[str, list[tuple[str, Any, int]]] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            hook, task_id, carried, pid = json.loads(line)
            seen.setdefault(task_id, []).append((hook, carried, pid))
    return seen


def wait_runs(
    log: Path, expected: Mapping[str, Sequence[str]]
) -> dict[str, list[tuple[str, Any, int]]]:
    """Wait until the hooks of each task id are ``expected``, in that order; check that each
    got the carrier the task's publish filled, and that prerun and postrun fired in one
    process. Returns what was seen."""
    seen = poll(
        lambda: runs(log),
        lambda now: all(
            [hook for hook, _, _ in now.get(task_id, [])] == list(hooks)
            for task_id, hooks in expected.items()
        ),
        f"the run hooks {dict(expected)}",
    )
    for task_id in expected:
        assert {carried for _, carried, _ in seen[task_id]} == {sent(task_id)}, seen[task_id]
        pids = {hook: pid for hook, _, pid in seen[task_id]}
        assert pids["prerun"] == pids["postrun"], seen[task_id]
    return seen
