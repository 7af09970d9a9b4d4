"""The dashboard in a real browser: live progress, cancel, escaping, the not-found page.

Statuses are written by the test process into the store the server reads (the queue test
packages run the same pages on statuses real workers write).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from taskstatus import State
from taskstatus.web import create_app
from taskstatus.web import events as web_events
from taskstatus.web.serve import serve_app
from tests.helpers import event, publish
from tests.web.browser import Visitor
from tests.web.conftest import OTHER, OWNER, ROOT, header_user
from tests.web.live import live_server

pytestmark = pytest.mark.timeout(120)

NASTY = "<img src=x onerror=alert(1)>"
TRACE = 'Traceback (most recent call last):\n  File "job.py"\nRuntimeError: disk full'
PHONE = {"width": 375, "height": 740}
#: Whether the page fits the window's width (nothing to scroll sideways).
FITS = "document.documentElement.scrollWidth <= window.innerWidth"


@pytest.fixture
def store(make_tracker, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(web_events, "POLL_INTERVAL", 0.2)
    return make_tracker(f"sqlite:///{tmp_path / 'store.db'}")


def test_list_and_detail_follow_tasks_live(browser, screenshots, store, expect) -> None:
    running = publish(store, user_id=OWNER, name="Export", total_steps=10)
    store.start(running)
    publish(store, user_id=OWNER, name=NASTY)
    publish(store, user_id=OTHER, name="Their import")
    with (
        live_server(create_app(header_user, tracker=store)) as server,
        Visitor(browser, server.url, OWNER, screenshots) as owner,
        Visitor(browser, server.url, OTHER, screenshots) as other,
    ):
        page = owner.page
        page.goto("/")
        rows = page.locator("tbody tr.task")
        expect(rows).to_have_count(2)
        expect(page.get_by_role("link", name=NASTY, exact=True)).to_be_visible()
        expect(page.get_by_text("Their import")).to_have_count(0)
        owner.shot("list")

        publish(store, user_id=OWNER, name="Arrives later")
        expect(rows.first.get_by_role("link")).to_have_text("Arrives later")
        store.increment_steps(running, 2, 0)
        list_bar = page.get_by_role("progressbar", name="Progress of Export")
        expect(list_bar).to_have_attribute("aria-valuenow", "20")
        owner.shot("list-live")

        page.get_by_role("link", name="Export", exact=True).click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Export")
        bar = page.get_by_role("progressbar", name="Progress of Export")
        expect(bar).to_have_attribute("aria-valuenow", "20")
        store.increment_steps(running, 3, 0)
        expect(bar).to_have_attribute("aria-valuenow", "50")
        expect(page.locator("#status [data-field=steps]")).to_have_text("5 / 10")
        owner.shot("detail-live")

        page.locator("button[data-action=cancel]").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("Cancel “Export”?")
        owner.shot("confirm-cancel")
        dialog.get_by_role("button", name="Cancel task").click()
        expect(page.locator("#status [data-field=state]")).to_have_text("Canceled")
        expect(page.locator("button[data-action=cancel]")).to_be_hidden()
        owner.shot("canceled")
        assert store.get(running.uuid).state is State.CANCELED

        answer = other.page.goto(f"/tasks/{running.uuid}")
        assert answer is not None
        assert answer.status == 404
        expect(other.page.get_by_role("heading", level=1)).to_have_text("Task not found")
        other.shot("not-found")

        # Keep it: nothing happens. Delete: back to the list, without the task.
        page.locator("button[data-action=delete]").click()
        dialog.get_by_role("button", name="Keep it").click()
        expect(dialog).to_be_hidden()
        expect(page.locator("button[data-action=delete]")).to_be_focused()
        page.locator("button[data-action=delete]").click()
        expect(dialog).to_contain_text("Delete “Export”")
        dialog.get_by_role("button", name="Delete").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Your tasks")
        expect(page.get_by_role("link", name="Export", exact=True)).to_have_count(0)
        assert [s.name for s in store.statuses(user_id=OWNER)] == ["Arrives later", NASTY]

        assert owner.dialogs == [] and other.dialogs == []
        assert owner.errors == [] and other.errors == []


@pytest.fixture
def varied(store):
    """A container with a running and a failed child, a success with artifacts, and a name
    written as HTML: every part the pages have."""
    group = publish(store, user_id=OWNER, name="Nightly batch", container="taskstatus.group")
    running = publish(store, user_id=OWNER, name="Resize images", parent=group.task_id)
    store.start(running)
    store.set_state(running, "Uploading")
    store.increment_steps(running, 1, 3)
    store.lifecycle.publish(
        event("broken", user_id=OWNER, name="Import", parent_task_id=group.task_id)
    )
    store.lifecycle.end(event("broken"), exception=RuntimeError("disk full"), traceback=TRACE)
    done = publish(store, user_id=OWNER, name="Export")
    store.start(done)
    store.add_artifact(done, file=b"a,b\n", filename="export.csv")
    store.add_artifact(done, name="Link", url="https://example.com/r/1")
    store.add_artifact(done, name="Summary", text="2 rows")
    store.lifecycle.end(event(done.task_id))
    publish(store, user_id=OWNER, name=NASTY)
    return group, store.get_by_task_id("broken"), done


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_pages_are_accessible_and_fit_a_phone(
    browser, screenshots, store, varied, expect, scheme
) -> None:
    group, failed, done = varied
    with live_server(create_app(header_user, tracker=store)) as server:
        for user, viewport in ((ROOT, {"width": 1280, "height": 800}), (OWNER, PHONE)):
            with Visitor(
                browser, server.url, user, screenshots, color_scheme=scheme, viewport=viewport
            ) as visitor:
                page = visitor.page
                page.goto("/")
                expand = page.locator("tr", has_text="Nightly batch").locator("button.expand")
                expect(expand).to_have_accessible_name("Show the children of Nightly batch")
                expand.focus()
                page.keyboard.press("Enter")
                expect(page.get_by_role("link", name="Resize images")).to_be_visible()
                expect(expand).to_have_attribute("aria-expanded", "true")
                expect(expand).to_have_accessible_name("Hide the children of Nightly batch")
                for path in (
                    "/",
                    f"/tasks/{group.uuid}",
                    f"/tasks/{failed.uuid}",
                    f"/tasks/{done.uuid}",
                ):
                    if path != "/":
                        page.goto(path)
                    expect(page.get_by_role("heading", level=1)).to_be_visible()
                    assert visitor.violations() == [], (user, scheme, path)
                    assert page.evaluate(FITS), f"{path} scrolls sideways at {viewport}"
                    visitor.shot(f"{scheme}-{path.strip('/').replace('/', '-') or 'list'}")
                assert visitor.dialogs == [] and visitor.errors == []


def test_without_streams_the_pages_poll_and_say_so(browser, screenshots, store, expect) -> None:
    running = publish(store, user_id=OWNER, name="Export", total_steps=10)
    store.start(running)
    with (
        live_server(create_app(header_user, tracker=store)) as server,
        Visitor(browser, server.url, OWNER, screenshots) as owner,
    ):
        page = owner.page
        # A proxy that refuses event streams.
        page.route(re.compile(r"/events(\?|$)"), lambda route: route.fulfill(status=503))
        notice = page.get_by_role("status")
        for path, steps, shown in (("/", 2, "20"), (f"/tasks/{running.uuid}", 3, "50")):
            page.goto(path)
            expect(notice).to_contain_text("Live updates are unavailable")
            store.increment_steps(running, steps, 0)
            bar = page.get_by_role("progressbar", name="Progress of Export")
            expect(bar).to_have_attribute("aria-valuenow", shown)
            owner.shot(f"polling-{path.strip('/').split('/')[0] or 'list'}")
        assert owner.dialogs == []


@pytest.mark.parametrize("live", ["streams", "polls"])
def test_a_filtered_list_follows_its_rows_out_of_the_filter(
    browser, screenshots, store, expect, live
) -> None:
    running = publish(store, user_id=OWNER, name="Export", total_steps=4)
    store.start(running)
    done = publish(store, user_id=OWNER, name="Earlier export")
    store.start(done)
    store.lifecycle.end(event(done.task_id))
    with (
        live_server(create_app(header_user, tracker=store)) as server,
        Visitor(browser, server.url, OWNER, screenshots) as owner,
    ):
        page = owner.page
        if live == "polls":
            page.route(re.compile(r"/events(\?|$)"), lambda route: route.fulfill(status=503))
        page.goto("/?state=In+Progress")
        rows = page.locator("tbody tr.task")
        expect(rows).to_have_count(1)
        row = page.locator("tr", has_text="Export")
        store.increment_steps(running, 2, 0)
        expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "50")

        # The row that leaves In Progress goes on showing its changes, to its end.
        store.lifecycle.end(event(running.task_id))
        expect(row.locator("[data-field=state]")).to_have_text("Succeeded")
        expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
        owner.shot(f"filtered-row-ended-{live}")

        # New rows come only in the state filtered on: a pending one does not, a started one
        # does (after the pending one's event, which the stream sent first; a poll reads
        # both at once).
        queued = publish(store, user_id=OWNER, name="Queued")
        started = publish(store, user_id=OWNER, name="Started")
        store.start(started)
        expect(rows.first.get_by_role("link")).to_have_text("Started")
        expect(page.locator(f'tr[data-uuid="{queued.uuid}"]')).to_have_count(0)
        expect(rows).to_have_count(2)
        assert owner.dialogs == []
        # The refused streams are failed loads to the browser; nothing else failed.
        assert [e for e in owner.errors if "status of 503" not in e] == []


def test_an_operator_signs_in_with_the_token_and_out(browser, screenshots, store, expect) -> None:
    running = publish(store, user_id=OWNER, name="Export", total_steps=10)
    store.start(running)
    with (
        live_server(serve_app(store, "s3cret")) as server,
        Visitor(browser, server.url, None, screenshots) as operator,
    ):
        page = operator.page
        answer = page.goto(f"/tasks/{running.uuid}")
        assert answer is not None and answer.status == 401
        heading = page.get_by_role("heading", level=1)
        expect(heading).to_have_text("Sign in to see your tasks")
        token = page.get_by_label("Token")
        expect(token).to_be_focused()
        assert operator.violations() == []
        operator.shot("sign-in")

        token.fill("not it")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text("That is not this server's token.")
        expect(token).to_have_attribute("aria-invalid", "true")
        operator.shot("wrong-token")

        page.get_by_label("Token").fill("s3cret")
        page.get_by_role("button", name="Sign in").click()
        # Back on the page asked for, which follows the task on the cookie alone.
        expect(heading).to_have_text("Export")
        assert page.url == f"{server.url}/tasks/{running.uuid}"
        expect(page.get_by_text("Signed in as operator")).to_be_visible()
        cookies = operator.context.cookies()
        assert [c["name"] for c in cookies] == ["taskstatus_signin"]
        assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
        assert "s3cret" not in cookies[0]["value"]
        store.increment_steps(running, 3, 0)
        bar = page.get_by_role("progressbar", name="Progress of Export")
        expect(bar).to_have_attribute("aria-valuenow", "30")
        page.locator("button[data-action=cancel]").click()
        page.get_by_role("dialog").get_by_role("button", name="Cancel task").click()
        expect(page.locator("#status [data-field=state]")).to_have_text("Canceled")
        assert store.get(running.uuid).state is State.CANCELED
        operator.shot("signed-in")

        page.get_by_role("button", name="Sign out").click()
        expect(heading).to_have_text("Sign in to see your tasks")
        assert operator.context.cookies() == []
        page.goto(f"/tasks/{running.uuid}")
        expect(heading).to_have_text("Sign in to see your tasks")
        operator.shot("signed-out")
        assert operator.dialogs == []
        # The browser reports each sign-in page's 401 as a failed load; nothing else failed.
        assert [e for e in operator.errors if "status of 401" not in e] == []


def test_detail_shows_each_retry_as_it_happens(browser, screenshots, store, expect) -> None:
    flaky = publish(store, user_id=OWNER, name="Sync")
    store.hook.taskstatus_prerun(event=event(flaky.task_id))
    with (
        live_server(create_app(header_user, tracker=store)) as server,
        Visitor(browser, server.url, OWNER, screenshots) as owner,
    ):
        page = owner.page
        page.goto(f"/tasks/{flaky.uuid}")
        retries = page.locator("#status ol.retries li")
        expect(page.locator("#status [data-field=retries-box]")).to_be_hidden()
        store.hook.taskstatus_retry(event=event(flaky.task_id, exception=OSError(NASTY)))
        expect(page.locator("#status [data-field=attempts]")).to_have_text("2")
        expect(retries).to_have_count(1)
        expect(retries.first).to_contain_text("Attempt 1")
        expect(retries.first.locator(".attempt-message")).to_have_text(f"OSError: {NASTY}")
        store.hook.taskstatus_prerun(event=event(flaky.task_id))
        store.hook.taskstatus_retry(event=event(flaky.task_id, message="Rate limited"))
        expect(retries).to_have_count(2)
        expect(retries.nth(1)).to_contain_text("Rate limited")
        owner.shot("detail-retries")
        page.reload()
        expect(retries).to_have_count(2)
