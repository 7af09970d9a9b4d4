"""The dashboard in a real browser: live progress, cancel, escaping, the not-found page.

Statuses are written by the test process into the store the server reads (the queue test
packages run the same pages on statuses real workers write).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from taskstatus import State
from taskstatus.web import create_app
from taskstatus.web import events as web_events
from tests.helpers import publish
from tests.web.browser import Visitor
from tests.web.conftest import OTHER, OWNER, header_user
from tests.web.live import live_server

pytestmark = pytest.mark.timeout(120)

NASTY = "<img src=x onerror=alert(1)>"


@pytest.fixture
def store(make_tracker, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(web_events, "POLL_INTERVAL", 0.2)
    return make_tracker(f"sqlite:///{tmp_path / 'store.db'}")


def test_list_and_detail_follow_tasks_live(browser, screenshots, store, expect) -> None:
    running = publish(store, user_id=OWNER, name="Export", total_steps=10)
    store.start(running)
    publish(store, user_id=OWNER, name=NASTY)
    publish(store, user_id=OTHER, name="Their import")
    with live_server(create_app(header_user, tracker=store)) as server:
        owner = Visitor(browser, server.url, OWNER, screenshots)
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

        other = Visitor(browser, server.url, OTHER, screenshots)
        answer = other.page.goto(f"/tasks/{running.uuid}")
        assert answer is not None
        assert answer.status == 404
        expect(other.page.get_by_role("heading", level=1)).to_have_text("Task not found")
        other.shot("not-found")

        assert owner.dialogs == [] and other.dialogs == []
        assert owner.errors == [] and other.errors == []
