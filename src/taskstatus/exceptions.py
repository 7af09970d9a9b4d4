"""Exceptions raised by taskstatus; every one names what went wrong."""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "NotFound",
    "SchemaOutdated",
    "StoreError",
    "StoreUnavailable",
    "TaskCanceledException",
    "TaskStatusError",
]


class TaskStatusError(Exception):
    """Base class of taskstatus's own errors."""


class TaskCanceledException(TaskStatusError):
    """Raised inside a task whose status was canceled, at its next progress or stage call.

    A task that lets it propagate ends Canceled, not Failed.
    """


class NotFound(TaskStatusError, LookupError):
    """No status or artifact with that id (or not visible to the caller)."""


class ConfigurationError(TaskStatusError, ValueError):
    """A setting is invalid: unknown store URL scheme, bad max_age, and the like."""


class StoreError(TaskStatusError):
    """The store failed to read or write."""


class StoreUnavailable(StoreError):
    """The database cannot be reached."""


class SchemaOutdated(StoreError):
    """The database holds an older schema; run ``taskstatus db upgrade``."""
