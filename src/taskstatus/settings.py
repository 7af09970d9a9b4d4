"""Settings: explicit arguments, then ``TASKSTATUS_*`` environment variables, then defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from .exceptions import ConfigurationError

__all__ = ["DEFAULT_URL", "Settings"]

DEFAULT_URL = "sqlite:///taskstatus.db"
DEFAULT_MAX_AGE = timedelta(days=30)
#: Artifact files of stores that live in memory.
MEMORY_ARTIFACTS = "memory://taskstatus-artifacts"


@dataclass(frozen=True)
class Settings:
    #: Store URL; its scheme picks the backend.
    url: str = DEFAULT_URL
    #: How old a finished status must be before ``purge()`` removes it.
    max_age: timedelta = DEFAULT_MAX_AGE
    #: fsspec URL of the folder/bucket for artifact files; derived from the store when None.
    artifact_storage: str | None = None
    #: Seconds between two writes of a running task's progress (and cancel checks).
    progress_interval: float = 0.5
    #: Rows per transaction when purging.
    purge_batch_size: int = 1000
    #: Seconds between two proofs of life of a worker's running tasks.
    heartbeat_interval: float = 15.0
    #: Seconds without a proof of life after which a running task's worker counts as lost.
    lost_after: float = 120.0
    #: Seconds a worker gathers task starts and successes before writing them in one batch
    #: (0: write each at once).
    write_interval: float = 0.25

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or ":" not in self.url:
            raise ConfigurationError(
                f"store URL must look like scheme://..., e.g. {DEFAULT_URL!r}; got {self.url!r}"
            )
        if isinstance(self.max_age, (int, float)) and not isinstance(self.max_age, bool):
            object.__setattr__(self, "max_age", timedelta(seconds=self.max_age))
        if not isinstance(self.max_age, timedelta) or self.max_age <= timedelta(0):
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
    def load(
        cls,
        *,
        url: str | None = None,
        max_age: timedelta | int | float | None = None,
        artifact_storage: str | None = None,
        progress_interval: float | None = None,
        purge_batch_size: int | None = None,
        heartbeat_interval: float | None = None,
        lost_after: float | None = None,
        write_interval: float | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        env = os.environ if environ is None else environ
        url = url or env.get("TASKSTATUS_URL") or DEFAULT_URL
        if max_age is None and env.get("TASKSTATUS_MAX_AGE"):
            max_age = _seconds(env["TASKSTATUS_MAX_AGE"], "TASKSTATUS_MAX_AGE")
        if isinstance(max_age, bool) or not isinstance(max_age, (timedelta, int, float)):
            if max_age is not None:
                raise ConfigurationError(f"max_age must be a timedelta or seconds, got {max_age!r}")
        elif not isinstance(max_age, timedelta):
            try:
                max_age = timedelta(seconds=max_age)
            except OverflowError:
                raise ConfigurationError(f"max_age of {max_age} seconds is too large") from None
        if progress_interval is None and env.get("TASKSTATUS_PROGRESS_INTERVAL"):
            progress_interval = _seconds(
                env["TASKSTATUS_PROGRESS_INTERVAL"], "TASKSTATUS_PROGRESS_INTERVAL"
            )
        if purge_batch_size is None and env.get("TASKSTATUS_PURGE_BATCH_SIZE"):
            purge_batch_size = _count(
                env["TASKSTATUS_PURGE_BATCH_SIZE"], "TASKSTATUS_PURGE_BATCH_SIZE"
            )
        if heartbeat_interval is None and env.get("TASKSTATUS_HEARTBEAT_INTERVAL"):
            heartbeat_interval = _seconds(
                env["TASKSTATUS_HEARTBEAT_INTERVAL"], "TASKSTATUS_HEARTBEAT_INTERVAL"
            )
        if lost_after is None and env.get("TASKSTATUS_LOST_AFTER"):
            lost_after = _seconds(env["TASKSTATUS_LOST_AFTER"], "TASKSTATUS_LOST_AFTER")
        if write_interval is None and env.get("TASKSTATUS_WRITE_INTERVAL"):
            write_interval = _seconds(env["TASKSTATUS_WRITE_INTERVAL"], "TASKSTATUS_WRITE_INTERVAL")
        given = {
            "max_age": max_age,
            "progress_interval": progress_interval,
            "purge_batch_size": purge_batch_size,
            "heartbeat_interval": heartbeat_interval,
            "lost_after": lost_after,
            "write_interval": write_interval,
        }
        return cls(
            url=url,
            artifact_storage=artifact_storage or env.get("TASKSTATUS_ARTIFACT_STORAGE") or None,
            **{name: value for name, value in given.items() if value is not None},  # type: ignore[arg-type]
        )

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
