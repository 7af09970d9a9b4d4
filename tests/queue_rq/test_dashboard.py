"""The dashboard in a real browser on statuses real ``rq worker`` processes write."""

from __future__ import annotations

from pathlib import Path

import pytest

import taskstatus
from taskstatus import State
from taskstatus.web import create_app
from taskstatus.web import events as web_events
from tests.queue_rq import jobs
from tests.waiting import find, poll, wait_failed, wait_state
from tests.web.browser import Visitor
from tests.web.conftest import ROOT, header_user
from tests.web.live import live_server

pytestmark = pytest.mark.timeout(180)

NASTY = "<img src=x onerror=alert(1)>"


def test_owner_follows_cancels_and_reads_failures(
    rq_cell, uid, tmp_path: Path, browser, expect, screenshots, monkeypatch
) -> None:
    monkeypatch.setattr(web_events, "POLL_INTERVAL", 0.2)
    owner, other = str(uid), f"{uid}-other"
    failed = rq_cell.queue.enqueue(jobs.explode, uid, "the file has no header")
    rq_cell.queue.enqueue(jobs.named, uid, NASTY)
    rq_cell.queue.enqueue(jobs.add, 1, 2, user_id=other)
    rq_cell.work()
    failed_status = wait_failed(failed.id)
    marker = tmp_path / "running"
    running = rq_cell.queue.enqueue(jobs.long_running, uid, str(marker), seconds=60)
    rq_cell.start()
    poll(marker.exists, bool, "the long job to run")
    running_status = wait_state(running.id, State.IN_PROGRESS)

    with (
        live_server(create_app(header_user)) as server,
        Visitor(browser, server.url, owner, screenshots) as mine,
        Visitor(browser, server.url, other, screenshots) as theirs,
        Visitor(browser, server.url, ROOT, screenshots) as root,
    ):
        page = mine.page

        # 1. The owner's list: their three tasks, not the other user's.
        page.goto("/")
        rows = page.locator("tbody tr.task")
        expect(rows).to_have_count(3)
        shown = {row.get_attribute("data-uuid") for row in rows.all()}
        assert shown == {str(s.uuid) for s in taskstatus.statuses(user_id=uid)}
        mine.shot("1-own-list")

        # 5. The name that tries to be HTML is text, and nothing ran.
        expect(page.get_by_role("link", name=NASTY, exact=True)).to_be_visible()
        mine.shot("5-name-as-text")

        # 2. The running task's bar advances without a reload.
        page.goto(f"/tasks/{running_status.uuid}")
        page.evaluate("window.notReloaded = true")
        bar = page.locator("#status").get_by_role("progressbar")
        first = poll(lambda: bar.get_attribute("aria-valuetext"), bool, "the bar to show steps")
        expect(bar).not_to_have_attribute("aria-valuetext", first)
        assert page.evaluate("window.notReloaded") is True
        mine.shot("2-progress-advances")

        # 3. Cancel, confirm: Canceled, on the page and for the worker.
        page.locator("button[data-action=cancel]").click()
        page.get_by_role("dialog").get_by_role("button", name="Cancel task").click()
        expect(page.locator("#status [data-field=state]")).to_have_text("Canceled")
        mine.shot("3-canceled")
        wait_state(running.id, State.CANCELED)

        # 4. Another user at that address: the not-found page.
        answer = theirs.page.goto(f"/tasks/{running_status.uuid}")
        assert answer is not None and answer.status == 404
        expect(theirs.page.get_by_role("heading", level=1)).to_have_text("Task not found")
        theirs.shot("4-not-found")

        # 6. A failure: its message to the owner, its traceback to a superuser only.
        for visitor, sees_traceback in ((mine, False), (root, True)):
            visitor.page.goto(f"/tasks/{failed_status.uuid}")
            expect(visitor.page.get_by_role("alert")).to_contain_text("the file has no header")
            traceback = visitor.page.locator("details.traceback")
            if sees_traceback:
                traceback.locator("summary").click()
                expect(traceback).to_contain_text("ValueError: the file has no header")
            else:
                expect(traceback).to_have_count(0)
            visitor.shot("6-failure")

        for visitor in (mine, theirs, root):
            assert visitor.dialogs == [], visitor.dialogs
            assert visitor.errors == [], visitor.errors
    assert find(running.id).state is State.CANCELED
