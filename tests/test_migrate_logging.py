"""Opening a store whose schema is current leaves no Alembic chatter in an application's log."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from taskstatus import Settings, Tracker


def test_opening_a_current_schema_logs_nothing_from_alembic(
    sql_url: str, make_tracker: Callable[..., Tracker], caplog: pytest.LogCaptureFixture
) -> None:
    make_tracker(sql_url).close()  # the schema is created (and may be logged) here
    caplog.set_level(logging.INFO)
    tracker = Tracker(Settings(url=sql_url)).open()
    tracker.close()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == []


def test_a_process_opening_a_current_schema_logs_nothing_from_alembic(tmp_path: Path) -> None:
    """As a worker process does: logging set up at INFO first, then taskstatus configured."""
    url = f"sqlite:///{tmp_path / 'ts.db'}"
    Tracker(Settings(url=url)).open().close()
    script = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
        "import taskstatus\n"
        f"taskstatus.configure(url={url!r}).open()\n"
        "logging.getLogger('worker').info('ready')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out == "INFO:worker:ready\n"
