"""`taskstatus demo`: the embedded main job (SQLite, in-memory broker, in-process worker)."""

from __future__ import annotations

import os
import subprocess

import pytest

from taskstatus import State
from tests.cli_process import TASKSTATUS

pytestmark = pytest.mark.timeout(120)


def test_demo_runs_every_kind_of_outcome(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    # The command as a user runs it: what its worker logs reaches the same terminal.
    result = subprocess.run(
        [str(TASKSTATUS), "--url", url, "demo", "--speed", "0.2"],
        check=False,
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, "COLUMNS": "200"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Demo tasks" in output
    # Its intended failure is a line of its own output, not a worker's logged traceback.
    assert "Traceback" not in output
    assert "raised unexpected" not in output
    assert (
        "Import grades from grades.csv failed: ValueError: grades.csv, line 14: "
        "grade 'A+' is not a number" in output
    )
    # It ends by offering the dashboard on its own store.
    assert f"run `taskstatus --url {url} serve --port 8000`" in output

    from taskstatus import Settings, Tracker

    tracker = Tracker(Settings(url=url)).open()
    try:
        top = {s.name: s for s in tracker.statuses(parent=None, user_id="demo")}
        assert {name: s.state for name, s in top.items()} == {
            "Export course math-101": State.SUCCEEDED,
            "Nightly catalog sync": State.SUCCEEDED,
            "Import grades from grades.csv": State.FAILED,
            "Rebuild search index": State.CANCELED,
        }
        chain = top["Nightly catalog sync"]
        assert chain.task_class == "celery.chain"
        assert (chain.completed_steps, chain.total_steps) == (35, 35)
        assert [c.name for c in chain.children()] == [
            "Extract catalog",
            "Transform catalog",
            "Load catalog",
        ]
        [output] = top["Export course math-101"].artifacts
        with output.open() as f:
            assert f.read().startswith(b"id,grade\n0,0\n")
        [error] = top["Import grades from grades.csv"].artifacts
        assert error.name == "Error" and "grade 'A+' is not a number" in error.text
        rebuild = top["Rebuild search index"]
        assert 0 < rebuild.completed_steps < rebuild.total_steps
        assert rebuild.artifacts == []
    finally:
        tracker.close()
