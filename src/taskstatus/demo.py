"""``taskstatus demo``: sample tasks on an in-process Celery worker, with live progress.

Everything is embedded: the store is the tracker's (SQLite by default), Celery uses its
in-memory broker and a worker thread pool inside this process. The tasks show what a web page
would: progress, a chain, a failure with its Error artifact, and a task canceled while running.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from uuid import UUID

from celery import Celery, chain
from celery.contrib.testing.worker import start_worker
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

import taskstatus
from taskstatus.queues import celery as ts_celery

from .display import STATE_STYLES
from .models import State, TaskStatus
from .tracker import Tracker

__all__ = ["run_demo"]


def _make_app(tracker: Tracker, speed: float) -> tuple[Celery, dict[str, object]]:
    app = Celery("taskstatus_demo", broker="memory://", backend="cache+memory://")
    app.conf.update(
        task_default_queue="taskstatus-demo",
        worker_hijack_root_logger=False,
        broker_transport_options={"polling_interval": 0.05},
    )
    ts_celery.install(app, tracker=tracker)

    @taskstatus.track(name="Export course {course}", total_steps=lambda a: a["rows"])
    @app.task(bind=True)  # type: ignore[untyped-decorator]
    def export(self: object, user_id: int, course: str, rows: int) -> str:
        status = taskstatus.current()
        lines = ["id,grade"]
        for i in range(rows):
            time.sleep(0.04 * speed)
            lines.append(f"{i},{(i * 7) % 100}")
            status.increment_completed_steps()
        status.add_artifact(file="\n".join(lines).encode(), filename=f"{course}.csv")
        return f"{rows} rows"

    @taskstatus.track(name="{stage} catalog", total_steps=lambda a: a["steps"])
    @app.task  # type: ignore[untyped-decorator]
    def pipeline_step(previous: object, user_id: int, stage: str, steps: int) -> str:
        status = taskstatus.current()
        status.set_state(f"{stage}ing")
        for _ in range(steps):
            time.sleep(0.05 * speed)
            status.increment_completed_steps()
        return stage

    @taskstatus.track(name="Import grades from {filename}", total_steps=20)
    @app.task  # type: ignore[untyped-decorator]
    def import_grades(user_id: int, filename: str) -> None:
        status = taskstatus.current()
        for i in range(20):
            time.sleep(0.05 * speed)
            if i == 12:
                raise ValueError(f"{filename}, line {i + 2}: grade 'A+' is not a number")
            status.increment_completed_steps()

    @taskstatus.track(name="Rebuild search index", total_steps=200)
    @app.task  # type: ignore[untyped-decorator]
    def rebuild_index(user_id: int) -> None:
        status = taskstatus.current()
        for _ in range(200):
            time.sleep(0.03 * speed)
            status.increment_completed_steps()

    tasks: dict[str, object] = {
        "export": export,
        "step": pipeline_step,
        "import": import_grades,
        "rebuild": rebuild_index,
    }
    return app, tasks


def _progress_view(statuses: Sequence[TaskStatus]) -> Progress:
    progress = Progress(
        TextColumn("{task.description}", justify="left"),
        BarColumn(bar_width=30),
        TaskProgressColumn(),
        TextColumn("{task.fields[state]}"),
    )
    for s in statuses:
        style = STATE_STYLES[s.state]
        progress.add_task(
            f"{s.name} [dim]({s.task_class})[/]" if s.is_container else s.name,
            total=max(s.total_steps, 1),
            completed=min(s.completed_steps, max(s.total_steps, 1)),
            state=f"[{style}]{s.state_text}[/]",
        )
    return progress


def _final_table(tracker: Tracker, statuses: Sequence[TaskStatus]) -> Table:
    table = Table(title="Demo tasks", show_lines=False)
    for column in ("Task", "State", "Steps", "Attempts", "Artifacts"):
        table.add_column(column)
    for s in statuses:
        artifacts = ", ".join(
            f"{a.name}: {a.text or a.url or a.filename}" for a in tracker.artifacts(s)
        )
        table.add_row(
            s.name,
            f"[{STATE_STYLES[s.state]}]{s.state_text}[/]",
            f"{s.completed_steps}/{s.total_steps}",
            str(s.attempts),
            artifacts or "-",
        )
    return table


def run_demo(
    tracker: Tracker,
    *,
    user_id: str = "demo",
    speed: float = 1.0,
    console: Console | None = None,
    timeout: float = 120.0,
) -> list[TaskStatus]:
    """Run the sample tasks on an in-process worker; return their final top-level statuses."""
    console = console or Console()
    app, tasks = _make_app(tracker, speed)
    export, step, import_grades, rebuild = (
        tasks["export"],
        tasks["step"],
        tasks["import"],
        tasks["rebuild"],
    )
    with (
        _quiet_task_failures(),
        start_worker(
            app, pool="threads", concurrency=4, perform_ping_check=False, shutdown_timeout=30.0
        ),
    ):
        ids = [
            export.delay(user_id, "math-101", 60).id,  # type: ignore[attr-defined]
            chain(
                step.s(None, user_id, "Extract", 10),  # type: ignore[attr-defined]
                step.s(user_id, "Transform", 15),  # type: ignore[attr-defined]
                step.s(user_id, "Load", 10),  # type: ignore[attr-defined]
            )
            .apply_async(headers={ts_celery.NAME_HEADER: "Nightly catalog sync"})
            .parent.parent.id,
            import_grades.delay(user_id, "grades.csv").id,  # type: ignore[attr-defined]
            rebuild.delay(user_id).id,  # type: ignore[attr-defined]
        ]
        roots = [_root(tracker, tracker.get_by_task_id(task_id)) for task_id in ids]
        rebuild_status = tracker.get_by_task_id(ids[3])
        started = time.monotonic()
        reported: set[UUID] = set()
        with Live(console=console, refresh_per_second=10, transient=False) as live:
            while True:
                current = [tracker.get(uuid) for uuid in roots]
                live.update(_progress_view(current))
                for s in current:
                    if s.state is State.FAILED and s.uuid not in reported:
                        reported.add(s.uuid)
                        live.console.print(_failure_line(tracker, s))
                rebuild_status.refresh()
                if rebuild_status.state is State.IN_PROGRESS and rebuild_status.completed_steps:
                    rebuild_status.cancel()  # what a user's Cancel button does
                if all(s.is_terminal for s in current):
                    break
                if time.monotonic() - started > timeout:
                    raise TimeoutError("the demo tasks did not finish in time")
                time.sleep(0.1)
    final = [tracker.get(uuid) for uuid in roots]
    console.print()
    console.print(_final_table(tracker, final))
    console.print(
        f"Statuses are stored in [bold]{tracker.store.url}[/]: try "
        "[bold]taskstatus list[/] and [bold]taskstatus show <uuid>[/]."
    )
    return final


@contextmanager
def _quiet_task_failures() -> Iterator[None]:
    """Keep the worker's log of a failed task (with its traceback) out of the demo's
    output, which shows the failure itself."""
    logger = logging.getLogger("celery.app.trace")
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


def _failure_line(tracker: Tracker, status: TaskStatus) -> str:
    errors = [a.text for a in tracker.artifacts(status) if a.name == "Error" and a.text]
    reason = f": {errors[0]}" if errors else ""
    return f"[{STATE_STYLES[status.state]}]{status.name} failed{reason}[/]"


def _root(tracker: Tracker, status: TaskStatus) -> UUID:
    """The top-level container of a status (its chain), or the status itself."""
    while status.parent_uuid is not None:
        status = tracker.get(status.parent_uuid)
    return status.uuid
