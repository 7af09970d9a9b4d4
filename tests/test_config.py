"""Settings, store selection, schema handling and their errors."""

from __future__ import annotations

import re
from dataclasses import fields
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import taskstatus
from taskstatus import ConfigurationError, SchemaOutdated, Settings, StoreUnavailable, Tracker
from taskstatus.backends import migrate
from taskstatus.backends.tables import statuses
from taskstatus.changes import Position
from taskstatus.settings import env_var


def test_unknown_scheme_is_named():
    with pytest.raises(ConfigurationError, match=r"unknown store URL scheme 'redis'"):
        Tracker(Settings(url="redis://localhost/0"))


def test_url_must_have_a_scheme():
    with pytest.raises(ConfigurationError, match="scheme://"):
        Settings(url="taskstatus.db")


@pytest.mark.parametrize(
    "url",
    ["postgresql://postgres@127.0.0.1:1/test", "mysql://root@127.0.0.1:1/test"],
)
def test_unreachable_database_is_named(url):
    tracker = Tracker(Settings(url=url))
    with pytest.raises(StoreUnavailable, match=r"cannot reach the database at .*127\.0\.0\.1:1"):
        tracker.open()


def test_unreachable_database_at_configure():
    with pytest.raises(StoreUnavailable, match="cannot reach"):
        taskstatus.configure(url="postgresql://postgres@127.0.0.1:1/test")


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TASKSTATUS_URL", "memory://")
    monkeypatch.setenv("TASKSTATUS_MAX_AGE", "3600")
    monkeypatch.setenv("TASKSTATUS_ARTIFACT_STORAGE", str(tmp_path))
    s = Settings.load()
    assert (s.url, s.max_age, s.artifact_storage) == (
        "memory://",
        timedelta(hours=1),
        str(tmp_path),
    )
    assert Settings.load(url="sqlite:///x.db", max_age=60).max_age == timedelta(seconds=60)


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("TASKSTATUS_MAX_AGE", "a month", "TASKSTATUS_MAX_AGE must be a number of seconds"),
        ("TASKSTATUS_MAX_AGE", "-5", "TASKSTATUS_MAX_AGE must be greater than 0 seconds"),
        ("TASKSTATUS_PROGRESS_INTERVAL", "fast", "TASKSTATUS_PROGRESS_INTERVAL"),
    ],
)
def test_bad_environment_is_named(monkeypatch, env, value, message):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigurationError, match=message):
        Settings.load()


def test_bad_max_age():
    with pytest.raises(ConfigurationError, match="max_age"):
        Settings.load(max_age="30 days")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_age"):
        Settings(max_age=timedelta(0))


def test_artifact_storage_defaults_beside_sqlite_file(tmp_path):
    s = Settings(url=f"sqlite:///{tmp_path}/app.db")
    assert s.artifact_url() == str(tmp_path / "app.db.artifacts")


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("memory://", "memory://taskstatus-artifacts"),
        ("sqlite://", "memory://taskstatus-artifacts"),
        ("sqlite:///:memory:", "memory://taskstatus-artifacts"),
        ("sqlite:///file:x?mode=memory&uri=true", "memory://taskstatus-artifacts"),
        ("postgresql://u@h/db", None),
        ("mysql+pymysql://u@h/db", None),
        ("custom://x", None),
    ],
)
def test_artifact_storage_default_by_store(url, location):
    assert Settings(url=url).artifact_url() == location
    assert Settings(url=url, artifact_storage="s3://b/p").artifact_url() == "s3://b/p"


def test_schema_created_on_first_use_and_versioned(sql_url, make_tracker):
    tracker = make_tracker(sql_url)
    engine = tracker.store.engine
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert {"taskstatus_status", "taskstatus_artifact"} <= set(sa.inspect(engine).get_table_names())
    # The migrations leave exactly the indexes the tables declare, none they replaced.
    indexes = {ix["name"] for ix in sa.inspect(engine).get_indexes("taskstatus_status")}
    declared = {ix.name for ix in statuses.indexes}
    assert "ix_taskstatus_status_parent_uuid_created" in declared
    assert {name for name in indexes if name.startswith("ix_")} == declared


def test_unknown_revision_is_refused(sql_url, make_tracker):
    tracker = make_tracker(sql_url)
    with tracker.store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE taskstatus_alembic_version SET version_num = 'ffff'"))
    fresh = Tracker(Settings(url=sql_url))
    with pytest.raises(SchemaOutdated, match=r"revision ffff.*upgrade taskstatus"):
        fresh.open()


def test_older_schema_is_not_upgraded_silently(sql_url, make_tracker, monkeypatch):
    make_tracker(sql_url)
    # This package pretends to need a newer revision than the database holds.
    monkeypatch.setattr(migrate, "head_revision", lambda: "9999")
    with pytest.raises(SchemaOutdated, match="run `taskstatus db upgrade`"):
        Tracker(Settings(url=sql_url)).open()


