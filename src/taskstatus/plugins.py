"""The plugin manager: hook specs, built-in stores and ``taskstatus`` entry points."""

from __future__ import annotations

import pluggy

from . import hookspecs
from .backends import BuiltinStores

__all__ = ["ENTRY_POINT_GROUP", "make_plugin_manager"]

ENTRY_POINT_GROUP = "taskstatus"


def make_plugin_manager(*, load_entry_points: bool = True) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(BuiltinStores(), name="taskstatus.builtin_stores")
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return pm
