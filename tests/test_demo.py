"""`taskstatus demo`: the embedded main job (SQLite, in-memory broker, in-process worker)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from taskstatus import State
from taskstatus.cli import cli

pytestmark = pytest.mark.timeout(120)


def test_demo_runs_every_kind_of_outcome(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = CliRunner().invoke(cli, ["--url", url, "demo", "--speed", "0.2"])
    assert result.exit_code == 0, result.output
    assert "Demo tasks" in result.output

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
