"""The hooks of every run, called without pluggy's generic machinery.

A worker calls ``taskstatus_prerun``, an outcome's hook and ``taskstatus_postrun`` for every
task it runs. pluggy's call checks the arguments, copies the implementations and runs them
through a loop that also serves wrappers and first results: a third of the Python calls that
tracking adds to a trivial task. :class:`EventHook` calls the implementations itself, in
pluggy's order and with pluggy's outcome (the first exception stops the call and propagates);
while any implementation is a wrapper, it hands the call to pluggy. Plugins registered or
unregistered later are seen at the next call. pluggy's call monitoring
(``PluginManager.add_hookcall_monitoring``, ``enable_tracing``) does not see these calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pluggy

    from .events import TaskEvent

__all__ = ["EventHook"]


class EventHook:
    """One lifecycle hook taking ``event``, called as pluggy would."""

    __slots__ = ("_caller",)

    def __init__(self, caller: pluggy.HookCaller) -> None:
        self._caller = caller

    def __call__(self, *, event: TaskEvent) -> None:
        impls = self._caller.get_hookimpls()  # pluggy's order, last called first
        for impl in impls:
            if impl.wrapper or impl.hookwrapper:
                self._caller(event=event)
                return
        for impl in reversed(impls):
            if impl.argnames:  # a hook implementation may take fewer arguments than its spec
                impl.function(event)
            else:
                impl.function()
