"""The ``taskstatus`` command: inspect, cancel, delete and purge statuses, upgrade the schema.

It is an operator tool: it sees every owner's statuses and shows operator-only detail such as
failure tracebacks. Every error it knows about ends as one red line on stderr and exit code 1.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar
from uuid import UUID

import click
from alembic.util import CommandError
from click.core import ParameterSource
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from sqlalchemy import exc as sa_exc

from . import __version__
from .backends import migrate
from .backends.sqlalchemy import SQLAlchemyStore
from .display import STATE_STYLES
from .exceptions import StoreError, StoreUnavailable, TaskStatusError
from .models import Artifact, TaskStatus
from .settings import DEFAULT_URL, Settings, env_var, hide_password
from .store import ANY
from .tracker import Tracker

__all__ = [
    "Failure",
    "artifact_dict",
    "cli",
    "format_duration",
    "main",
    "parse_duration",
    "status_dict",
]

#: The public fields of a status, in display order (the contract's field list).
STATUS_FIELDS = (
    "uuid",
    "task_id",
    "queue",
    "task_class",
    "name",
    "user_id",
    "parent_uuid",
    "is_container",
    "state",
    "state_text",
    "completed_steps",
    "total_steps",
    "attempts",
    "created",
    "modified",
    "started_at",
    "finished_at",
)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNBOUNDED = 10_000
_UNIT_SECONDS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_F = TypeVar("_F", bound=Callable[..., Any])


class Failure(click.ClickException):
    """An error the operator can act on: one red line, no traceback."""

    def show(self, file: IO[Any] | None = None) -> None:
        message = " ".join(self.format_message().split())
        click.secho(f"Error: {message}", file=file, err=True, fg="red")


class _Group(click.Group):
    """Turns taskstatus's own errors, and invalid input (ids, states, durations, including
    ones too large for a date), into a Failure."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (TaskStatusError, ValueError, OverflowError) as exc:
            raise Failure(str(exc)) from exc


# -- plumbing ----------------------------------------------------------------------------------
def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Keep a store option given on the command line; one given after the command name is
    parsed last and so wins. The environment is read by :meth:`Settings.load`."""
    if ctx.get_parameter_source(param.name or "") is ParameterSource.COMMANDLINE:
        ctx.meta[f"taskstatus.{param.name}"] = value


_STORE_OPTIONS = (
    click.option(
        "--url",
        envvar=env_var("url"),
        show_envvar=True,
        metavar="URL",
        expose_value=False,
        callback=_remember,
        help=f"Store URL. [default: {DEFAULT_URL}]",
    ),
    click.option(
        "--artifact-storage",
        envvar=env_var("artifact_storage"),
        show_envvar=True,
        metavar="URL",
        expose_value=False,
        callback=_remember,
        help="fsspec URL of the artifact files (needed to delete them with their statuses).",
    ),
)


def _store_options(command: _F) -> _F:
    """``--url`` and ``--artifact-storage``, accepted before and after a command's name."""
    for option in reversed(_STORE_OPTIONS):
        command = option(command)
    return command


def _tracker() -> Tracker:
    """A tracker on the configured store, closed when the command ends.

    It is not opened: the read and write commands connect on first use, and ``db`` must see an
    outdated schema instead of being refused by it.
    """
    ctx = click.get_current_context()
    settings = Settings.load(
        url=ctx.meta.get("taskstatus.url"),
        artifact_storage=ctx.meta.get("taskstatus.artifact_storage"),
    )
    tracker = Tracker(settings)
    ctx.call_on_close(tracker.close)
    return tracker


def _recorded() -> Tracker:
    """A tracker on a store that taskstatus has written to, for the commands on statuses.

    They create nothing: a missing SQLite file or a database without taskstatus's tables most
    likely means a wrong URL, which creating them would hide.
    """
    tracker = _tracker()
    store = tracker.store
    if isinstance(store, SQLAlchemyStore):
        hint = "check the store URL (`taskstatus db upgrade` creates it)"
        missing = _missing_file(store)
        if missing:
            raise Failure(f"no database file {missing}; {hint}")
        with _sql_errors(store, "read"):
            empty = migrate.is_empty(store.engine)
        if empty:
            raise Failure(f"the database at {store.url} has no taskstatus schema; {hint}")
    return tracker


