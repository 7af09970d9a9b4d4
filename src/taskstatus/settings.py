"""Settings: explicit arguments, then ``TASKSTATUS_*`` environment variables, then defaults.

Each setting is declared once, as a field of :class:`Settings`: its name is the keyword of
``configure()`` and ``Settings.load()``, its environment variable is ``TASKSTATUS_`` + the name
in capitals (:func:`env_var`), and the :class:`_Kind` in its ``metadata`` says how to read that
variable and which values it takes.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

from .exceptions import ConfigurationError

__all__ = ["DEFAULT_URL", "Settings", "env_var"]

DEFAULT_URL = "sqlite:///taskstatus.db"
DEFAULT_MAX_AGE = timedelta(days=30)
#: Artifact files of stores that live in memory.
MEMORY_ARTIFACTS = "memory://taskstatus-artifacts"


def env_var(name: str) -> str:
    """The environment variable of the setting ``name``."""
    return f"TASKSTATUS_{name.upper()}"


def _seconds(value: str, name: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}") from None
    if seconds < 0:
        raise ConfigurationError(f"{name} must not be negative, got {value!r}")
    return seconds


def _count(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, got {value!r}") from None


def _text(value: str, name: str) -> str:
    return value


def _duration(value: object, name: str) -> timedelta:
    """A timedelta, or a number of seconds made one."""
    if isinstance(value, timedelta):
        return value
    try:
        return timedelta(seconds=value)  # type: ignore[arg-type]  # a number: checked by _Kind
    except OverflowError:
        raise ConfigurationError(f"{name} of {value} seconds is too large") from None


@dataclass(frozen=True)
class _Kind:
    """What values a setting takes, and how its environment variable is read."""

    #: What a value must be, for the message that refuses another.
    what: str
    types: tuple[type, ...]
    #: The environment variable's text -> a value; raises ConfigurationError naming the variable.
    read: Callable[[str, str], object]
    #: A value of ``types`` -> the field's value.
    convert: Callable[[object, str], object] = lambda value, name: value

    def check(self, name: str, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, self.types):
            raise ConfigurationError(f"{name} must be {self.what}, got {value!r}")
        return self.convert(value, name)


# The ``metadata`` of the fields of Settings, by kind of setting.
_TEXT = {"kind": _Kind("a string", (str,), _text)}
_SECONDS = {"kind": _Kind("a number of seconds", (int, float), _seconds)}
_COUNT = {"kind": _Kind("a whole number", (int,), _count)}
_DURATION = {
    "kind": _Kind(
        "a timedelta or a number of seconds", (timedelta, int, float), _seconds, _duration
    )
}


def _kind(name: str) -> _Kind:
    kind: _Kind = _FIELDS[name].metadata["kind"]
    return kind


@dataclass(frozen=True)
class Settings:
    """One configuration of taskstatus, immutable; see docs/settings.md for each setting.

    Built directly it reads nothing else; :meth:`load` adds the environment.
    """

    #: Store URL; its scheme picks the backend.
    url: str = field(default=DEFAULT_URL, metadata=_TEXT)
    #: How old a finished status must be before ``purge()`` removes it.
    max_age: timedelta = field(default=DEFAULT_MAX_AGE, metadata=_DURATION)
    #: fsspec URL of the folder/bucket for artifact files; derived from the store when None.
    artifact_storage: str | None = field(default=None, metadata=_TEXT)
    #: Seconds between two writes of a running task's progress (and cancel checks).
    progress_interval: float = field(default=0.5, metadata=_SECONDS)
    #: Rows per transaction when purging.
    purge_batch_size: int = field(default=1000, metadata=_COUNT)
    #: Seconds between two proofs of life of a worker's running tasks.
    heartbeat_interval: float = field(default=15.0, metadata=_SECONDS)
    #: Seconds without a proof of life after which a running task's worker counts as lost.
    lost_after: float = field(default=120.0, metadata=_SECONDS)
    #: Seconds a worker gathers task starts and successes before writing them in one batch
    #: (0: write each at once).
    write_interval: float = field(default=0.25, metadata=_SECONDS)

    def __post_init__(self) -> None:
        for name, declared in _FIELDS.items():
            value = getattr(self, name)
            if value is not None or declared.default is not None:
                object.__setattr__(self, name, _kind(name).check(name, value))
        if ":" not in self.url:
            raise ConfigurationError(
                f"store URL must look like scheme://..., e.g. {DEFAULT_URL!r}; got {self.url!r}"
            )
        if self.max_age <= timedelta(0):
            raise ConfigurationError(f"max_age must be a positive timedelta, got {self.max_age!r}")
        if not self.progress_interval >= 0:
            raise ConfigurationError(
                f"progress_interval must be >= 0 seconds, got {self.progress_interval!r}"
            )
        if not 0 <= self.write_interval <= 5:
            raise ConfigurationError(
                f"write_interval must be between 0 and 5 seconds, got {self.write_interval!r}"
            )
        if not 0 < self.heartbeat_interval < self.lost_after:
            raise ConfigurationError(
                f"heartbeat_interval ({self.heartbeat_interval}) must be positive and shorter "
                f"than lost_after ({self.lost_after})"
            )
        if self.purge_batch_size < 1:
            raise ConfigurationError(
                f"purge_batch_size must be >= 1, got {self.purge_batch_size!r}"
            )

    @classmethod
    def load(cls, *, environ: Mapping[str, str] | None = None, **given: Any) -> Settings:
        """Settings from keyword arguments named like the fields, else their environment
        variables (``environ``, by default ``os.environ``), else the defaults. None, and an
        empty string, count as not given."""
        unknown = given.keys() - _FIELDS.keys()
        if unknown:
            raise TypeError(unknown_setting(min(unknown)))
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in _FIELDS:
            value = given.get(name)
            if value is None or value == "":
                text = env.get(env_var(name))
                if not text:
                    continue
                value = _kind(name).read(text, env_var(name))
            values[name] = value
        return cls(**values)

    def artifact_url(self) -> str | None:
        """Where artifact files go, the same for every process of one store: the setting;
        else a folder beside a SQLite database file (``app.db`` -> ``app.db.artifacts``);
        else, for a store in memory, fsspec's in-memory filesystem (files end with the
        process, like the statuses). None for any other store (PostgreSQL, MySQL...): its
        processes may run on several machines, so files need ``artifact_storage``."""
        if self.artifact_storage:
            return self.artifact_storage
        scheme, _, rest = self.url.partition(":")
        if scheme == "memory":
            return MEMORY_ARTIFACTS
        if scheme.partition("+")[0] != "sqlite":
            return None
        database, _, query = rest.removeprefix("///").partition("?")
        if not rest.startswith("///") or database in ("", ":memory:") or "mode=memory" in query:
            return MEMORY_ARTIFACTS
        db = Path(database)
        return str((db.parent / f"{db.name}.artifacts").resolve())


_FIELDS = {declared.name: declared for declared in fields(Settings)}


def unknown_setting(name: str) -> str:
    """The message of a ``TypeError`` for a keyword that names no setting."""
    close = difflib.get_close_matches(name, _FIELDS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown setting {name!r}; {hint}the settings are {', '.join(_FIELDS)}"
