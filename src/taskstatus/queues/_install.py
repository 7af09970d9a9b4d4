"""What every queue adapter's ``install()`` shares: the error when the queue library is
missing, the tracker argument, and the tracker an installed adapter works with."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from .. import get_tracker
from ..lifecycle import Lifecycle
from ..plugins import register_default
from ..tracker import Tracker

__all__ = ["Installed", "install_arguments", "queue_library"]

T = TypeVar("T")


@contextmanager
def queue_library(extra: str) -> Iterator[None]:
    """Wrap an adapter's imports of its queue library: a missing one raises
    ``ModuleNotFoundError`` naming the extra that installs it."""
    try:
        yield
    except ModuleNotFoundError as exc:
        package = (exc.name or extra).partition(".")[0]
        raise ModuleNotFoundError(
            f"taskstatus.queues.{extra} needs the {package!r} package, which is not "
            f"installed: pip install 'taskstatus[{extra}]'",
            name=package,
        ) from exc


def install_arguments(
    target: T | None,
    old_target: T | None,
    old_name: str,
    positional_tracker: Tracker | None,
    tracker: Tracker | None,
) -> tuple[T | None, Tracker | None]:
    """The target and tracker of an ``install(target, *, tracker=None)`` call, also from the
    older forms (``install(app, tracker)``, ``install(app=app)``), which warn."""
    if old_target is not None:
        if target is not None:
            raise TypeError(f"install() got the target twice (as target and as {old_name}=)")
        warnings.warn(
            f"install({old_name}=...) is deprecated: pass it as the first argument",
            DeprecationWarning,
            stacklevel=3,
        )
        target = old_target
    if positional_tracker is not None:
        if tracker is not None:
            raise TypeError("install() got the tracker twice (positionally and as tracker=)")
        warnings.warn(
            "install(target, tracker) is deprecated: pass install(target, tracker=tracker)",
            DeprecationWarning,
            stacklevel=3,
        )
        tracker = positional_tracker
    return target, tracker


class Installed:
    """An installed adapter: its tracker is the one given to ``install()``, else the default
    one, looked up at each use (so ``taskstatus.configure()`` may come after ``install()``)."""

    _tracker: Tracker | None = None

    @property
    def tracker(self) -> Tracker:
        return self._tracker if self._tracker is not None else get_tracker()

    @property
    def lifecycle(self) -> Lifecycle:
        """What the adapter reports each step of a task's life to (its tracker's)."""
        return self.tracker.lifecycle

    def register_with_tracker(self) -> None:
        """Make this adapter a plugin of its tracker (of every tracker, for the default)."""
        if self._tracker is not None:
            self._tracker.register(self)
        else:
            register_default(self)