def _missing_file(store: SQLAlchemyStore) -> Path | None:
    file = store.database_file
    return file if file is not None and not file.exists() else None


@contextmanager
def _sql_errors(store: SQLAlchemyStore, doing: str) -> Iterator[None]:
    """Driver and Alembic errors, reported like the store reports its own."""
    try:
        yield
    except sa_exc.OperationalError as exc:
        raise StoreUnavailable(f"cannot reach the database at {store.url}: {exc.orig}") from exc
    except sa_exc.DBAPIError as exc:
        raise StoreError(f"cannot {doing} the database at {store.url}: {exc.orig}") from exc
    except CommandError as exc:
        raise StoreError(f"cannot {doing} the database at {store.url}: {exc}") from exc


def _print(*renderables: RenderableType) -> None:
    """Print to the stdout of the moment; piped output (grep, less, a file) is never cut or
    wrapped to fit an assumed 80 columns."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = _UNBOUNDED
    console.print(Group(*renderables))


def _echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=_json_value))


def _json_value(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s`` or a plain number of seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use e.g. 30d, 12h, 90m, 45s or seconds")
    amount, unit = match.groups()
    try:
        return timedelta(seconds=float(amount) * _UNIT_SECONDS[unit or "s"])
    except OverflowError:
        raise ValueError(f"duration {text!r} is too long") from None


def format_duration(age: timedelta) -> str:
    """The largest unit of :func:`parse_duration` that states ``age`` exactly: ``30d``."""
    seconds = age.total_seconds()
    unit = next(u for u, size in _UNIT_SECONDS.items() if seconds % size == 0 or u == "s")
    return f"{seconds / _UNIT_SECONDS[unit]:.15g}{unit}"


# -- rendering ---------------------------------------------------------------------------------
def status_dict(status: TaskStatus) -> dict[str, Any]:
    return {name: getattr(status, name) for name in STATUS_FIELDS}


def artifact_dict(artifact: Artifact) -> dict[str, Any]:
    return {
        "uuid": artifact.uuid,
        "name": artifact.name,
        "kind": _kind(artifact),
        "text": artifact.text,
        "url": artifact.url,
        "filename": artifact.filename,
        "created": artifact.created,
    }


def _kind(artifact: Artifact) -> str:
    if artifact.file is not None:
        return "file"
    return "url" if artifact.url is not None else "text"


def _state(status: TaskStatus) -> Text:
    return Text(status.state_text, style=STATE_STYLES[status.state])


def _progress(status: TaskStatus) -> str:
    done, total = status.completed_steps, status.total_steps
    if total <= 0:
        return f"{done}/{total}"
    return f"{done}/{total} ({100 * done // total}%)"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _status_table(statuses: Sequence[TaskStatus]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("uuid", no_wrap=True)
    for column in ("name", "owner", "state", "progress"):
        table.add_column(column)
    table.add_column("attempts", justify="right")
    table.add_column("created (UTC)")
    for s in statuses:
        table.add_row(
            str(s.uuid),
            Text(s.name),
            Text(s.user_id or "-"),
            _state(s),
            _progress(s),
            str(s.attempts),
            _when(s.created),
        )
    return table


def _heading(title: str) -> Text:
    return Text(f"\n{title}", style="bold")


def _field_table(status: TaskStatus) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for name, value in status_dict(status).items():
        if name == "state_text":
            table.add_row(name, _state(status))
        elif isinstance(value, datetime):
            table.add_row(name, f"{_when(value)} UTC")
        else:
            table.add_row(name, Text("-" if value is None else str(value)))
    return table


def _artifact_table(artifacts: Sequence[Artifact]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("name", "kind", "content"):
        table.add_column(column)
    for a in artifacts:
        table.add_row(Text(a.name), _kind(a), Text(a.text or a.url or a.filename or ""))
    return table


# -- commands ----------------------------------------------------------------------------------
@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@_store_options
@click.version_option(__version__, prog_name="taskstatus")
def cli() -> None:
    """Inspect and manage the statuses of background tasks.

    --url and --artifact-storage go before or after the command's name.
    """


@cli.command("list")
@click.option("--user", help="Only this owner's statuses.")
@click.option("--state", help='A state: "In Progress" or in_progress, failed, ...')
@click.option("--search", help="Text contained in the name (case-insensitive).")
@click.option("--parent", metavar="UUID", help="Only the children of this container.")
@click.option("--top-level", is_flag=True, help="Only statuses without a parent.")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_store_options
def list_(
    *,
    user: str | None,
    state: str | None,
    search: str | None,
    parent: str | None,
    top_level: bool,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List statuses, newest first."""
    if parent is not None and top_level:
        raise click.UsageError("--parent and --top-level exclude each other")
    tracker = _recorded()
    filters: dict[str, Any] = {
        "user_id": user,
        "state": state,
        "search": search,
        "parent": None if top_level else (parent or ANY),
    }
    statuses = tracker.statuses(**filters, limit=limit, offset=offset)
    if as_json:
        _echo_json([status_dict(s) for s in statuses])
    elif not statuses:
        total = tracker.count(**filters) if offset else 0
        click.echo(
            f"No task statuses at offset {offset} (matching: {total})."
            if total
            else "No task statuses match."
        )
    else:
        table = _status_table(statuses)
        table.caption = f"{len(statuses)} of {tracker.count(**filters)}, from offset {offset}"
        _print(table)


