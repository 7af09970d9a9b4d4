"""Many rows in one INSERT statement, sent to the driver as it is: what recording a published
group costs.

SQLAlchemy's ``executemany`` builds a parameter dict for every row and processes each value in
Python, and on PostgreSQL sends one statement a row (each firing the change feed's trigger).
Here a chunk of rows is one statement, each value encoded once by its column type's own bind
processor: on PostgreSQL ``INSERT ... SELECT FROM unnest(<one array a column>)``, whose text
stays short (psycopg parses a long statement's placeholders again at every call); elsewhere a
VALUES list of the rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect

__all__ = ["BulkInsert"]

#: Placeholders of the driver parameter styles this statement is written for.
_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}


class BulkInsert:
    """INSERT of ``fields`` of ``table`` on ``dialect``; the other columns named in
    ``defaults`` take the given SQL expression (compiled for the dialect)."""

    def __init__(
        self, table: Table, fields: Sequence[str], defaults: Mapping[str, Any], dialect: Dialect
    ) -> None:
        placeholder = _PLACEHOLDER[dialect.paramstyle]
        fixed = [str(sql.compile(dialect=dialect)) for sql in defaults.values()]
        if placeholder == "%s":  # these drivers read '%' in the SQL text as a placeholder
            fixed = [text.replace("%", "%%") for text in fixed]
        quote = dialect.identifier_preparer.quote
        names = ", ".join(quote(name) for name in [*fields, *defaults])
        head = f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({names}) "
        #: PostgreSQL: one array a column, one statement for any number of rows.
        self._arrays = dialect.name == "postgresql"
        if self._arrays:
            arrays = ", ".join(
                f"{placeholder}::{table.c[name].type.compile(dialect=dialect)}[]" for name in fields
            )
            self._head = f"{head}SELECT rows.*, {', '.join(fixed)} FROM unnest({arrays}) AS rows"
        else:
            self._head = head + "VALUES "
        self._row = "(" + ", ".join([placeholder] * len(fields) + fixed) + ")"
        self._encoders: list[tuple[str, Callable[[Any], Any] | None]] = [
            (name, table.c[name].type.bind_processor(dialect)) for name in fields
        ]
        self.statement = lru_cache(maxsize=4)(self._statement)

    @staticmethod
    def supports(dialect: Dialect) -> bool:
        return dialect.paramstyle in _PLACEHOLDER

    def _statement(self, rows: int) -> str:
        """The statement for ``rows`` rows (cached: a full chunk, then the last one)."""
        if self._arrays:
            return self._head
        return self._head + ", ".join([self._row] * rows)

    def parameters(self, columns: Sequence[Sequence[Any]]) -> tuple[Any, ...]:
        """The values of the rows given column by column (in the order of ``fields``),
        encoded, in the order of the statement's placeholders."""
        encoded = [
            column if encode is None else [None if v is None else encode(v) for v in column]
            for column, (_, encode) in zip(columns, self._encoders, strict=True)
        ]
        if self._arrays:
            return tuple(encoded)
        return tuple(itertools.chain.from_iterable(zip(*encoded, strict=True)))
