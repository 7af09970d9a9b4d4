"""Bad input (issue 14): a task never fails over its own progress text, which every store keeps
alike; a wrong argument is refused before any query, with ValueError/TypeError naming it; and
no owner-visible text shows SQL, parameters or the database's words. On SQLite, PostgreSQL and
MariaDB, since each refuses (or keeps) different things."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from taskstatus import State, TaskStatus, Tracker
from taskstatus.exceptions import StoreError
from taskstatus.models import MAX_STEPS
from taskstatus.tracking import LiveStatus

from .helpers import event, publish

#: NUL (PostgreSQL refuses it, SQLite and MariaDB keep it) and lone surrogates (no driver
#: encodes them), and what every store keeps instead.
UNSTORABLE = "a\x00b\ud800c\udfffd"
CLEAN = "a\ufffdb\ufffdc\ufffdd"
#: The documented sizes: of a name or a stage, of an artifact URL.
MAX_TEXT = 255
MAX_URL = 2048
#: What an owner must never read: the statement, its parameters, the driver.
LEAKS = ("SQL", "SELECT", "INSERT", "UPDATE", "parameters", "psycopg", "pymysql", "sqlite3")


def run(tracker: Tracker, body: Callable[[LiveStatus], object], **publish_kw: Any) -> TaskStatus:
    """Run ``body`` as a queue adapter runs a tracked task: what it raises fails the task."""
    task_id = f"t-{uuid.uuid4().hex[:8]}"
    publish(tracker, task_id, **publish_kw)
    live = tracker.lifecycle.start(event(task_id))
    try:
        body(live)
    except Exception as exc:
        tracker.lifecycle.end(live, exception=exc)
    else:
        tracker.lifecycle.end(live)
    return tracker.get_by_task_id(task_id)


def owner_texts(status: TaskStatus) -> list[str]:
    """Everything of a status its owner sees as text."""
    return [status.name, status.state_text, *(a.text or "" for a in status.artifacts)]


@pytest.fixture
def tracker(sql_url: str, make_tracker: Callable[..., Tracker]) -> Tracker:
    """Progress written at each call, so each reaches the store while the task runs."""
    return make_tracker(sql_url, progress_interval=0)


# -- text a running task reports: made storable, never refused --------------------------------
def test_progress_text_is_made_storable_alike(tracker):
    seen: list[TaskStatus] = []

    def body(live: LiveStatus) -> None:
        live.set_name(UNSTORABLE + "n" * 300)
        live.set_state(UNSTORABLE + "s" * 300)
        live.add_artifact(name=f"Log {UNSTORABLE}", text=UNSTORABLE)
        seen.append(live.status)

    status = run(tracker, body)
    assert status.state is State.SUCCEEDED
    assert seen[0].name == (CLEAN + "n" * 300)[:MAX_TEXT]
    assert seen[0].state_text == (CLEAN + "s" * 300)[:MAX_TEXT]
    [log] = status.artifacts
    assert (log.name, log.text) == (f"Log {CLEAN}", CLEAN)


def test_the_api_methods_clean_text_too(tracker):
    status = publish(tracker)
    status.start()
    status.set_state(UNSTORABLE * 100)
    assert status.state_text == (CLEAN * 100)[:MAX_TEXT]
    status.set_name(UNSTORABLE)
    assert status.name == CLEAN
    status.fail(f"gave up: {UNSTORABLE}")
    assert status.state is State.FAILED
    assert [a.text for a in status.artifacts] == [f"gave up: {CLEAN}"]


def test_a_failure_whose_message_cannot_be_stored_still_fails_the_task(tracker):
    def body(live: LiveStatus) -> None:
        raise ValueError(f"bad row {UNSTORABLE}")

    status = run(tracker, body)
    assert status.state is State.FAILED
    assert [a.text for a in status.artifacts] == [f"ValueError: bad row {CLEAN}"]


def test_a_name_template_rendering_unstorable_text(tracker):
    status = publish(tracker, name=UNSTORABLE + "x" * 300)
    assert status.name == (CLEAN + "x" * 300)[:MAX_TEXT]


# -- step counts: wrong ones refused, sums capped at 64 bits ----------------------------------
@pytest.mark.parametrize("interval", [0, 60], ids=["each-call", "coalesced"])
def test_step_counts_stay_within_64_bits(sql_url, make_tracker, interval):
    tracker = make_tracker(sql_url, progress_interval=interval)
    totals: list[int] = []

    def body(live: LiveStatus) -> None:
        live.increment_total_steps(MAX_STEPS)
        live.increment_total_steps(MAX_STEPS)
        live.increment_completed_steps(MAX_STEPS)
        live.increment_completed_steps(MAX_STEPS)
        for wrong in (2**63, -1):
            with pytest.raises(ValueError, match="steps"):
                live.increment_completed_steps(wrong)
        with pytest.raises(TypeError, match="steps"):
            live.increment_total_steps(1.5)  # type: ignore[arg-type]
        live.check_canceled()  # writes what was counted
        totals.append(live.status.total_steps)

    status = run(tracker, body)
    assert status.state is State.SUCCEEDED
    assert totals == [MAX_STEPS]
    assert (status.completed_steps, status.total_steps) == (MAX_STEPS, MAX_STEPS)


def test_api_step_counts_and_container_sums_stay_within_64_bits(tracker):
    box = publish(tracker, "box", container="taskstatus.group")
    for child in ("a", "b"):
        publish(tracker, child, parent="box").increment_total_steps(MAX_STEPS)
    with pytest.raises(ValueError, match="steps"):
        tracker.get_by_task_id("a").increment_completed_steps(2**63)
    assert tracker.get(box.uuid).total_steps == MAX_STEPS
    assert tracker.get_by_task_id("a").total_steps == MAX_STEPS


# -- wrong arguments: refused by name, before any query, alike on every store -----------------
def _artifact_cases(tmp: Path) -> list[tuple[dict[str, Any], type[Exception], str]]:
    return [
        ({"url": "https://example.com/\x00"}, ValueError, "url"),
        ({"url": "https://example.com/\ud800"}, ValueError, "url"),
        ({"url": "https://example.com/" + "a" * MAX_URL}, ValueError, "url"),
        ({"url": "https://example.com/\r\nSet-Cookie: x"}, ValueError, "url"),
        ({"file": b"x", "filename": "report\r\n.csv"}, ValueError, "filename"),
        ({"file": b"x", "filename": "a\x00b"}, ValueError, "filename"),
        ({"file": "/etc/passwd"}, TypeError, "path="),
        ({"file": Path("/etc/passwd")}, TypeError, "path="),
        ({"path": 3}, TypeError, "path"),
        ({"text": b"bytes"}, TypeError, "text"),
        ({"name": 3, "text": "x"}, TypeError, "artifact name"),
        ({"name": "", "text": "x"}, ValueError, "artifact name"),
    ]


def test_wrong_artifact_arguments_are_refused_by_name(tracker, tmp_path):
    status = publish(tracker)
    for kwargs, error, name in _artifact_cases(tmp_path):
        with pytest.raises(error, match=name):
            status.add_artifact(**kwargs)
    assert status.artifacts == []
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").rglob("*.*"))


def test_a_local_file_is_named_with_path(tracker, tmp_path):
    source = tmp_path / "report.csv"
    source.write_bytes(b"id\n1\n")
    status = publish(tracker)
    artifact = status.add_artifact(path=str(source))
    assert artifact.filename == "report.csv"
    with artifact.open() as f:
        assert f.read() == b"id\n1\n"


QUERIES: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"user_id": "7\x00"}, ValueError, "user_id"),
    ({"user_ids": ["7", "\ud800"]}, ValueError, "user_ids"),
    ({"search": "\x00"}, ValueError, "search"),
    ({"queue": "q\x00"}, ValueError, "queue"),
    ({"task_class": "x" * 300}, ValueError, "task_class"),
    ({"limit": 2**63}, ValueError, "limit"),
    ({"offset": 2**63}, ValueError, "offset"),
    ({"limit": "5"}, TypeError, "limit"),
    ({"state": 3}, TypeError, "state"),
    ({"state": [3]}, TypeError, "state"),
    ({"parent": "\x00"}, ValueError, "parent"),
]


@pytest.mark.parametrize(
    ("filters", "error", "name"), QUERIES, ids=[str(q[0])[:30] for q in QUERIES]
)
def test_wrong_query_arguments_are_refused_by_name(tracker, filters, error, name):
    publish(tracker)
    with pytest.raises(error, match=name):
        tracker.statuses(**filters)
    if "limit" not in filters and "offset" not in filters:
        with pytest.raises(error, match=name):
            tracker.count(**filters)


def test_wrong_ids_are_refused_by_name(tracker):
    for call, name in (
        (lambda: tracker.get("\x00"), "status id"),
        (lambda: tracker.get_by_task_id("t\x00"), "task_id"),
        (lambda: tracker.get_by_task_id("\ud800"), "task_id"),
        (lambda: tracker.get_artifact("\x00"), "artifact id"),
        (lambda: tracker.query_artifacts(limit=2**63), "limit"),
    ):
        with pytest.raises(ValueError, match=name):
            call()


def test_an_owner_id_no_store_keeps_is_refused_at_publish(tracker):
    with pytest.raises(ValueError, match="user_id"):
        publish(tracker, user_id="7\x00")
    with pytest.raises(ValueError, match="user_id"):
        publish(tracker, user_id="7" * 300)
    assert tracker.statuses() == []


# -- database errors: never shown to the owner -------------------------------------------------
def test_a_database_error_in_a_task_shows_no_sql_to_its_owner(tracker):
    def body(live: LiveStatus) -> None:
        # The task's own database work, failing on every store.
        with tracker.store.engine.connect() as conn:  # type: ignore[attr-defined]
            conn.execute(sa.text("SELECT secret FROM no_such_table WHERE x = :p"), {"p": "hunter2"})

    status = run(tracker, body)
    assert status.state is State.FAILED
    texts = " ".join(owner_texts(status))
    for leak in (*LEAKS, "hunter2", "no_such_table"):
        assert leak not in texts
    assert "no_such_table" in (status.traceback or "")  # the operator keeps the detail


def test_a_store_error_in_a_task_shows_no_database_words(tracker):
    def body(live: LiveStatus) -> None:
        raise StoreError("cannot record task 'x': duplicate key value violates unique constraint")

    status = run(tracker, body)
    [error] = status.artifacts
    assert error.text is not None
    assert error.text.startswith("StoreError: ")
    assert "duplicate key" not in error.text


def test_a_refused_statement_raises_a_store_error_without_sql(make_url, make_tracker, caplog):
    """The store's last line of defence, for a value that gets past the checks: a count no
    64-bit column holds, which PostgreSQL refuses with the statement and its parameters."""
    tracker = make_tracker(make_url("postgresql"))
    status = publish(tracker)
    with pytest.raises(StoreError) as raised:
        tracker.store.add_steps(status.uuid, 2**64, 0, status.created)
    for leak in LEAKS:
        assert leak not in str(raised.value)
    assert "UPDATE" in caplog.text  # the operator's log has it all
