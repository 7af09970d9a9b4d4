"""Built-in stores, chosen by URL scheme through the ``taskstatus_store`` hook.

``sqlite``, ``postgresql`` (``postgres``), ``mysql`` and ``mariadb`` URLs (with or without a
``+driver``) go to :class:`~taskstatus.backends.sqlalchemy.SQLAlchemyStore`; ``memory://`` to
:class:`~taskstatus.backends.memory.MemoryStore`. The built-in plugin runs last, so a
third-party plugin may take over any scheme.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..store import Store

__all__ = ["BUILTIN_SCHEMES", "BuiltinStores"]

BUILTIN_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "memory")


class BuiltinStores:
    """Plugin providing the stores shipped with taskstatus."""

    @hookimpl(trylast=True)
    def taskstatus_store(self, url: str) -> Store | None:
        scheme = url.partition(":")[0].partition("+")[0].lower()
        if scheme == "memory":
            from .memory import MemoryStore

            return MemoryStore(url)
        if scheme in BUILTIN_SCHEMES:
            from .sqlalchemy import SQLAlchemyStore

            return SQLAlchemyStore(url)
        return None
