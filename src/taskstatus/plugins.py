"""The plugin manager: hook specs, built-in stores and ``taskstatus`` entry points."""

from __future__ import annotations

import pluggy

from . import hookspecs
from .backends import BuiltinStores

__all__ = [
    "ENTRY_POINT_GROUP",
    "default_plugins",
    "follow",
    "make_plugin_manager",
    "register_default",
]

ENTRY_POINT_GROUP = "taskstatus"

_defaults: list[object] = []
#: The default tracker's plugin manager (none or one), told by taskstatus.set_tracker: this
#: module sits below the tracker and cannot ask for it.
_followed: list[pluggy.PluginManager] = []


def register_default(plugin: object) -> None:
    """Register ``plugin`` with every tracker made from now on and with the default one
    (queue adapters use it)."""
    if plugin in _defaults:
        return
    _defaults.append(plugin)
    for pm in _followed:
        if not pm.is_registered(plugin):
            pm.register(plugin)


def follow(pm: pluggy.PluginManager | None) -> None:
    """Have :func:`register_default` also register with ``pm``, the default tracker's."""
    _followed[:] = [pm] if pm is not None else []


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
