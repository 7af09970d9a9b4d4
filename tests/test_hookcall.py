"""EventHook calls a lifecycle hook's implementations as pluggy's own call does: same order
(tryfirst, trylast, registration order), same arguments, the first exception stops the call,
wrappers wrap, and plugins registered or unregistered later count."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pluggy
import pytest

from taskstatus.events import TaskEvent
from taskstatus.hookcall import EventHook
from taskstatus.hookspecs import hookimpl
from taskstatus.plugins import make_plugin_manager

EVENT = TaskEvent(task_id="t-1", queue="celery", task_class="app.export")


class Recording:
    def __init__(self, calls: list[str], name: str, fail: bool = False) -> None:
        self.calls = calls
        self.name = name
        self.fail = fail

    @hookimpl
    def taskstatus_prerun(self, event: TaskEvent) -> None:
        self.calls.append(f"{self.name}:{event.task_id}")
        if self.fail:
            raise RuntimeError(self.name)


class First(Recording):
    @hookimpl(tryfirst=True)
    def taskstatus_prerun(self, event: TaskEvent) -> None:
        super().taskstatus_prerun(event)


class Last(Recording):
    @hookimpl(trylast=True)
    def taskstatus_prerun(self, event: TaskEvent) -> None:
        super().taskstatus_prerun(event)


class NoArguments:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    @hookimpl
    def taskstatus_prerun(self) -> None:
        self.calls.append("no-arguments")


def _both(setup: Callable[[pluggy.PluginManager, list[str]], None]) -> tuple[Any, Any]:
    """What pluggy's call and EventHook each record (or raise) over the same plugins."""
    outcomes = []
    for direct in (False, True):
        pm = make_plugin_manager(load_entry_points=False)
        calls: list[str] = []
        setup(pm, calls)
        call = EventHook(pm.hook.taskstatus_prerun) if direct else pm.hook.taskstatus_prerun
        try:
            call(event=EVENT)
        except RuntimeError as exc:
            calls.append(f"raised {exc}")
        outcomes.append(calls)
    return outcomes[0], outcomes[1]


def test_the_order_and_arguments_are_pluggys() -> None:
    def setup(pm: pluggy.PluginManager, calls: list[str]) -> None:
        pm.register(Last(calls, "last"))
        pm.register(Recording(calls, "a"))
        pm.register(First(calls, "first"))
        pm.register(NoArguments(calls))
        pm.register(Recording(calls, "b"))

    pluggys, ours = _both(setup)
    assert ours == pluggys
    assert ours[0] == "first:t-1"
    assert ours[-1] == "last:t-1"
    assert "no-arguments" in ours


def test_the_first_exception_stops_the_call() -> None:
    def setup(pm: pluggy.PluginManager, calls: list[str]) -> None:
        pm.register(Recording(calls, "after"))
        pm.register(Recording(calls, "failing", fail=True))
        pm.register(First(calls, "first"))

    pluggys, ours = _both(setup)
    assert ours == pluggys == ["first:t-1", "failing:t-1", "raised failing"]


def test_a_wrapper_wraps_the_call() -> None:
    class Wrapper:
        def __init__(self, calls: list[str]) -> None:
            self.calls = calls

        @hookimpl(wrapper=True)
        def taskstatus_prerun(self, event: TaskEvent) -> Iterator[None]:
            self.calls.append("before")
            yield
            self.calls.append("after")

    def setup(pm: pluggy.PluginManager, calls: list[str]) -> None:
        pm.register(Recording(calls, "a"))
        pm.register(Wrapper(calls))

    pluggys, ours = _both(setup)
    assert ours == pluggys == ["before", "a:t-1", "after"]


def test_plugins_registered_and_unregistered_later_count() -> None:
    pm = make_plugin_manager(load_entry_points=False)
    call = EventHook(pm.hook.taskstatus_prerun)
    calls: list[str] = []
    call(event=EVENT)
    plugin = Recording(calls, "late")
    pm.register(plugin)
    call(event=EVENT)
    pm.unregister(plugin)
    call(event=EVENT)
    assert calls == ["late:t-1"]


def test_the_event_is_a_keyword_argument() -> None:
    call = EventHook(make_plugin_manager(load_entry_points=False).hook.taskstatus_prerun)
    with pytest.raises(TypeError):
        call(EVENT)  # type: ignore[misc]
