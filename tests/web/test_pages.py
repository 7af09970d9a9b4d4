"""The dashboard's pages as HTML: who sees what, escaping, the security headers, links."""

from __future__ import annotations

import re
import warnings
from html.parser import HTMLParser

import pytest
from fastapi import FastAPI

from taskstatus import State
from taskstatus.web import create_app
from taskstatus.web.pages import CSP, age
from tests.helpers import event, publish
from tests.web.conftest import OTHER, OWNER, ROOT, header_user

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

NASTY = "<img src=x onerror=alert(1)>"
TRACE = 'Traceback (most recent call last):\n  File "job.py"\nRuntimeError: disk full'


class Page(HTMLParser):
    """The elements of a page (tag and attributes, in order) and its text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.chunks: list[str] = []
        self.feed(html)
        self.text = " ".join(" ".join(self.chunks).split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    def having(self, attribute: str, value: str | None = None) -> list[dict[str, str | None]]:
        return [
            attrs
            for _, attrs in self.elements
            if attribute in attrs and (value is None or attrs[attribute] == value)
        ]

    def rows(self) -> list[str | None]:
        """The uuids of the list's rows (not the row template's)."""
        return [a["data-uuid"] for a in self.having("class", "task") if a["data-uuid"]]


def page(response) -> Page:
    assert response.headers["content-type"].startswith("text/html")
    return Page(response.text)


@pytest.fixture
def on_memory(memory_tracker, make_client):
    """``on_memory(user)``: a client of the app on the in-memory tracker."""
    return lambda user=None: make_client(memory_tracker, user)


@pytest.fixture
def owned(tracker):
    """Two tasks of the owner (one named to break out of HTML), one of another user."""
    mine = publish(tracker, user_id=OWNER, name="Export")
    nasty = publish(tracker, user_id=OWNER, name=NASTY)
    theirs = publish(tracker, user_id=OTHER, name="Their import")
    return mine, nasty, theirs


def test_each_caller_lists_the_tasks_they_may_see(tracker, owned, as_user):
    mine, nasty, theirs = owned
    assert page(as_user(OWNER).get("/")).rows() == [str(nasty.uuid), str(mine.uuid)]
    assert page(as_user(OTHER).get("/")).rows() == [str(theirs.uuid)]
    everything = page(as_user(ROOT).get("/"))
    assert set(everything.rows()) == {str(s.uuid) for s in owned}
    assert everything.having("name", "user_id"), "a superuser has an owner filter"
    assert not page(as_user(OWNER).get("/")).having("name", "user_id")
    filtered = page(as_user(ROOT).get("/", params={"user_id": OTHER}))
    assert filtered.rows() == [str(theirs.uuid)]
    refused = as_user(OWNER).get("/", params={"user_id": OTHER})
    assert refused.status_code == 403
    assert "cannot list" in refused.text
    assert page(refused).rows() == []


def test_detail_of_someone_elses_task_is_the_not_found_page(tracker, owned, as_user):
    mine, _, theirs = owned
    assert as_user(OWNER).get(f"/tasks/{mine.uuid}").status_code == 200
    for path in (f"/tasks/{theirs.uuid}", "/tasks/not-a-uuid", f"/tasks/{mine.uuid}0"):
        answer = as_user(OWNER).get(path)
        assert answer.status_code == 404, path
        assert "Task not found" in answer.text
        assert "Their import" not in answer.text
    assert as_user(ROOT).get(f"/tasks/{theirs.uuid}").status_code == 200


def test_nobody_signed_in_gets_the_sign_in_page(memory_tracker, on_memory, make_client):
    mine = publish(memory_tracker, user_id=OWNER, name="Export")
    challenged = create_app(header_user, tracker=memory_tracker, challenge='Bearer realm="x"')
    for path in ("/", f"/tasks/{mine.uuid}"):
        answer = on_memory(None).get(path)
        assert answer.status_code == 401
        assert "Sign in" in answer.text
        assert "Export" not in answer.text
        assert "www-authenticate" not in answer.headers
        # The app's challenge, as on the API's 401.
        answer = make_client(challenged).get(path)
        assert answer.headers["www-authenticate"] == 'Bearer realm="x"'


def test_every_page_forbids_inline_script_and_style(memory_tracker, on_memory):
    status = publish(memory_tracker, user_id=OWNER, name=NASTY)
    for user, path in (
        (OWNER, "/"),
        (OWNER, f"/tasks/{status.uuid}"),
        (OTHER, f"/tasks/{status.uuid}"),
        (None, "/"),
        (OWNER, "/?created_after=yesterday"),
    ):
        answer = on_memory(user).get(path)
        assert answer.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP
        assert "unsafe-inline" not in CSP
        assert answer.headers["x-content-type-options"] == "nosniff"
        found = page(answer)
        scripts = [attrs for tag, attrs in found.elements if tag == "script"]
        assert scripts and all(attrs.get("src") for attrs in scripts), path
        for tag, attrs in found.elements:
            assert "style" not in attrs, (path, tag)
            assert not any(name.startswith("on") for name in attrs), (path, tag, attrs)


def test_user_supplied_strings_are_escaped(memory_tracker, on_memory):
    status = publish(memory_tracker, user_id=OWNER, name=NASTY)
    memory_tracker.start(status)
    memory_tracker.set_state(status, f"stage {NASTY}")
    memory_tracker.add_artifact(status, name=NASTY, text=f"text {NASTY}")
    for path in ("/", f"/tasks/{status.uuid}", f"/?search={NASTY}"):
        answer = on_memory(OWNER).get(path)
        assert "<img" not in answer.text, path
        assert [tag for tag, _ in page(answer).elements if tag == "img"] == []
    detail = page(on_memory(OWNER).get(f"/tasks/{status.uuid}"))
    assert NASTY in detail.text
    assert f"stage {NASTY}" in detail.text
    assert f"text {NASTY}" in detail.text


def test_a_row_shows_state_stage_progress_and_attempts(memory_tracker, on_memory):
    status = publish(memory_tracker, user_id=OWNER, name="Export", total_steps=4)
    memory_tracker.start(status)
    memory_tracker.set_state(status, "Sending emails")
    memory_tracker.increment_steps(status, 1, 0)
    found = page(on_memory(OWNER).get("/"))
    (bar,) = found.having("aria-label", "Progress of Export")
    assert (bar["aria-valuenow"], bar["aria-valuemin"], bar["aria-valuemax"]) == ("25", "0", "100")
    assert bar["aria-valuetext"] == "1 of 4 steps"
    assert bar["role"] == "progressbar"
    assert [s for s in found.having("data-field", "state") if s["data-state"] == "in-progress"]
    assert "In Progress Sending emails" in found.text
    assert "1 / 4" in found.text


def test_filters_and_pages(memory_tracker, on_memory):
    made = [publish(memory_tracker, user_id=OWNER, name=f"Task {i}") for i in range(55)]
    memory_tracker.cancel(made[0])
    client = on_memory(OWNER)
    first = page(client.get("/"))
    assert first.rows() == [str(s.uuid) for s in reversed(made)][:50]
    (older,) = first.having("rel", "next")
    second = page(client.get(older["href"]))
    assert second.rows() == [str(s.uuid) for s in reversed(made[:5])]
    assert not second.having("rel", "next")
    canceled = page(client.get("/", params={"state": State.CANCELED.value}))
    assert canceled.rows() == [str(made[0].uuid)]
    assert page(client.get("/", params={"search": "task 5"})).rows() == [
        str(made[i].uuid) for i in (54, 53, 52, 51, 50, 5)
    ]
    # A submitted form sends its empty fields: they are dropped from the address.
    answer = client.get("/", params={"search": "Task 1", "state": "", "queue": ""})
    assert answer.history[0].status_code == 303
    assert answer.url.query == b"search=Task+1"
    bad = client.get("/", params={"created_after": "soon"})
    assert bad.status_code == 400
    assert "created_after must be an ISO 8601 date" in bad.text


def test_detail_shows_fields_tree_artifacts_and_actions(memory_tracker, on_memory):
    group = publish(memory_tracker, user_id=OWNER, name="Batch", container="taskstatus.group")
    child = publish(memory_tracker, user_id=OWNER, name="Part one", parent=group.task_id)
    memory_tracker.add_artifact(child, file=b"a,b\n", filename="out.csv")
    memory_tracker.add_artifact(child, name="Link", url="https://example.com/r/1")
    detail = page(on_memory(OWNER).get(f"/tasks/{group.uuid}"))
    (node,) = detail.having("class", "node")
    assert node["data-uuid"] == str(child.uuid)
    assert detail.having("href", f"http://testserver/tasks/{child.uuid}")
    assert detail.having("data-action", "cancel")
    assert detail.having("data-action", "delete")
    assert "Container of tasks" in detail.text

    shown = page(on_memory(OWNER).get(f"/tasks/{child.uuid}"))
    (download,) = shown.having("download")
    assert on_memory(OWNER).get(download["href"]).content == b"a,b\n"
    assert shown.having("href", "https://example.com/r/1")
    assert shown.having("href", f"http://testserver/tasks/{group.uuid}"), "a link to its parent"
    assert all(text in shown.text for text in ("Part one", "Batch", child.task_id))


def test_a_failure_shows_its_message_and_the_traceback_only_to_superusers(
    memory_tracker, on_memory
):
    memory_tracker.lifecycle.publish(event("broken", user_id=OWNER, name="Import"))
    memory_tracker.lifecycle.end(
        event("broken"), exception=RuntimeError("disk full"), traceback=TRACE
    )
    status = memory_tracker.get_by_task_id("broken")
    owner = on_memory(OWNER).get(f"/tasks/{status.uuid}").text
    root = on_memory(ROOT).get(f"/tasks/{status.uuid}").text
    assert "disk full" in owner
    assert "disk full" in root
    assert "Traceback (most recent call last)" not in owner
    assert "Traceback (most recent call last)" in root
    (cancel,) = page(on_memory(OWNER).get(f"/tasks/{status.uuid}")).having("data-action", "cancel")
    assert "hidden" in cancel, "an ended task cannot be canceled"


def test_links_honour_the_mount_path_and_root_path(memory_tracker, make_client):
    status = publish(memory_tracker, user_id=OWNER, name="Export")
    app = create_app(header_user, tracker=memory_tracker)
    parent = FastAPI()
    parent.mount("/tasks", app)
    for root_path, prefix in (("", "/tasks"), ("/proxied", "/proxied/tasks")):
        client: TestClient = make_client(parent, OWNER, root_path=root_path)
        found = page(client.get(f"{prefix}/"))
        detail = f"http://testserver{prefix}/tasks/{status.uuid}"
        assert found.having("href", detail)
        (table,) = found.having("data-events")
        assert table["data-events"] == f"http://testserver{prefix}/api/v1/events"
        assert client.get(detail).status_code == 200
        for _, attrs in found.elements:
            for name in ("src", "href"):
                link = attrs.get(name)
                if link and link.startswith("http://testserver/"):
                    assert link.startswith(f"http://testserver{prefix}/"), link
                    assert client.get(link).status_code == 200, link
        assert found.having("rel", "stylesheet")


def test_age_in_its_largest_unit():
    from datetime import datetime, timedelta, timezone

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert [age(now - timedelta(seconds=s), now) for s in (5, 61, 7300, 90000)] == [
        "5 s",
        "1 min",
        "2 h",
        "1 d",
    ]


def test_detail_timeline_lists_each_retry(tracker, as_user):
    status = publish(tracker, user_id=OWNER, name="Export")
    quiet = page(as_user(OWNER).get(f"/tasks/{status.uuid}"))
    (box,) = quiet.having("data-field", "retries-box")
    assert "hidden" in box and "Attempt 1" not in quiet.text
    tracker.hook.taskstatus_prerun(event=event(status.task_id))
    tracker.hook.taskstatus_retry(event=event(status.task_id, exception=OSError(NASTY)))
    tracker.hook.taskstatus_prerun(event=event(status.task_id))
    tracker.hook.taskstatus_retry(event=event(status.task_id, message="Rate limited"))
    (first, second) = tracker.attempts(status)
    answer = as_user(OWNER).get(f"/tasks/{status.uuid}")
    assert "<img" not in answer.text
    detail = page(answer)
    (box,) = detail.having("data-field", "retries-box")
    assert "hidden" not in box
    when = "%Y-%m-%d %H:%M:%S"
    text = re.sub(r" ([:,])", r"\1", detail.text)  # as a browser shows it, without the gaps
    assert (
        f"Attempt 1: started {first.started_at:{when}}, retried {first.retried_at:{when}} "
        f"OSError: {NASTY} "
        f"Attempt 2: started {second.started_at:{when}}, retried {second.retried_at:{when}} "
        "Rate limited"
    ) in text
