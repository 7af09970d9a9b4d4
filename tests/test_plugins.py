"""Plugins: lifecycle hooks, third-party stores by URL scheme and by entry point."""

from __future__ import annotations

import sys
import textwrap

import pytest

import taskstatus
from taskstatus import Settings, Tracker
from taskstatus.backends.memory import MemoryStore

from .helpers import event, publish


class Notifier:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    @taskstatus.hookimpl
    def taskstatus_publish(self, event):
        self.seen.append(("publish", event.task_id))

    @taskstatus.hookimpl
    def taskstatus_prerun(self, event):
        self.seen.append(("prerun", event.task_id))

    @taskstatus.hookimpl
    def taskstatus_stopped(self, status):
        self.seen.append((status.state.value, status.task_id))


def test_plugins_see_api_calls_like_queue_events(memory_tracker):
    notifier = Notifier()
    memory_tracker.register(notifier)
    s = publish(memory_tracker, "t")
    memory_tracker.lifecycle.start(event("t"))
    s.cancel()
    assert notifier.seen == [("publish", "t"), ("prerun", "t"), ("Canceled", "t")]


def test_failing_stopped_hook_does_not_undo_the_change(memory_tracker, caplog):
    class Broken:
        @taskstatus.hookimpl
        def taskstatus_stopped(self, status):
            raise RuntimeError("mail server down")

    memory_tracker.register(Broken())
    publish(memory_tracker, "t")
    memory_tracker.lifecycle.end(memory_tracker.lifecycle.start(event("t")))
    assert memory_tracker.get_by_task_id("t").state.value == "Succeeded"
    assert "taskstatus_stopped hook failed" in caplog.text


def test_plugin_can_veto_a_publish(memory_tracker):
    class Quota:
        @taskstatus.hookimpl(tryfirst=True)
        def taskstatus_publish(self, event):
            raise PermissionError(f"user {event.user_id} has too many tasks")

    memory_tracker.register(Quota())
    with pytest.raises(PermissionError, match="too many tasks"):
        publish(memory_tracker, "t")
    assert memory_tracker.count() == 0


class Scheme:
    def __init__(self) -> None:
        self.urls: list[str] = []

    @taskstatus.hookimpl
    def taskstatus_store(self, url):
        if url.startswith("custom://"):
            self.urls.append(url)
            return MemoryStore(url)
        return None


def test_store_for_a_new_scheme_from_a_plugin(tmp_path):
    from taskstatus.plugins import make_plugin_manager

    pm = make_plugin_manager()
    scheme = Scheme()
    pm.register(scheme)
    tracker = Tracker(Settings(url="custom://x", artifact_storage=str(tmp_path)), pm=pm)
    assert isinstance(tracker.store, MemoryStore) and scheme.urls == ["custom://x"]
    publish(tracker, "t")
    assert tracker.get_by_task_id("t").user_id == "7"


def test_store_plugin_from_entry_point(tmp_path, monkeypatch):
    (tmp_path / "acme_store.py").write_text(
        textwrap.dedent("""
        import taskstatus
        from taskstatus.backends.memory import MemoryStore

        @taskstatus.hookimpl
        def taskstatus_store(url):
            return MemoryStore(url) if url.startswith("acme://") else None
    """)
    )
    dist = tmp_path / "acme_store-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-store\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[taskstatus]\nacme = acme_store\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        tracker = Tracker(Settings(url="acme://bucket", artifact_storage=str(tmp_path / "a")))
        assert isinstance(tracker.store, MemoryStore)
    finally:
        sys.modules.pop("acme_store", None)


def test_stopped_hook_gets_a_full_status(memory_tracker):
    seen = []

    class Inspect:
        @taskstatus.hookimpl
        def taskstatus_stopped(self, status):
            if status.is_container:
                seen.append(
                    (
                        status.completed_steps,
                        status.total_steps,
                        [c.task_id for c in status.children()],
                    )
                )

    memory_tracker.register(Inspect())
    publish(memory_tracker, "g", container="celery.group")
    publish(memory_tracker, "a", parent="g", total_steps=4)
    memory_tracker.lifecycle.end(memory_tracker.lifecycle.start(event("a")))
    assert seen == [(4, 4, ["a"])]


def test_store_plugin_through_configure(tmp_path):
    tracker = taskstatus.configure(
        url="custom://y", artifact_storage=str(tmp_path), plugins=[Scheme()]
    )
    try:
        assert isinstance(tracker.store, MemoryStore)
    finally:
        tracker.close()


def test_default_plugins_join_the_default_tracker(make_tracker, monkeypatch):
    from taskstatus import plugins

    monkeypatch.setattr(plugins, "_defaults", [])
    first, second = make_tracker("memory://"), make_tracker("memory://")
    previous = taskstatus.set_tracker(first)
    try:
        early = Notifier()
        plugins.register_default(early)
        assert taskstatus.set_tracker(second) is first
        late = Notifier()
        plugins.register_default(late)
        assert taskstatus.get_tracker() is second
    finally:
        taskstatus.set_tracker(previous)
    publish(first, "a")
    publish(second, "b")
    assert (early.seen, late.seen) == ([("publish", "a")], [("publish", "b")])
    # A tracker made later gets them all.
    publish(make_tracker("memory://"), "c")
    assert (early.seen[-1], late.seen[-1]) == (("publish", "c"), ("publish", "c"))