@cli.command()
@click.argument("uuid")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@_store_options
def show(uuid: str, as_json: bool) -> None:
    """Show every field of a status, its children, its artifacts and its traceback."""
    status = _recorded().get(uuid)
    children = status.children() if status.is_container else []
    artifacts = status.artifacts
    if as_json:
        data = status_dict(status)
        data["traceback"] = status.traceback
        data["children"] = [status_dict(c) for c in children]
        data["artifacts"] = [artifact_dict(a) for a in artifacts]
        _echo_json(data)
        return
    parts: list[RenderableType] = [_field_table(status)]
    if children:
        parts += [_heading("Children"), _status_table(children)]
    if artifacts:
        parts += [_heading("Artifacts"), _artifact_table(artifacts)]
    if status.traceback:
        parts += [_heading("Traceback"), Text(status.traceback.rstrip())]
    _print(*parts)


@cli.command()
@click.argument("uuid")
@click.option("--terminate", is_flag=True, help="Ask the queue to stop running work at once.")
@_store_options
def cancel(uuid: str, terminate: bool) -> None:
    """Cancel a status (a container's children too); finished work keeps its state."""
    status = _recorded().cancel(uuid, terminate=terminate)
    _print(Text.assemble(f"{status.uuid} {status.name}: ", _state(status)))


@cli.command()
@click.argument("uuid")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_store_options
def delete(uuid: str, yes: bool) -> None:
    """Delete a status with its children, artifacts and artifact files."""
    tracker = _recorded()
    status = tracker.get(uuid)
    label = f"{status.uuid} ({status.name})"
    if not yes:
        click.confirm(f"Delete {label} with its children and artifacts?", abort=True)
    tracker.delete(status)
    click.echo(f"Deleted {label}.")


@cli.command()
@click.option(
    "--older-than",
    metavar="DURATION",
    help="30d, 12h, 90m, 45s or seconds. [default: the max_age setting, TASKSTATUS_MAX_AGE]",
)
@_store_options
def purge(older_than: str | None) -> None:
    """Delete finished statuses created longer ago than DURATION; unfinished work stays."""
    tracker = _recorded()
    age = tracker.settings.max_age if older_than is None else parse_duration(older_than)
    deleted = tracker.purge(age)
    click.echo(f"Deleted {deleted} finished task status(es) older than {format_duration(age)}.")


@cli.group()
@_store_options
def db() -> None:
    """Manage the database schema of a SQL store."""


@contextmanager
def _sql_store() -> Iterator[SQLAlchemyStore]:
    """The configured SQL store, with driver errors reported like the store reports them."""
    store = _tracker().store
    if not isinstance(store, SQLAlchemyStore):
        raise Failure(f"the store at {store.url} has no SQL schema; `taskstatus db` needs SQL")
    with _sql_errors(store, "migrate"):
        yield store


@db.command()
@_store_options
def upgrade() -> None:
    """Migrate the schema to the newest revision (Alembic)."""
    with _sql_store() as store:
        before = migrate.current_revision(store.engine)
        migrate.upgrade(store.engine)
        after = migrate.current_revision(store.engine)
    note = " (already the newest)" if before == after else ""
    click.echo(f"Schema of {store.url}: {before or '(empty)'} -> {after}{note}")


