"""Fixtures of the fault tests: servers of their own to stop and start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.waiting import uid  # noqa: F401  (fixture)

from .servers import PrivatePostgres, PrivateRedis, private_postgres, private_redis


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def own_postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[PrivateRedis]:
    with private_redis() as server:
        yield server


@pytest.fixture
def own_durable_redis() -> Iterator[PrivateRedis]:
    """``own_redis`` that keeps what it acknowledged across ``stop()``/``start()``: a broker
    whose outage loses no accepted message."""
    with private_redis(durable=True) as server:
        yield server
