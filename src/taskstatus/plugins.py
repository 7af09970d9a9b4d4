"""The plugin manager: hook specs, built-in stores and ``taskstatus`` entry points."""

from __future__ import annotations

import pluggy

from . import hookspecs
from .backends import BuiltinStores

__all__ = ["ENTRY_POINT_GROUP", "default_plugins", "make_plugin_manager", "register_default"]

ENTRY_POINT_GROUP = "taskstatus"

_defaults: list[object] = []


def register_default(plugin: object) -> None:
    """Register ``plugin`` with every tracker, existing and future (queue adapters use it)."""
    if plugin in _defaults:
        return
    _defaults.append(plugin)
    import taskstatus

    if taskstatus._default is not None and not taskstatus._default.pm.is_registered(plugin):
        taskstatus._default.register(plugin)


def default_plugins() -> list[object]:
    return list(_defaults)


def make_plugin_manager(*, load_entry_points: bool = True) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(BuiltinStores(), name="taskstatus.builtin_stores")
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in _defaults:
        pm.register(plugin)
    return pm
