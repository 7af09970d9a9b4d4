"""The benchmark scripts keep running (their numbers are read by people, not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import require_server

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize(
    "script",
    [
        "progress.py",
        "query.py",
        "web.py",
        "celery_overhead.py",
        "dramatiq_overhead.py",
        "rq_overhead.py",
        "publish.py",
        "otel_overhead.py",
    ],
)
def test_benchmark_quick_run(script):
    if script.endswith("_overhead.py") or script == "publish.py":
        require_server("Redis", "redis://127.0.0.1:6379/0")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--backends", "sqlite"],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Overall:" in result.stdout
