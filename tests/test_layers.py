"""The import-linter contracts of pyproject.toml catch a layer broken, not only pass on main.

CI runs ``lint-imports`` on the package itself; these tests run it on a copy of the package
with one forbidden import added, and expect the contract that forbids it to fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed"),
]


def _lint(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess[str]:
    """lint-imports on a copy of src/taskstatus where ``module`` gains ``line``."""
    shutil.copytree(ROOT / "src" / "taskstatus", tmp_path / "src" / "taskstatus")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    if line:
        path = tmp_path / "src" / "taskstatus" / module
        path.write_text(path.read_text() + f"\n{line}\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


def test_the_copy_passes_as_it_is(tmp_path):
    result = _lint(tmp_path, "", "")
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "queues/rq.py",
            "from ..backends import memory  # noqa",
            "Queues, web and observability reach storage only through the tracker",
        ),
        (
            "observability/prometheus.py",
            "from ..backends import sqlalchemy  # noqa",
            "Queues, web and observability reach storage only through the tracker",
        ),
        (
            "queues/dramatiq.py",
            "from .. import recorder  # noqa",
            "Queue adapters report through the lifecycle API, never to the recorder or store",
        ),
        ("queues/rq.py", "from . import dramatiq  # noqa", "No queue adapter imports another"),
        ("models.py", "from . import store  # noqa", "models is pure"),
        ("backends/memory.py", "from ..queues import rq  # noqa", "Storage backends know no queue"),
        (
            "recorder.py",
            "from . import tracker  # noqa",
            "Layers: data flows down, nothing below imports from above",
        ),
    ],
)
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, line, contract):
    result = _lint(tmp_path, module, line)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = [row for row in result.stdout.splitlines() if row.endswith(" BROKEN")]
    assert any(row.startswith(contract) for row in broken), result.stdout