@db.command()
@_store_options
def current() -> None:
    """Print the schema revision and the newest one; exit code 1 when an upgrade is needed."""
    with _sql_store() as store:
        missing = _missing_file(store)
        revision = None if missing else migrate.current_revision(store.engine)
    head = migrate.head_revision()
    found = f"(no database file {missing})" if missing else revision or "(empty)"
    click.echo(f"current: {found}\nhead:    {head}")
    if revision == head:
        click.echo("The schema is up to date.")
        return
    click.echo("The schema is not at the newest revision: run `taskstatus db upgrade`.")
    raise click.exceptions.Exit(1)


@cli.command()
@click.option("--user", default="demo", show_default=True, help="Owner of the sample tasks.")
@click.option(
    "--speed",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    help="Scale the sample tasks' sleeps (0.2 runs five times faster).",
)
@click.option(
    "--serve",
    "then_serve",
    is_flag=True,
    help="Then serve the dashboard on 127.0.0.1 until Ctrl-C (needs the extra 'web').",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8000,
    show_default=True,
    help="The dashboard's TCP port.",
)
@_store_options
def demo(user: str, speed: float, then_serve: bool, port: int) -> None:
    """Run sample tasks on an in-process Celery worker with live progress (no server needed).

    Uses Celery's in-memory broker and the configured store (by default sqlite:///taskstatus.db):
    a task with progress, a chain, a failing task and a task canceled while it runs.
    """
    try:
        from .demo import run_demo
    except ImportError as exc:
        raise Failure(
            f"the demo needs Celery: install the extra 'celery' (from a clone: "
            f"pip install -e '.[celery]') ({exc})"
        ) from exc
    if then_serve:
        _web_serve()  # before the demo runs, not after
    tracker = _tracker()
    tracker.open()
    run_demo(tracker, user_id=user, speed=speed)
    if then_serve:
        _serve(tracker, "127.0.0.1", port, None)
    else:
        url = hide_password(tracker.settings.url)
        options = ["--url", url]
        storage = click.get_current_context().meta.get("taskstatus.artifact_storage")
        options += ["--artifact-storage", storage] if storage else []
        command = f"taskstatus {shlex.join(options)} serve --port {port}"
        hidden = " (with the password for ***)" if url != tracker.settings.url else ""
        click.echo(
            f"See them in a browser: run `{command}`{hidden} and open http://127.0.0.1:{port}/"
        )


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="TCP port."
)
@click.option(
    "--token",
    envvar="TASKSTATUS_TOKEN",
    show_envvar=True,
    help="Callers must send 'Authorization: Bearer <token>' (browsers sign in with it); "
    "they see everything.",
)
@_store_options
def serve(host: str, port: int, token: str | None) -> None:
    """Serve the REST API (/api/v1/) and the dashboard (/) for operators.

    A caller with the token (or a browser signed in with it) is a superuser. Without a token
    every caller is, so it then listens on a loopback address only. Stop it with Ctrl-C.
    """
    token = token or None
    if token is None and not _web_serve().is_loopback(host):
        raise Failure(
            f"refusing to serve on {host} without a token: anyone reaching it would see and "
            f"cancel every task; set --token or TASKSTATUS_TOKEN, or listen on 127.0.0.1"
        )
    _serve(_recorded(), host, port, token)


def _web_serve() -> Any:
    """The web server's module, or a Failure naming the extra it needs."""
    try:
        from .web import serve as web_serve
    except ImportError as exc:
        raise Failure(
            f"serving needs the extra 'web' (pip install 'taskstatus[web]'; from a clone: "
            f"pip install -e '.[web]') ({exc})"
        ) from exc
    return web_serve


def _serve(tracker: Tracker, host: str, port: int, token: str | None) -> None:
    run = _web_serve().run
    address = f"[{host}]" if ":" in host else host
    click.echo(f"Serving the taskstatus REST API on http://{address}:{port}/api/v1/")
    click.echo(f"API description: http://{address}:{port}/api/v1/docs (Ctrl-C stops it)")
    if token is None:
        click.echo(f"Dashboard: http://{address}:{port}/")
        click.echo("No token: every local caller is an operator.")
    else:
        click.echo(f"Dashboard: http://{address}:{port}/ (sign in with the token)")
    run(tracker, host, port, token)
    click.echo("Stopped.")


def main() -> None:
    """Console script entry point."""
    cli(prog_name="taskstatus")
