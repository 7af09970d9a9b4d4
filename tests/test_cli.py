"""The ``taskstatus`` command line, against real databases."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

import taskstatus
from taskstatus import NotFound, State, TaskStatus, Tracker
from taskstatus.backends import migrate
from taskstatus.backends.sqlalchemy import SQLAlchemyStore
from taskstatus.backends.tables import VERSION_TABLE
from taskstatus.cli import cli, format_duration, parse_duration

from .helpers import event, publish

Run = Callable[..., Result]

#: The environment must not leak into what the tests expect.
CLEAN_ENV: dict[str, str | None] = {
    "TASKSTATUS_URL": None,
    "TASKSTATUS_MAX_AGE": None,
    "TASKSTATUS_ARTIFACT_STORAGE": None,
    "FORCE_COLOR": None,
    "NO_COLOR": None,
}

NIL = "00000000-0000-0000-0000-000000000000"
UNREACHABLE = ["postgresql://postgres@127.0.0.1:1/test", "mysql://root@127.0.0.1:1/test"]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """``run(url, *args, input=None, color=False)``, with make_tracker's artifact storage."""
    runner = CliRunner(env=CLEAN_ENV)

    def invoke(url: str, *args: str, input: str | None = None, color: bool = False) -> Result:
        storage = str(tmp_path / "artifacts")
        argv = ["--url", url, "--artifact-storage", storage, *args]
        return runner.invoke(cli, argv, input=input, color=color)

    return invoke


@pytest.fixture
def sqlite_tracker(make_url: Callable[[str], str], make_tracker: Callable[..., Tracker]) -> Tracker:
    return make_tracker(make_url("sqlite"))


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result.stdout