def test_foreign_table_is_not_touched(make_url):
    url = make_url("sqlite")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE taskstatus_status (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(SchemaOutdated, match="not created by taskstatus"):
        Tracker(Settings(url=url)).open()


def test_postgres_url_alias_and_driver(make_url):
    from taskstatus.backends.sqlalchemy import normalize_url

    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("mariadb://u@h/db").drivername == "mariadb+pymysql"
    assert normalize_url("postgresql+psycopg2://u@h/db").drivername == "postgresql+psycopg2"
    with pytest.raises(ConfigurationError, match="invalid store URL"):
        normalize_url("::::")


def test_artifact_storage_needing_a_missing_package():
    with pytest.raises(ConfigurationError, match="cannot use artifact storage 'nosuchfs://"):
        Tracker(Settings(url="memory://", artifact_storage="nosuchfs://bucket/x"))


def test_huge_max_age_is_named(monkeypatch):
    monkeypatch.setenv("TASKSTATUS_MAX_AGE", "1e15")
    with pytest.raises(ConfigurationError, match="too large"):
        Settings.load()


def test_purge_older_than_any_date(memory_tracker):
    assert memory_tracker.purge(older_than=timedelta(days=900_000)) == 0


def test_dropped_connection_is_replaced(make_url, make_tracker):
    """A server-side disconnect of a pooled connection costs a retry, not an error."""
    from tests.helpers import publish

    url = make_url("postgresql")
    tracker = make_tracker(url)
    publish(tracker, "before")
    with tracker.store.engine.connect() as conn:  # the pooled connection the store reuses
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    admin = sa.create_engine(sa.engine.make_url(url).set(drivername="postgresql+psycopg"))
    with admin.connect() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    admin.dispose()
    publish(tracker, "after")
    assert tracker.get_by_task_id("after").task_id == "after"


def test_upgrade_from_the_first_schema_keeps_rows(sql_url):
    """A database at 0001 is refused until `db upgrade`, which keeps its rows."""
    from click.testing import CliRunner

    from taskstatus.backends.sqlalchemy import SQLAlchemyStore
    from taskstatus.cli import cli

    store = SQLAlchemyStore(sql_url)
    migrate.upgrade(store.engine, "0001")
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO taskstatus_status (uuid, task_id, queue, task_class, name, "
                "is_container, sealed, state, completed_steps, total_steps, planned_steps, "
                "attempts, created, modified) VALUES (:uuid, 'old', 'celery', 'x', 'Old', "
                ":f, :t, 'Succeeded', 1, 1, 1, 1, :now, :now)"
            ),
            {"uuid": "0" * 32, "f": False, "t": True, "now": "2026-01-01 00:00:00"},
        )
    store.close()
    with pytest.raises(SchemaOutdated, match="db upgrade"):
        Tracker(Settings(url=sql_url)).open()
    result = CliRunner().invoke(cli, ["--url", sql_url, "db", "upgrade"])
    assert result.exit_code == 0, result.output
    tracker = Tracker(Settings(url=sql_url)).open()
    try:
        old = tracker.get_by_task_id("old")
        assert (old.name, old.redeliver_on_loss, old.heartbeat_at) == ("Old", False, None)
        # 0004: a row from before the change feed is in it, stamped when it was last modified.
        (change,) = tracker.store.changes(Position(), 10)
        assert (change.status.task_id, change.version, change.changed) == (
            "old",
            1,
            old.modified,
        )
        (seen,) = tracker.changes()
        tracker.set_name(old, "Renamed")
        assert [u.status.name for u in tracker.changes(seen.position)] == ["Renamed"]
    finally:
        tracker.close()


def test_change_feed_migration_downgrades_and_upgrades(sql_url):
    from taskstatus.backends.sqlalchemy import SQLAlchemyStore

    store = SQLAlchemyStore(sql_url)
    store.open()
    migrate.upgrade(store.engine, "0004")
    from alembic import command

    command.downgrade(migrate.alembic_config(store.engine), "0003")
    columns = {c["name"] for c in sa.inspect(store.engine).get_columns("taskstatus_status")}
    assert not {"changed", "version"} & columns
    migrate.upgrade(store.engine)
    assert migrate.current_revision(store.engine) == migrate.head_revision()
    store.close()


# For each setting: a valid environment text, the value it gives, and another value.
SETTINGS = {
    "url": ("memory://", "memory://", "sqlite://"),
    "max_age": ("60", timedelta(minutes=1), timedelta(days=2)),
    "artifact_storage": ("s3://b/p", "s3://b/p", "/srv/files"),
    "progress_interval": ("2", 2.0, 0),
    "purge_batch_size": ("10", 10, 7),
    "heartbeat_interval": ("1.5", 1.5, 3),
    "lost_after": ("30", 30.0, 45),
    "write_interval": ("0", 0.0, 1),
}


@pytest.mark.parametrize("name", [f.name for f in fields(Settings)])
def test_each_setting_argument_then_environment_then_default(name):
    """The argument wins; else the variable, unless empty; else the default."""
    variable = env_var(name)
    text, value, argument = SETTINGS[name]
    assert getattr(Settings.load(environ={variable: text}), name) == value
    assert getattr(Settings.load(environ={variable: ""}), name) == getattr(Settings(), name)
    assert getattr(Settings.load(**{name: argument}, environ={variable: text}), name) == argument


