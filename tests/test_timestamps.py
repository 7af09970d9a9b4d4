"""Timestamps in SQLite: UTCDateTime writes them in one call, and what it writes must be exactly
what SQLAlchemy's own SQLite DATETIME writes, since rows written either way are compared
(a batch's ``modified = :at``) and ordered as text."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from taskstatus.backends.tables import UTCDateTime, sqlite_text

DIALECT = sqlite.dialect()  # type: ignore[no-untyped-call]
OURS = UTCDateTime().bind_processor(DIALECT)
SQLALCHEMY = sqlite.DATETIME().bind_processor(DIALECT)
OFFSETS = st.sampled_from([None, timezone.utc, timezone(timedelta(hours=5, minutes=30))])


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=OFFSETS)
)
def test_sqlite_text_is_sqlalchemys_format(value: datetime) -> None:
    naive_utc = value if value.tzinfo is None else value.astimezone(timezone.utc)
    expected = SQLALCHEMY(naive_utc.replace(tzinfo=None))
    assert OURS(value) == expected


def test_whole_seconds_keep_their_fraction_and_none_stays_none() -> None:
    assert OURS is sqlite_text  # what the store also writes into its batches itself
    assert OURS(datetime(2026, 3, 15, 12, 5, 57, tzinfo=timezone.utc)) == (
        "2026-03-15 12:05:57.000000"
    )
    assert OURS(None) is None


def test_a_timestamp_written_and_read_in_sqlite_is_the_same_instant() -> None:
    table = sa.Table("t", sa.MetaData(), sa.Column("at", UTCDateTime()))
    engine = sa.create_engine("sqlite://")
    table.metadata.create_all(engine)
    written = datetime(2026, 12, 1, 7, 30, 0, 250, tzinfo=timezone(timedelta(hours=-3)))
    with engine.begin() as conn:
        conn.execute(table.insert(), {"at": written})
        read = conn.execute(sa.select(table.c.at)).scalar_one()
        found = conn.execute(sa.select(sa.func.count()).where(table.c.at == written)).scalar()
    assert read == written
    assert read.tzinfo is timezone.utc
    assert found == 1
