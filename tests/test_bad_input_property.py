"""Property test of bad input over the public API and the CLI (issue 14): generated text (NUL,
lone surrogates, CR/LF, long), huge and negative ints and wrong types. Every call succeeds or
raises a documented exception naming its argument; a task never fails over its own progress
text; no owner-visible text shows SQL, parameters or the driver's words; SQLite and PostgreSQL
agree on every outcome. Each example works on rows of its own."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from taskstatus import ConfigurationError, NotFound, State, TaskStatus, Tracker
from taskstatus.cli import cli

from .helpers import event, publish

pytestmark = pytest.mark.timeout(300)

#: What the API documents it raises for bad input.
DOCUMENTED = (ValueError, TypeError, NotFound, ConfigurationError)
#: What an owner must never read (unless the task itself wrote it).
LEAKS = ("SQL", "INSERT", "UPDATE", "parameters", "psycopg", "sqlite3", "DataError")

PIECES = st.sampled_from(
    ["\x00", "\ud800", "\udfff", "\r\n", "/", "..", "é", "😀", "%", "_", "'", "x" * 120, " "]
)
TEXT = st.lists(PIECES | st.text(max_size=8), max_size=5).map("".join)
INTS = st.sampled_from([0, 1, 2**31, 2**62, 2**63 - 1, 2**63, 2**64, -1, -(2**63)]) | st.integers()
WRONG = st.sampled_from([None, True, 1.5, float("nan"), b"\x00", ["x"], object()])
ANY = TEXT | INTS | WRONG

#: The name each call's error must contain (any of them).
ARGUMENT_NAMES = {
    "set_state": ("set_state",),
    "set_name": ("set_name",),
    "increment_completed_steps": ("steps",),
    "increment_total_steps": ("steps",),
    "fail": ("fail", "message"),
    "add_artifact": ("file", "path", "url", "text", "filename", "artifact name"),
}

CALLS = st.one_of(
    st.tuples(st.sampled_from(["set_state", "set_name", "fail"]), TEXT | WRONG),
    st.tuples(
        st.sampled_from(["increment_completed_steps", "increment_total_steps"]), INTS | WRONG
    ),
    st.tuples(
        st.just("add_artifact"),
        st.fixed_dictionaries(
            {},
            optional={
                "name": TEXT | WRONG,
                "text": TEXT | WRONG,
                "url": st.builds("https://example.com/{}".format, TEXT) | TEXT | WRONG,
                "file": st.binary(max_size=8) | TEXT,
                "filename": TEXT,
            },
        ),
    ),
)
FILTERS = st.fixed_dictionaries(
    {},
    optional={
        "user_id": ANY,
        "state": ANY | st.sampled_from(list(State)),
        "search": TEXT | WRONG,
        "queue": TEXT | WRONG,
        "task_class": TEXT | WRONG,
        "limit": INTS | WRONG,
        "offset": INTS | WRONG,
        "parent": TEXT,
    },
)
CLI_ARGS = st.one_of(
    st.tuples(st.just("show"), TEXT).map(list),
    st.lists(
        st.sampled_from(
            ["--user", "--state", "--search", "--parent", "--limit", "--offset"]
        ).flatmap(lambda option: st.tuples(st.just(option), TEXT | INTS.map(str))),
        max_size=3,
    ).map(lambda pairs: ["list", *(part for pair in pairs for part in pair)]),
)


def outcome(
    names: tuple[str, ...], function: Callable[..., Any], *args: Any, **kwargs: Any
) -> tuple[str, Any]:
    """("ok", what ``function`` returned) or (the documented exception's type, ""), checking
    that its message names the argument (one of ``names``)."""
    try:
        return "ok", function(*args, **kwargs)
    except DOCUMENTED as exc:
        error = exc
    assert any(name in str(error) for name in names), (names, error)
    return type(error).__name__, ""


def owner_texts(status: TaskStatus) -> list[str]:
    return [status.name, status.state_text, *(a.text or "" for a in status.artifacts)]


def assert_no_leak(texts: list[str], given: str) -> None:
    for leak in LEAKS:
        if leak not in given:
            assert not any(leak in text for text in texts), (leak, texts)


def play(tracker: Tracker, task_id: str, live: bool, calls: list[tuple[str, Any]]) -> list[Any]:
    """Run the calls on a new task, through its running handle (``live``) or the API object;
    the task then succeeds unless a call failed it. Returns what an owner can see."""
    status = publish(tracker, task_id, user_id=task_id)
    handle: Any = tracker.lifecycle.start(event(task_id)) if live else tracker.get(status.uuid)
    if not live:
        handle.start()
    results = []
    failed = False
    for method, argument in calls:
        if method == "add_artifact":
            result = outcome(ARGUMENT_NAMES[method], handle.add_artifact, **argument)
            results.append(result[0])
            continue
        target = tracker.get(status.uuid) if method == "fail" else handle
        result = outcome(ARGUMENT_NAMES[method], getattr(target, method), argument)
        results.append(result[0])
        if method in ("set_state", "set_name") and isinstance(argument, str) and argument:
            assert result[0] == "ok", "a task must never fail over its own progress text"
        failed = failed or (method == "fail" and result[0] == "ok")
    if live:
        tracker.lifecycle.end(handle)
    else:
        handle.succeed()
    final = tracker.get(status.uuid)
    assert final.state is (State.FAILED if failed else State.SUCCEEDED)
    given = repr(calls)
    assert_no_leak(owner_texts(final), given)
    artifacts = sorted((a.name, a.text, a.url, a.filename) for a in final.artifacts)
    return [results, final.state, final.name, final.total_steps, final.completed_steps, artifacts]


@pytest.fixture
def trackers(make_url, make_tracker) -> list[Tracker]:
    return [
        make_tracker(make_url(backend), progress_interval=0) for backend in ("sqlite", "postgresql")
    ]


PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(calls=st.lists(CALLS, max_size=6), live=st.booleans())
@example(calls=[("set_state", "a\x00b"), ("increment_total_steps", 2**62)] * 2, live=True)
@example(
    calls=[("set_name", "\ud800" * 300), ("add_artifact", {"url": "https://x.org/\x00"})],
    live=False,
)
def test_task_calls_with_bad_input(trackers, calls, live):
    task_id = f"p-{uuid.uuid4().hex[:12]}"
    sqlite, postgres = (play(tracker, task_id, live, calls) for tracker in trackers)
    assert sqlite == postgres


@PROPERTY
@given(filters=FILTERS, key=ANY)
@example(filters={"user_id": "7\x00", "limit": 2**63}, key="\x00")
@example(filters={"state": 3, "offset": 2**63}, key="\ud800")
def test_queries_with_bad_input(trackers, filters, key):
    task_id = f"q-{uuid.uuid4().hex[:12]}"
    names = (*filters, "id", "task_id")
    outcomes = []
    for tracker in trackers:
        publish(tracker, task_id, user_id=task_id)
        found = outcome(names, tracker.statuses, **filters)
        listed = (found[0], sorted(s.task_id for s in found[1]) if found[0] == "ok" else "")
        by_uuid = outcome(("id",), tracker.get, key)
        by_task_id = outcome(("task_id",), tracker.get_by_task_id, key)
        outcomes.append((listed, by_uuid[0], by_task_id[0]))
    assert outcomes[0] == outcomes[1]


@PROPERTY
@given(args=CLI_ARGS)
@example(args=["list", "--user", "7\x00"])
@example(args=["list", "--search", "\ud800"])
@example(args=["list", "--limit", str(2**63)])
@example(args=["show", "\x00"])
def test_cli_with_bad_input(trackers, args):
    runner = CliRunner(env={"TASKSTATUS_URL": None, "NO_COLOR": "1"})
    codes = []
    for tracker in trackers:
        result = runner.invoke(cli, ["--url", tracker.settings.url, *args])
        assert result.exception is None or isinstance(result.exception, SystemExit), result
        assert result.exit_code in (0, 1, 2), result.output
        assert "Traceback" not in result.output
        if result.exit_code == 1:
            assert result.stderr.startswith("Error: ")
            assert len(result.stderr.splitlines()) == 1, result.stderr
            assert_no_leak([result.stderr], repr(args))
        codes.append(result.exit_code)
    assert codes[0] == codes[1]