def test_unknown_setting_is_named():
    with pytest.raises(TypeError, match=r"unknown setting 'max_days'; did you mean 'max_age'"):
        taskstatus.configure(url="memory://", max_days=3)
    with pytest.raises(TypeError, match="unknown setting 'colour'; the settings are url, max_age"):
        Settings.load(colour="red")
    with pytest.raises(TypeError, match="unknown setting 'environ'"):  # Settings.load's only
        taskstatus.configure(url="memory://", environ={})


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"progress_interval": "fast"},
            "progress_interval must be a number of seconds, got 'fast'",
        ),
        ({"purge_batch_size": 2.5}, "purge_batch_size must be a whole number, got 2.5"),
        ({"lost_after": True}, "lost_after must be a number of seconds, got True"),
        ({"artifact_storage": 3}, "artifact_storage must be a string, got 3"),
        ({"max_age": 1e15}, "max_age of 1000000000000000.0 seconds is too large"),
    ],
)
def test_bad_value_names_its_setting(given, message):
    with pytest.raises(ConfigurationError, match=message):
        Settings(**given)
    with pytest.raises(ConfigurationError, match=message):
        taskstatus.configure(url="memory://", **given)


def test_docs_list_every_setting():
    """docs/settings.md has one row per setting: its argument, variable and default."""
    page = (Path(__file__).parents[1] / "docs" / "settings.md").read_text()
    rows = re.findall(r"^\| [^|]+ \| `(\w+)` \| `(\w+)`[^|]* \| ([^|]+) \|$", page, re.M)
    documented = {name: (variable, default.strip()) for name, variable, default in rows}
    assert list(documented) == [f.name for f in fields(Settings)]
    for f in fields(Settings):
        variable, default = documented[f.name]
        assert variable == env_var(f.name)
        assert _documented_default(default) == f.default, f.name
    count = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    assert f"taskstatus has {count[len(rows)]} settings." in page


def _documented_default(text: str) -> object:
    if text == "derived from the URL":
        return None
    if days := re.fullmatch(r"(\d+) days", text):
        return timedelta(days=int(days[1]))
    if text.startswith("`"):
        return text.strip("`")
    return float(text)


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("progress_interval", float("inf"), "progress_interval must be at least 0 and at most"),
        ("progress_interval", -1, "progress_interval must be at least 0"),
        ("progress_interval", "1", "progress_interval must be a number of seconds"),
        ("purge_batch_size", 1.5, "purge_batch_size must be a whole number"),
        ("purge_batch_size", True, "purge_batch_size must be a whole number"),
        ("purge_batch_size", 10**30, "purge_batch_size must be at least 1 and at most"),
        ("purge_batch_size", 0, "purge_batch_size must be at least 1"),
        ("lost_after", float("inf"), "lost_after must be greater than 0 and at most"),
        ("heartbeat_interval", 1e300, "heartbeat_interval must be greater than 0 and at most"),
        ("heartbeat_interval", float("nan"), "heartbeat_interval must be greater than 0"),
        ("max_age", float("nan"), "max_age must be greater than 0 seconds"),
        ("max_age", "30 days", "max_age must be a timedelta or a number of seconds"),
        ("write_interval", 6, "write_interval must be at least 0 and at most 5 seconds"),
        ("url", "", "url"),
    ],
)
def test_each_setting_refuses_what_is_out_of_its_range(setting, value, message):
    for make in (Settings, Settings.load, taskstatus.configure):
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            make(**{setting: value})


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("TASKSTATUS_PROGRESS_INTERVAL", "inf", "TASKSTATUS_PROGRESS_INTERVAL must be at least 0"),
        ("TASKSTATUS_LOST_AFTER", "nan", "TASKSTATUS_LOST_AFTER must be greater than 0"),
        ("TASKSTATUS_PURGE_BATCH_SIZE", "1.5", "TASKSTATUS_PURGE_BATCH_SIZE must be a whole"),
        ("TASKSTATUS_PURGE_BATCH_SIZE", "1" + "0" * 30, "TASKSTATUS_PURGE_BATCH_SIZE must be at"),
        ("TASKSTATUS_HEARTBEAT_INTERVAL", "1e300", "TASKSTATUS_HEARTBEAT_INTERVAL must be greater"),
    ],
)
def test_environment_values_out_of_range_are_named(monkeypatch, env, value, message):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        Settings.load()


@pytest.mark.parametrize(
    "url",
    [
        "redis://user:hunter2@127.0.0.1/0",
        "postgresql+nodriver://postgres:hunter2@127.0.0.1/test",
        "postgresql://postgres:hunter2@127.0.0.1:port/test",
    ],
)
def test_configure_errors_hide_the_password(url):
    with pytest.raises(ConfigurationError) as raised:
        taskstatus.configure(url=url)
    assert "hunter2" not in str(raised.value)
    assert ":***@" in str(raised.value)


def test_settings_show_the_url_without_its_password():
    shown = repr(Settings(url="postgresql://app:hunter2@db/app"))
    assert "hunter2" not in shown
    assert "url='postgresql://app:***@db/app'" in shown
