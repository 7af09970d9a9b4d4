"""Settings: explicit arguments, then ``TASKSTATUS_*`` environment variables, then defaults.

Each setting is declared once, as a field of :class:`Settings`: its name is the keyword of
``configure()`` and ``Settings.load()``, its environment variable is ``TASKSTATUS_`` + the name
in capitals (:func:`env_var`), and the :class:`_Kind` in its ``metadata`` says how to read that
variable and which values it takes.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

from .exceptions import ConfigurationError

__all__ = ["DEFAULT_URL", "Settings", "env_var", "hide_password"]

DEFAULT_URL = "sqlite:///taskstatus.db"
DEFAULT_MAX_AGE = timedelta(days=30)
#: Artifact files of stores that live in memory.
MEMORY_ARTIFACTS = "memory://taskstatus-artifacts"


_PASSWORD = re.compile(r"^([^:/?#]*:)?(//[^/?#@]*?:)[^/?#]*@")


def hide_password(url: str) -> str:
    """``url`` with the password of its user part shown as ``***``, as SQLAlchemy renders
    one: for messages and logs, of any scheme (even one no backend parses)."""
    return _PASSWORD.sub(lambda m: f"{m.group(1) or ''}{m.group(2)}***@", url, count=1)


def env_var(name: str) -> str:
    """The environment variable of the setting ``name``."""
    return f"TASKSTATUS_{name.upper()}"


def _seconds(value: str, name: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}") from None


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


def _number(value: object) -> float | int | None:
    """The number a range applies to (a duration in seconds), or None for text."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value if isinstance(value, (int, float)) else None


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
    #: The allowed range of a number (of a duration: in seconds); None: unbounded on that
    #: side. ``above``: the lowest value itself is excluded.
    low: float | None = None
    high: float | None = None
    above: bool = False
    #: How the value is counted, for the message ("seconds").
    unit: str = ""

    def check(self, name: str, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, self.types):
            raise ConfigurationError(f"{name} must be {self.what}, got {value!r}")
        number = _number(value)
        if number is not None and not self.allows(number):
            raise ConfigurationError(f"{name} must be {self.range}, got {value!r}")
        return self.convert(value, name)

    def allows(self, number: float) -> bool:
        if isinstance(number, float) and not math.isfinite(number):
            return False
        if self.low is not None and (number <= self.low if self.above else number < self.low):
            return False
        return self.high is None or number <= self.high

    @property
    def range(self) -> str:
        """The allowed range, in words: part of the docs of each setting too."""
        unit = f" {self.unit}" if self.unit else ""
        if self.low is None and self.high is None:
            return f"a finite number{unit}"
        lowest = f"greater than {self.low:g}" if self.above else f"at least {self.low:g}"
        if self.high is None:
            return f"{lowest}{unit}"
        return f"{lowest} and at most {self.high:g}{unit}"


# The ``metadata`` of the fields of Settings: the kind of setting and its range, once for
# configure(), Settings(...) and the environment.
_TEXT = {"kind": _Kind("a string", (str,), _text)}


def _seconds_setting(low: float, high: float, *, above: bool = False) -> dict[str, _Kind]:
    return {
        "kind": _Kind(
            "a number of seconds",
            (int, float),
            _seconds,
            low=low,
            high=high,
            above=above,
            unit="seconds",
        )
    }


def _count_setting(low: int, high: int) -> dict[str, _Kind]:
    return {"kind": _Kind("a whole number", (int,), _count, low=low, high=high)}


_DURATION = {
    "kind": _Kind(
        "a timedelta or a number of seconds",
        (timedelta, int, float),
        _seconds,
        _duration,
        low=0,
        above=True,
        unit="seconds",
    )
}
HOUR = 3600.0
DAY = 24 * HOUR


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
    progress_interval: float = field(default=0.5, metadata=_seconds_setting(0, HOUR))
    #: Rows per transaction when purging.
    purge_batch_size: int = field(default=1000, metadata=_count_setting(1, 100_000))
    #: Seconds between two proofs of life of a worker's running tasks.
    heartbeat_interval: float = field(default=15.0, metadata=_seconds_setting(0, HOUR, above=True))
    #: Seconds without a proof of life after which a running task's worker counts as lost.
    lost_after: float = field(default=120.0, metadata=_seconds_setting(0, 7 * DAY, above=True))
    #: Seconds a worker gathers task starts and successes before writing them in one batch
    #: (0: write each at once).
    write_interval: float = field(default=0.25, metadata=_seconds_setting(0, 5))

    def __post_init__(self) -> None:
        for name, declared in _FIELDS.items():
            value = getattr(self, name)
            if value is not None or declared.default is not None:
                object.__setattr__(self, name, _kind(name).check(name, value))
        if ":" not in self.url:
            raise ConfigurationError(
                f"url: the store URL must look like scheme://..., e.g. {DEFAULT_URL!r}; "
                f"got {hide_password(self.url)!r}"
            )
        if not self.heartbeat_interval < self.lost_after:
            raise ConfigurationError(
                f"heartbeat_interval ({self.heartbeat_interval}) must be shorter than "
                f"lost_after ({self.lost_after})"
            )

    def __repr__(self) -> str:
        """The fields, with the URL's password hidden: settings end up in logs."""
        shown: dict[str, object] = {name: getattr(self, name) for name in _FIELDS}
        shown["url"] = hide_password(self.url)
        return f"Settings({', '.join(f'{name}={value!r}' for name, value in shown.items())})"

    @classmethod
    def load(cls, *, environ: Mapping[str, str] | None = None, **given: Any) -> Settings:
        """Settings from keyword arguments named like the fields, else their environment
        variables (``environ``, by default ``os.environ``), else the defaults. An argument of
        None, and an empty environment variable, count as not given."""
        unknown = given.keys() - _FIELDS.keys()
        if unknown:
            raise TypeError(unknown_setting(min(unknown)))
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in _FIELDS:
            value = given.get(name)
            if value is None:
                text = env.get(env_var(name))
                if not text:
                    continue
                kind = _kind(name)
                value = kind.check(env_var(name), kind.read(text, env_var(name)))
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
