"""The private servers really go down and come back, so an outage test tests an outage."""

from __future__ import annotations

import pytest
import redis
import sqlalchemy as sa

pytestmark = pytest.mark.timeout(120)


def _select_one(url: str) -> int:
    engine = sa.create_engine(
        sa.engine.make_url(url).set(drivername="postgresql+psycopg"),
        connect_args={"connect_timeout": 2},
    )
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT 1").scalar_one())
    finally:
        engine.dispose()


def test_own_postgres_stops_and_starts_with_its_data(own_postgres):
    engine = sa.create_engine(
        sa.engine.make_url(own_postgres.url).set(drivername="postgresql+psycopg")
    )
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE kept (n int)")
        conn.exec_driver_sql("INSERT INTO kept VALUES (7)")
    engine.dispose()
    own_postgres.stop()
    with pytest.raises(sa.exc.OperationalError):
        _select_one(own_postgres.url)
    own_postgres.start()
    assert _select_one(own_postgres.url) == 1
    engine = sa.create_engine(
        sa.engine.make_url(own_postgres.url).set(drivername="postgresql+psycopg")
    )
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT n FROM kept").scalar_one() == 7
    engine.dispose()


def test_own_redis_stops_and_starts_empty(own_redis):
    client = redis.Redis.from_url(own_redis.url, socket_timeout=2)
    client.set("k", "v")
    own_redis.stop()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    own_redis.start()
    assert client.ping() and client.get("k") is None
