"""Shared fixtures: real databases, one private schema/database per test.

A test that needs a server which is unreachable fails under CI (``CI=true``) and is skipped with
a loud reason elsewhere, so the rest of the suite still runs on a laptop without the servers.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import sqlalchemy as sa

from taskstatus import Settings, Tracker

from . import dict_store

PG_URL = os.environ.get("TASKSTATUS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("TASKSTATUS_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

#: Every kind of store the core tests run against.
SQL_BACKENDS = ["sqlite", "postgresql", "mysql"]
ALL_BACKENDS = ["memory", *SQL_BACKENDS]


#: What a failed test's report shows beside its own output: the logs of the workers it ran.
SHOWN_ON_FAILURE = pytest.StashKey[list[Callable[[], Iterable[tuple[str, str]]]]]()


def show_on_failure(
    request: pytest.FixtureRequest, sections: Callable[[], Iterable[tuple[str, str]]]
) -> None:
    """Add ``sections()`` (title, text) to this test's report if it fails; called then, so
    that it sees every worker the test started, restarted ones included."""
    request.node.stash.setdefault(SHOWN_ON_FAILURE, []).append(sections)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item):  # type: ignore[no-untyped-def]
    report = yield
    if report.failed:
        for sections in item.stash.get(SHOWN_ON_FAILURE, []):
            report.sections.extend(sections())
    return report


def unavailable(reason: str) -> NoReturn:
    """What a test does when something it needs is missing here: fail under CI, skip loudly
    elsewhere (so a user without that server can still run the rest)."""
    if IN_CI:
        pytest.fail(f"CI needs {reason}", pytrace=False)
    pytest.skip(f"SKIPPED LOUDLY: {reason}")


def require_server(name: str, url: str) -> None:
    """Fail (CI) or skip loudly (elsewhere) when the server behind ``url`` is unreachable."""
    parsed = sa.engine.make_url(url)
    host, port = parsed.host or "127.0.0.1", parsed.port
    try:
        with socket.create_connection((host, port or 0), timeout=3):
            return
    except OSError as exc:
        unavailable(f"{name} at {host}:{port} is unreachable ({exc}); start it to run this test")


def _private_postgres() -> Iterator[str]:
    require_server("PostgreSQL", PG_URL)
    schema = f"ts_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(sa.engine.make_url(PG_URL).set(drivername="postgresql+psycopg"))
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


def _private_mysql() -> Iterator[str]:
    require_server("MariaDB/MySQL", MYSQL_URL)
    database = f"ts_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(sa.engine.make_url(MYSQL_URL).set(drivername="mysql+pymysql"))
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")
    try:
        yield str(sa.engine.make_url(MYSQL_URL).set(database=database))
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{database}`")
        admin.dispose()


@contextlib.contextmanager
def private_store(backend: str, folder: Path) -> Iterator[str]:
    """The URL of a new, empty store of ``backend`` (SQLite: a new file in ``folder``), for
    this process and the workers it starts; dropped on exit."""
    if backend == "memory":
        yield "memory://"
    elif backend == "sqlite":
        yield f"sqlite:///{folder / f'ts-{uuid.uuid4().hex[:8]}.db'}"
    else:
        yield from {"postgresql": _private_postgres, "mysql": _private_mysql}[backend]()


@pytest.fixture
def make_url(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """``make_url(backend)`` -> URL of a fresh, private, empty database of that backend."""
    with contextlib.ExitStack() as stack:
        yield lambda backend: stack.enter_context(private_store(backend, tmp_path))


@pytest.fixture(params=SQL_BACKENDS)
def sql_url(request: pytest.FixtureRequest, make_url: Callable[[str], str]) -> str:
    """A private database URL, for each SQL backend."""
    return make_url(request.param)


@pytest.fixture(params=ALL_BACKENDS)
def any_url(request: pytest.FixtureRequest, make_url: Callable[[str], str]) -> str:
    """A private store URL, for every backend including the in-memory one."""
    return make_url(request.param)


@pytest.fixture
def make_tracker(tmp_path: Path) -> Iterator[Callable[..., Tracker]]:
    """``make_tracker(url, **settings)`` -> an opened Tracker with artifacts under tmp_path."""
    made: list[Tracker] = []

    def make(url: str, **settings: object) -> Tracker:
        settings.setdefault("artifact_storage", str(tmp_path / "artifacts"))
        # A store written against the store core alone, chosen by its plugin.
        plugins = [dict_store] if url.startswith("dict://") else []
        tracker = Tracker(Settings(url=url, **settings), plugins=plugins)  # type: ignore[arg-type]
        tracker.open()
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close()


@pytest.fixture
def tracker(any_url: str, make_tracker: Callable[..., Tracker]) -> Tracker:
    """A Tracker on every backend."""
    return make_tracker(any_url)


@pytest.fixture
def sql_tracker(sql_url: str, make_tracker: Callable[..., Tracker]) -> Tracker:
    """A Tracker on every SQL backend."""
    return make_tracker(sql_url)


@pytest.fixture
def memory_tracker(make_tracker: Callable[..., Tracker]) -> Tracker:
    return make_tracker("memory://")


@pytest.fixture(autouse=True)
def _no_running_task() -> Iterator[None]:
    """Tests that begin a task without ending it must not leak it into the next test."""
    from taskstatus.tracking import activate, deactivate

    token = activate(None)
    yield
    deactivate(token)