def fails(result: Result, message: str) -> str:
    """The one line of an error; no traceback, nothing on stdout."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert message in lines[0]
    return lines[0]


def row_of(output: str, status: TaskStatus) -> str:
    [line] = [line for line in output.splitlines() if str(status.uuid) in line]
    return line


def fail_task(tracker: Tracker, task_id: str, message: str) -> None:
    live = tracker.lifecycle.start(event(task_id))
    try:
        raise RuntimeError(message)
    except RuntimeError as exc:
        tracker.lifecycle.end(live, exception=exc)


def succeed_task(tracker: Tracker, task_id: str) -> None:
    tracker.lifecycle.end(tracker.lifecycle.start(event(task_id)))


# -- list ---------------------------------------------------------------------------------------
@pytest.fixture
def filled(sql_tracker: Tracker) -> Tracker:
    publish(sql_tracker, "e1", user_id="7", name="Export course 1", total_steps=4)
    publish(sql_tracker, "i1", user_id="7", name="Import grades")
    publish(sql_tracker, "e2", user_id="8", name="export grades")
    publish(sql_tracker, "g", user_id="7", name="Nightly", container="taskstatus.group")
    publish(sql_tracker, "g1", user_id="7", name="Nightly part", parent="g")
    live = sql_tracker.lifecycle.start(event("e1"))
    live.increment_completed_steps(1)
    sql_tracker.lifecycle.end(live, exception=RuntimeError("flaky"), retrying=True)
    live = sql_tracker.lifecycle.start(event("e1"))
    live.increment_completed_steps(1)
    live.flush()
    return sql_tracker


def listed(run: Run, tracker: Tracker, *args: str) -> list[str]:
    data = json.loads(ok(run(tracker.settings.url, "list", "--json", *args)))
    return [item["task_id"] for item in data]


def test_list_table_newest_first_with_progress_owner_and_attempts(
    run: Run, filled: Tracker
) -> None:
    out = ok(run(filled.settings.url, "list"))
    rows = [filled.get_by_task_id(t) for t in ("g1", "g", "e2", "i1", "e1")]
    positions = [out.index(str(s.uuid)) for s in rows]
    assert positions == sorted(positions)
    e1 = rows[-1]
    assert e1.created is not None
    assert row_of(out, e1).split() == [
        str(e1.uuid),
        *("Export", "course", "1"),
        "7",
        *("In", "Progress"),
        *("1/4", "(25%)"),
        "2",
        *e1.created.strftime("%Y-%m-%d %H:%M:%S").split(),
    ]
    assert row_of(out, rows[2]).split()[1:5] == ["export", "grades", "8", "Pending"]
    assert "5 of 5" in out


def test_list_progress_percent(run: Run, sql_tracker: Tracker) -> None:
    publish(sql_tracker, "p", total_steps=8)
    live = sql_tracker.lifecycle.start(event("p"))
    live.increment_completed_steps(3)
    live.flush(final=True)
    out = ok(run(sql_tracker.settings.url, "list"))
    assert "3/8 (37%)" in row_of(out, sql_tracker.get_by_task_id("p"))


def test_list_filters(run: Run, filled: Tracker) -> None:
    g = filled.get_by_task_id("g")
    assert listed(run, filled, "--user", "8") == ["e2"]
    assert listed(run, filled, "--state", "In Progress") == ["e1"]
    assert listed(run, filled, "--state", "in_progress") == ["e1"]
    assert listed(run, filled, "--state", "pending") == ["g1", "g", "e2", "i1"]
    assert listed(run, filled, "--search", "GRADES") == ["e2", "i1"]
    assert listed(run, filled, "--parent", str(g.uuid)) == ["g1"]
    assert listed(run, filled, "--top-level") == ["g", "e2", "i1", "e1"]
    assert listed(run, filled, "--limit", "2") == ["g1", "g"]
    assert listed(run, filled, "--limit", "2", "--offset", "3") == ["i1", "e1"]


def test_list_caption_counts_all_matches(run: Run, filled: Tracker) -> None:
    out = ok(run(filled.settings.url, "list", "--top-level", "--limit", "1", "--offset", "1"))
    assert "1 of 4, from offset 1" in out
    assert str(filled.get_by_task_id("e2").uuid) in out
    assert str(filled.get_by_task_id("g").uuid) not in out


def test_list_json_round_trips(run: Run, filled: Tracker) -> None:
    [item] = json.loads(ok(run(filled.settings.url, "list", "--json", "--state", "in_progress")))
    e1 = filled.get_by_task_id("e1")
    assert UUID(item["uuid"]) == e1.uuid
    assert datetime.fromisoformat(item["created"]) == e1.created
    assert datetime.fromisoformat(item["started_at"]) == e1.started_at
    assert item["finished_at"] is None
    assert item["parent_uuid"] is None
    assert (item["state"], item["state_text"]) == ("In Progress", "In Progress")
    assert (item["completed_steps"], item["total_steps"], item["attempts"]) == (1, 4, 2)
    assert (item["user_id"], item["queue"], item["task_class"]) == ("7", "test", "tests.task")
    assert item["is_container"] is False
    g1 = json.loads(ok(run(filled.settings.url, "list", "--json", "--search", "part")))[0]
    assert g1["parent_uuid"] == str(filled.get_by_task_id("g").uuid)


def test_list_nothing(run: Run, sqlite_tracker: Tracker) -> None:
    assert ok(run(sqlite_tracker.settings.url, "list")) == "No task statuses match.\n"
    assert json.loads(ok(run(sqlite_tracker.settings.url, "list", "--json"))) == []


def test_list_parent_and_top_level_exclude_each_other(run: Run, sqlite_tracker: Tracker) -> None:
    result = run(sqlite_tracker.settings.url, "list", "--top-level", "--parent", str(uuid4()))
    assert result.exit_code == 2
    assert "--parent and --top-level exclude each other" in result.stderr


def test_list_unknown_state_names_the_choices(run: Run, sqlite_tracker: Tracker) -> None:
    line = fails(run(sqlite_tracker.settings.url, "list", "--state", "running"), "'running'")
    assert "'In Progress'" in line


def test_url_from_environment(sqlite_tracker: Tracker) -> None:
    status = publish(sqlite_tracker, "env")
    result = CliRunner(env={**CLEAN_ENV, "TASKSTATUS_URL": sqlite_tracker.settings.url}).invoke(
        cli, ["list"]
    )
    assert str(status.uuid) in ok(result)


def test_list_offset_past_the_end_says_so(run: Run, filled: Tracker) -> None:
    url = filled.settings.url
    assert ok(run(url, "list", "--offset", "9")) == "No task statuses at offset 9 (matching: 5).\n"
    out = ok(run(url, "list", "--user", "8", "--offset", "1"))
    assert out == "No task statuses at offset 1 (matching: 1).\n"
    assert ok(run(url, "list", "--user", "9", "--offset", "1")) == "No task statuses match.\n"
    assert json.loads(ok(run(url, "list", "--offset", "9", "--json"))) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "--url", "{url}"],
        ["show", "--url", "{url}", "{uuid}"],
        ["show", "{uuid}", "--url", "{url}"],
        ["--url", "foo://the-group-value-loses", "show", "{uuid}", "--url", "{url}"],
        ["cancel", "{uuid}", "--url={url}"],
    ],
)
def test_store_options_after_the_command(sqlite_tracker: Tracker, argv: list[str]) -> None:
    status = publish(sqlite_tracker, "t")
    values = {"url": sqlite_tracker.settings.url, "uuid": str(status.uuid)}
    result = CliRunner(env=CLEAN_ENV).invoke(cli, [arg.format(**values) for arg in argv])
    assert str(status.uuid) in ok(result)


@pytest.mark.parametrize(
    "argv", [["db", "current", "--url", "{url}"], ["db", "--url", "{url}", "current"]]
)
def test_store_options_in_the_db_group(sqlite_tracker: Tracker, argv: list[str]) -> None:
    url = sqlite_tracker.settings.url
    result = CliRunner(env=CLEAN_ENV).invoke(cli, [arg.format(url=url) for arg in argv])
    assert ok(result).endswith("The schema is up to date.\n")


def test_store_options_on_the_command_line_beat_the_environment(sqlite_tracker: Tracker) -> None:
    status = publish(sqlite_tracker, "t")
    url = sqlite_tracker.settings.url
    runner = CliRunner(env={**CLEAN_ENV, "TASKSTATUS_URL": "foo://from-the-environment"})
    for argv in (["--url", url, "list"], ["list", "--url", url]):
        assert str(status.uuid) in ok(runner.invoke(cli, argv))
    assert "up to date" in ok(runner.invoke(cli, ["db", "--url", url, "current"]))


def test_artifact_storage_after_the_command(sqlite_tracker: Tracker, tmp_path: Path) -> None:
    status = publish(sqlite_tracker, "t")
    artifact = sqlite_tracker.add_artifact(status, file=b"data", filename="out.csv")
    assert artifact.file is not None
    url, storage = sqlite_tracker.settings.url, str(tmp_path / "artifacts")
    argv = ["delete", "--yes", str(status.uuid), "--url", url, "--artifact-storage", storage]
    ok(CliRunner(env=CLEAN_ENV).invoke(cli, argv))
    assert not sqlite_tracker.artifact_storage.exists(artifact.file)


@pytest.mark.parametrize("command", [["list"], ["show"], ["db"], ["db", "upgrade"], ["demo"]])
def test_store_options_in_every_help(command: list[str]) -> None:
    out = ok(CliRunner(env=CLEAN_ENV).invoke(cli, [*command, "--help"]))
    assert "--url URL" in out
    assert "TASKSTATUS_URL" in out
    assert "--artifact-storage URL" in out


def test_text_is_not_rich_markup(run: Run, sqlite_tracker: Tracker) -> None:
    status = publish(sqlite_tracker, "m", name="Report [bold]Q1[/bold]", user_id="[red]7")
    for args in (["list"], ["show", str(status.uuid)]):
        out = ok(run(sqlite_tracker.settings.url, *args))
        assert "Report [bold]Q1[/bold]" in out
        assert "[red]7" in out


# -- show ---------------------------------------------------------------------------------------
@pytest.fixture
def failed_group(sql_tracker: Tracker) -> Tracker:
    publish(sql_tracker, "g", name="Nightly import", container="celery.chain", sequential=True)
    publish(sql_tracker, "c1", name="Step one", parent="g")
    publish(sql_tracker, "c2", name="Step two", parent="g")
    succeed_task(sql_tracker, "c1")
    fail_task(sql_tracker, "c2", "disk full")
    return sql_tracker


def test_show_container_with_children_and_error(run: Run, failed_group: Tracker) -> None:
    g = failed_group.get_by_task_id("g")
    out = ok(run(failed_group.settings.url, "show", str(g.uuid)))
    fields = dict(line.strip().split(None, 1) for line in out.split("\n\n")[0].splitlines())
    assert fields["uuid"] == str(g.uuid)
    assert fields["name"] == "Nightly import"
    assert fields["task_class"] == "celery.chain"
    assert fields["is_container"] == "True"
    assert fields["state_text"] == "Failed"
    assert fields["parent_uuid"] == "-"
    assert fields["finished_at"].endswith(" UTC")
    c1, c2 = (failed_group.get_by_task_id(t) for t in ("c1", "c2"))
    assert "Succeeded" in row_of(out, c1)
    assert "Failed" in row_of(out, c2)
    assert "Error" in out
    assert "disk full" in out


def test_show_traceback_and_artifacts(run: Run, failed_group: Tracker) -> None:
    c2 = failed_group.get_by_task_id("c2")
    failed_group.add_artifact(c2, name="Partial", file=b"a,b\n", filename="partial.csv")
    failed_group.add_artifact(c2, name="Log", url="https://logs.example.com/c2")
    out = ok(run(failed_group.settings.url, "show", str(c2.uuid)))
    artifacts = out.split("\nArtifacts\n")[1].split("\nTraceback\n")[0]
    rows = [line.split() for line in artifacts.splitlines()[2:] if line.strip()]
    assert rows == [
        ["Error", "text", "RuntimeError:", "disk", "full"],
        ["Partial", "file", "partial.csv"],
        ["Log", "url", "https://logs.example.com/c2"],
    ]
    traceback = out.split("\nTraceback\n")[1]
    assert traceback.startswith("Traceback (most recent call last):")
    assert "in fail_task" in traceback
    assert traceback.rstrip().endswith("RuntimeError: disk full")


def test_show_json(run: Run, failed_group: Tracker) -> None:
    g = failed_group.get_by_task_id("g")
    c2 = failed_group.get_by_task_id("c2")
    failed_group.add_artifact(c2, name="Partial", file=b"a,b\n", filename="partial.csv")
    data = json.loads(ok(run(failed_group.settings.url, "show", str(g.uuid), "--json")))
    assert data["uuid"] == str(g.uuid)
    assert data["state"] == "Failed"
    assert data["traceback"] is None
    assert [c["name"] for c in data["children"]] == ["Step one", "Step two"]
    assert [c["state"] for c in data["children"]] == ["Succeeded", "Failed"]
    assert [(a["name"], a["kind"], a["text"]) for a in data["artifacts"]] == [
        ("Error", "text", "RuntimeError: disk full")
    ]
    child = json.loads(ok(run(failed_group.settings.url, "show", str(c2.uuid), "--json")))
    assert child["parent_uuid"] == str(g.uuid)
    assert child["traceback"].rstrip().endswith("RuntimeError: disk full")
    assert child["children"] == []
    error, partial = child["artifacts"]
    assert (error["kind"], error["filename"]) == ("text", None)
    assert error["text"] == "RuntimeError: disk full"
    assert (partial["kind"], partial["filename"], partial["text"]) == ("file", "partial.csv", None)
    assert datetime.fromisoformat(partial["created"]).tzinfo is not None
    UUID(partial["uuid"])


def test_list_and_show_agree_on_nested_container_steps(run: Run, sql_tracker: Tracker) -> None:
    """chord -> group -> tasks: ``list`` (the chord listed with its group) and ``show`` both
    give a container the sums over its leaf tasks."""
    publish(sql_tracker, "chord", name="Chord", container="celery.chord", sequential=True)
    publish(sql_tracker, "header", name="Header", parent="chord", container="celery.group")
    publish(sql_tracker, "h1", parent="header", total_steps=2)
    publish(sql_tracker, "h2", parent="header", total_steps=2)
    succeed_task(sql_tracker, "h1")
    chord, header = (sql_tracker.get_by_task_id(t) for t in ("chord", "header"))
    url = sql_tracker.settings.url
    listed = ok(run(url, "list"))
    assert "2/4 (50%)" in row_of(listed, chord)
    assert "2/4 (50%)" in row_of(listed, header)
    shown = ok(run(url, "show", str(chord.uuid)))
    fields = dict(line.strip().split(None, 1) for line in shown.split("\n\n")[0].splitlines())
    assert (fields["completed_steps"], fields["total_steps"]) == ("2", "4")
    assert "2/4 (50%)" in row_of(shown, header)
    data = json.loads(ok(run(url, "show", str(chord.uuid), "--json")))
    assert (data["completed_steps"], data["total_steps"]) == (2, 4)
    rows = {r["task_id"]: r for r in json.loads(ok(run(url, "list", "--json")))}
    assert (rows["chord"]["completed_steps"], rows["chord"]["total_steps"]) == (2, 4)


# -- cancel and delete -----------------------------------------------------------------------------
def test_cancel_pending(run: Run, sql_tracker: Tracker) -> None:
    status = publish(sql_tracker, "t", name="Export")
    out = ok(run(sql_tracker.settings.url, "cancel", str(status.uuid)))
    assert out == f"{status.uuid} Export: Canceled\n"
    assert sql_tracker.get(status.uuid).state is State.CANCELED


def test_cancel_container_cancels_children(run: Run, sql_tracker: Tracker) -> None:
    group = publish(sql_tracker, "g", container="taskstatus.group")
    publish(sql_tracker, "c1", parent="g")
    sql_tracker.lifecycle.start(event("c1"))
    ok(run(sql_tracker.settings.url, "cancel", str(group.uuid)))
    assert sql_tracker.get_by_task_id("c1").state is State.CANCELED


def test_cancel_finished_work_keeps_its_state(run: Run, sql_tracker: Tracker) -> None:
    status = publish(sql_tracker, "t", name="Done")
    succeed_task(sql_tracker, "t")
    assert ok(run(sql_tracker.settings.url, "cancel", str(status.uuid))).endswith(": Succeeded\n")
    assert sql_tracker.get(status.uuid).state is State.SUCCEEDED


def test_cancel_terminate_reaches_the_tracker(
    run: Run, sqlite_tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    original = Tracker.cancel

    def cancel(
        self: Tracker, status: TaskStatus | UUID | str, *, terminate: bool = False
    ) -> TaskStatus:
        seen.append(terminate)
        return original(self, status, terminate=terminate)

    monkeypatch.setattr(Tracker, "cancel", cancel)
    status = publish(sqlite_tracker, "t")
    ok(run(sqlite_tracker.settings.url, "cancel", str(status.uuid), "--terminate"))
    ok(run(sqlite_tracker.settings.url, "cancel", str(status.uuid)))
    assert seen == [True, False]


def test_delete_with_yes_removes_status_children_and_files(run: Run, sql_tracker: Tracker) -> None:
    group = publish(sql_tracker, "g", name="Nightly", container="taskstatus.group")
    child = publish(sql_tracker, "c", parent="g")
    artifact = sql_tracker.add_artifact(child, file=b"data", filename="out.csv")
    assert artifact.file is not None
    assert sql_tracker.artifact_storage.exists(artifact.file)
    out = ok(run(sql_tracker.settings.url, "delete", str(group.uuid), "--yes"))
    assert out == f"Deleted {group.uuid} (Nightly).\n"
    for uuid in (group.uuid, child.uuid):
        with pytest.raises(NotFound):
            sql_tracker.get(uuid)
    assert not sql_tracker.artifact_storage.exists(artifact.file)


def test_delete_asks_first(run: Run, sqlite_tracker: Tracker) -> None:
    status = publish(sqlite_tracker, "t", name="Export")
    result = run(sqlite_tracker.settings.url, "delete", str(status.uuid), input="n\n")
    assert result.exit_code == 1
    assert f"Delete {status.uuid} (Export) with its children and artifacts?" in result.stdout
    assert sqlite_tracker.get(status.uuid).name == "Export"
    result = run(sqlite_tracker.settings.url, "delete", str(status.uuid), input="y\n")
    assert f"Deleted {status.uuid} (Export)." in ok(result)
    with pytest.raises(NotFound):
        sqlite_tracker.get(status.uuid)


# -- purge --------------------------------------------------------------------------------------
@pytest.fixture
def mixed(sql_tracker: Tracker) -> Tracker:
    for task_id in ("done", "failed", "pending", "running"):
        publish(sql_tracker, task_id)
    succeed_task(sql_tracker, "done")
    fail_task(sql_tracker, "failed", "boom")
    sql_tracker.lifecycle.start(event("running"))
    return sql_tracker


def remaining(tracker: Tracker) -> list[str]:
    return sorted(s.task_id for s in tracker.statuses(limit=None))


def test_purge_keeps_unfinished_work(run: Run, mixed: Tracker) -> None:
    out = ok(run(mixed.settings.url, "purge", "--older-than", "0"))
    assert out == "Deleted 2 finished task status(es) older than 0d.\n"
    assert remaining(mixed) == ["pending", "running"]


def test_purge_keeps_recent_work(run: Run, mixed: Tracker) -> None:
    assert "Deleted 0 " in ok(run(mixed.settings.url, "purge", "--older-than", "12h"))
    assert remaining(mixed) == ["done", "failed", "pending", "running"]


def test_purge_defaults_to_max_age(
    run: Run, sqlite_tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(sqlite_tracker, "done")
    succeed_task(sqlite_tracker, "done")
    publish(sqlite_tracker, "pending")
    url = sqlite_tracker.settings.url
    assert ok(run(url, "purge")) == "Deleted 0 finished task status(es) older than 30d.\n"
    later = datetime.now(timezone.utc) + timedelta(days=31)
    monkeypatch.setattr("taskstatus.tracker.utcnow", lambda: later)
    assert ok(run(url, "purge")).startswith("Deleted 1 ")
    assert remaining(sqlite_tracker) == ["pending"]


def test_purge_max_age_from_environment(sqlite_tracker: Tracker) -> None:
    runner = CliRunner(env={**CLEAN_ENV, "TASKSTATUS_MAX_AGE": "3600"})
    result = runner.invoke(cli, ["--url", sqlite_tracker.settings.url, "purge"])
    assert ok(result) == "Deleted 0 finished task status(es) older than 1h.\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("3600", timedelta(hours=1)),
        ("1.5", timedelta(seconds=1.5)),
        (" 2D ", timedelta(days=2)),
        ("0", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "d", "-5", "1w", "1.5.2h", "5 days", "1e3"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("age", "text"),
    [
        (timedelta(days=30), "30d"),
        (timedelta(hours=36), "36h"),
        (timedelta(minutes=90), "90m"),
        (timedelta(seconds=61), "61s"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(days=1_000_000), "1000000d"),
    ],
)
def test_format_duration(age: timedelta, text: str) -> None:
    assert format_duration(age) == text
    assert parse_duration(text) == age


@pytest.mark.parametrize(
    ("duration", "message"),
    [
        ("3 weeks", "invalid duration '3 weeks'"),
        ("99999999999999999999d", "is too long"),
    ],
)
def test_purge_bad_duration(run: Run, sqlite_tracker: Tracker, duration: str, message: str) -> None:
    fails(run(sqlite_tracker.settings.url, "purge", "--older-than", duration), message)


def test_purge_before_the_first_date_is_clean(run: Run, sqlite_tracker: Tracker) -> None:
    """Now minus 900000 days is before year 1: nothing to purge, or one clear line."""
    result = run(sqlite_tracker.settings.url, "purge", "--older-than", "900000d")
    if result.exit_code == 0:
        assert result.stdout.startswith("Deleted 0 ")
    else:
        fails(result, "out of range")


# -- db -----------------------------------------------------------------------------------------
def tables(url: str) -> list[str]:
    store = SQLAlchemyStore(url)
    try:
        return sa.inspect(store.engine).get_table_names()
    finally:
        store.close()


def sqlite_file(url: str) -> Path | None:
    database = sa.engine.make_url(url).database
    return Path(database) if url.startswith("sqlite") and database else None


def test_db_upgrade_of_an_empty_database(run: Run, sql_url: str) -> None:
    head = migrate.head_revision()
    result = run(sql_url, "db", "current")
    assert result.exit_code == 1
    file = sqlite_file(sql_url)
    assert result.stdout.splitlines() == [
        f"current: (no database file {file})" if file else "current: (empty)",
        f"head:    {head}",
        "The schema is not at the newest revision: run `taskstatus db upgrade`.",
    ]
    assert file is None or not file.exists()  # looking creates no file
    assert tables(sql_url) == []  # nor the schema
    out = ok(run(sql_url, "db", "upgrade"))
    assert out.endswith(f": (empty) -> {head}\n")
    assert "taskstatus_status" in tables(sql_url)
    assert ok(run(sql_url, "db", "current")).splitlines() == [
        f"current: {head}",
        f"head:    {head}",
        "The schema is up to date.",
    ]
    assert ok(run(sql_url, "db", "upgrade")).endswith(f": {head} -> {head} (already the newest)\n")
    assert ok(run(sql_url, "list")) == "No task statuses match.\n"


@pytest.mark.parametrize(
    "command",
    [["list"], ["show", NIL], ["cancel", NIL], ["delete", "--yes", NIL], ["purge"]],
)
def test_commands_create_no_database(run: Run, sql_url: str, command: list[str]) -> None:
    """A missing SQLite file or an empty database is most likely a wrong URL: say so, and
    create neither the file nor the schema."""
    file = sqlite_file(sql_url)
    if file is None:
        fails(run(sql_url, *command), "has no taskstatus schema; check the store URL")
        assert tables(sql_url) == []
    else:
        fails(run(sql_url, *command), f"no database file {file}; check the store URL")
        assert not file.exists()


@pytest.fixture
def unknown_revision(sqlite_tracker: Tracker) -> str:
    """A database stamped by a taskstatus newer than this one."""
    store = sqlite_tracker.store
    assert isinstance(store, SQLAlchemyStore)
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = 'ffff'"))
    sqlite_tracker.close()
    return sqlite_tracker.settings.url


def test_db_current_on_unknown_revision(run: Run, unknown_revision: str) -> None:
    result = run(unknown_revision, "db", "current")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == "current: ffff"


def test_db_upgrade_on_unknown_revision(run: Run, unknown_revision: str) -> None:
    fails(run(unknown_revision, "db", "upgrade"), "Can't locate revision identified by 'ffff'")


def test_commands_refuse_an_unknown_schema(run: Run, unknown_revision: str) -> None:
    fails(run(unknown_revision, "list"), "revision ffff")


def test_commands_refuse_a_foreign_table(run: Run, make_url: Callable[[str], str]) -> None:
    url = make_url("sqlite")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE taskstatus_status (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    fails(run(url, "show", str(uuid4())), "not created by taskstatus")


def test_docs_show_the_head_revision() -> None:
    text = (Path(__file__).parents[1] / "docs" / "cli.md").read_text()
    shown = re.findall(r"^(?:current|head): +(\w+)$|-> (\w+)", text, re.MULTILINE)
    assert len(shown) >= 4
    assert {a or b for a, b in shown} == {migrate.head_revision()}


def test_db_needs_a_sql_store(run: Run) -> None:
    for command in ("current", "upgrade"):
        fails(run("memory://", "db", command), "`taskstatus db` needs SQL")


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "command", [["show"], ["cancel"], ["delete", "--yes"], ["list", "--parent"]]
)
def test_invalid_uuid(run: Run, sqlite_tracker: Tracker, command: list[str]) -> None:
    fails(run(sqlite_tracker.settings.url, *command, "not-a-uuid"), "'not-a-uuid': not a UUID")


@pytest.mark.parametrize("command", [["show"], ["cancel"], ["delete", "--yes"]])
def test_not_found(run: Run, sqlite_tracker: Tracker, command: list[str]) -> None:
    missing = uuid4()
    fails(
        run(sqlite_tracker.settings.url, *command, str(missing)),
        f"no task status with uuid {missing}",
    )


def test_unknown_url_scheme(run: Run) -> None:
    fails(run("foo://somewhere", "list"), "unknown store URL scheme 'foo'")


@pytest.mark.parametrize("url", UNREACHABLE)
@pytest.mark.parametrize("command", [["list"], ["show", NIL], ["db", "current"]])
def test_unreachable_database(run: Run, url: str, command: list[str]) -> None:
    fails(run(url, *command), "cannot reach the database at")


def test_errors_are_red(run: Run) -> None:
    result = run("foo://somewhere", "list", color=True)
    assert result.stderr.startswith("\x1b[31mError: unknown store URL scheme")


def test_version() -> None:
    result = CliRunner(env=CLEAN_ENV).invoke(cli, ["--version"])
    assert ok(result) == f"taskstatus, version {taskstatus.__version__}\n"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql+nodriver://postgres:hunter2@127.0.0.1/test", "unknown database driver"),
        ("mysql+nodriver://root:hunter2@127.0.0.1/test", "unknown database driver"),
        ("postgresql://postgres:hunter2@127.0.0.1:port/test", "invalid store URL"),
        ("redis://user:hunter2@127.0.0.1/0", "unknown store URL scheme"),
        ("postgresql://postgres:hunter2@127.0.0.1:1/test", "cannot reach the database"),
        ("", "url"),
    ],
)
@pytest.mark.parametrize("command", [["list"], ["show", NIL]])
def test_a_bad_url_is_one_line_without_its_password(
    run: Run, url: str, message: str, command: list[str]
) -> None:
    line = fails(run(url, *command), message)
    assert "hunter2" not in line
    if "hunter2" in url:
        assert ":***@" in line
