"""Artifact files, kept through fsspec under paths taskstatus generates.

A file lands at ``<root>/<status uuid>/<artifact uuid>/<file name>``: the file name is checked
to be a plain name, so nothing a task or user supplies can choose where a file is written.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import shutil
from collections.abc import Iterable
from typing import Any, BinaryIO, cast
from uuid import UUID

import fsspec

from .exceptions import ConfigurationError
from .models import check_filename
from .settings import hide_password

__all__ = ["ArtifactStorage"]

log = logging.getLogger(__name__)

FileInput = bytes | bytearray | memoryview | BinaryIO | str | os.PathLike[str]


class ArtifactStorage:
    """Stores artifact files in any fsspec filesystem (local folder, S3, GCS, memory...)."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot use artifact storage {hide_password(url)!r}: {exc}"
            ) from exc
        self.fs: Any = fs
        self.root: str = str(root).rstrip("/")

    def _full(self, path: str) -> str:
        return posixpath.join(self.root, path)

    def save(
        self, status_uuid: UUID, artifact_uuid: UUID, file: FileInput, filename: str | None
    ) -> str:
        """Write ``file`` (bytes, a binary file object or a local path); return its path."""
        if isinstance(file, (str, os.PathLike)):
            source_name = os.path.basename(os.fspath(file))
            opener: Any = open(file, "rb")  # noqa: SIM115 - closed below
        elif isinstance(file, (bytes, bytearray, memoryview)):
            source_name = None
            opener = io.BytesIO(bytes(file))
        elif hasattr(file, "read"):
            name = getattr(file, "name", None)
            source_name = os.path.basename(name) if isinstance(name, str) else None
            opener = file
        else:
            raise TypeError(
                f"artifact file must be bytes, a binary file object or a path, "
                f"got {type(file).__name__}"
            )
        name = check_filename(filename or source_name or "output")
        path = f"{status_uuid}/{artifact_uuid}/{name}"
        full = self._full(path)
        try:
            self.fs.makedirs(posixpath.dirname(full), exist_ok=True)
            with self.fs.open(full, "wb") as target:
                shutil.copyfileobj(opener, target)
        except BaseException:
            self.delete([path])
            raise
        finally:
            if opener is not file:
                opener.close()
        return path

    def open(self, path: str) -> BinaryIO:
        return cast(BinaryIO, self.fs.open(self._full(path), "rb"))

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._full(path)))

    def location(self, path: str) -> str:
        """The URL of a stored file, for messages."""
        return str(self.fs.unstrip_protocol(self._full(path)))

    def delete(self, paths: Iterable[str]) -> list[str]:
        """Remove files and their generated folders; failures are logged, not raised.
        Returns the paths that had no file."""
        missing = []
        for path in paths:
            full = self._full(path)
            try:
                if self.fs.exists(full):
                    self.fs.rm(full)
                else:
                    missing.append(path)
                for folder in (posixpath.dirname(full), posixpath.dirname(posixpath.dirname(full))):
                    if folder.startswith(self.root) and folder != self.root and self._empty(folder):
                        self.fs.rmdir(folder)
            except OSError:
                log.warning("could not delete artifact file %s", full, exc_info=True)
        return missing

    def _empty(self, folder: str) -> bool:
        try:
            return not self.fs.ls(folder)
        except FileNotFoundError:
            return False
