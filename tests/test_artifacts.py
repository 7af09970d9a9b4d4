"""Artifacts: files through fsspec under generated paths, URLs, texts; bad input; cleanup."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest

from taskstatus import NotFound

from .helpers import event, publish


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_file_text_url_artifacts(tracker, tmp_path):
    s = publish(tracker, "t")
    live = tracker.lifecycle.start(event("t"))
    a_bytes = live.add_artifact(file=b"id,name\n1,x\n", filename="export.csv")
    a_obj = live.add_artifact(name="Log", file=io.BytesIO(b"log line"), filename="run.log")
    source = tmp_path / "report.pdf"
    source.write_bytes(b"%PDF-1.7")
    a_path = live.add_artifact(name="Report", path=source)
    assert a_path.filename == "report.pdf"
    a_url = live.add_artifact(name="Link", url="https://example.com/r/1")
    a_text = live.add_artifact(name="Summary", text="42 rows imported")
    tracker.lifecycle.end(live)

    arts = {a.name: a for a in tracker.get(s.uuid).artifacts}
    assert set(arts) == {"Output", "Log", "Report", "Link", "Summary"}
    assert arts["Output"].uuid == a_bytes.uuid
    assert arts["Output"].filename == "export.csv"
    with arts["Output"].open() as f:
        assert f.read() == b"id,name\n1,x\n"
    with tracker.get_artifact(a_obj.uuid).open() as f:
        assert f.read() == b"log line"
    assert arts["Report"].filename == "report.pdf"
    with arts["Report"].open() as f:
        assert f.read() == b"%PDF-1.7"
    assert a_url.url == "https://example.com/r/1" and a_url.file is None
    assert a_text.text == "42 rows imported"
    # Files live under <status>/<artifact>/<name>: never a caller-chosen path.
    assert arts["Output"].file == f"{s.uuid}/{a_bytes.uuid}/export.csv"
    assert arts["Output"].created is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of file, path, url or text"),
        ({"file": b"x", "url": "https://a.b"}, "exactly one"),
        ({"url": "javascript:alert(1)"}, "http or https"),
        ({"file": b"x", "filename": "../../etc/passwd"}, "plain file name"),
        ({"file": b"x", "filename": "sub/dir.txt"}, "plain file name"),
        ({"name": "", "text": "x"}, "artifact name"),
    ],
)
def test_bad_artifacts_write_nothing(tracker, tmp_path, kwargs, message):
    s = publish(tracker, "t")
    with pytest.raises(ValueError, match=message):
        s.add_artifact(**kwargs)
    assert s.artifacts == []
    assert stored_files(tmp_path / "artifacts") == []


def test_file_of_wrong_type(tracker):
    s = publish(tracker, "t")
    with pytest.raises(TypeError, match=r"file=...\) takes bytes or a binary file object"):
        s.add_artifact(file=12345)
    assert s.artifacts == []


def test_artifact_on_deleted_status_leaves_no_file(sql_tracker, tmp_path):
    s = publish(sql_tracker, "t")
    sql_tracker.delete(s.uuid)
    with pytest.raises(Exception, match="cannot add artifact"):
        sql_tracker.add_artifact(s, file=b"orphan", filename="x.bin")
    assert stored_files(tmp_path / "artifacts") == []


def test_delete_removes_descendants_and_files(tracker, tmp_path):
    publish(tracker, "g", container="celery.group")
    child = publish(tracker, "a", parent="g")
    child.add_artifact(file=b"data", filename="a.bin")
    tracker.get_by_task_id("g").add_artifact(file=b"more", filename="g.bin")
    keep = publish(tracker, "other")
    keep.add_artifact(file=b"keep", filename="keep.bin")
    assert len(stored_files(tmp_path / "artifacts")) == 3

    tracker.get_by_task_id("g").delete()
    with pytest.raises(NotFound):
        tracker.get_by_task_id("a")
    assert [p.name for p in stored_files(tmp_path / "artifacts")] == ["keep.bin"]
    with pytest.raises(NotFound):
        tracker.delete(child.uuid)


def test_purge_removes_finished_and_keeps_unfinished(tracker, tmp_path):
    publish(tracker, "done")
    tracker.lifecycle.end(tracker.lifecycle.start(event("done")))
    tracker.get_by_task_id("done").add_artifact(file=b"x", filename="done.bin")
    publish(tracker, "failed")
    tracker.lifecycle.end(tracker.lifecycle.start(event("failed")), exception=ValueError("x"))
    publish(tracker, "running")
    tracker.lifecycle.start(event("running"))
    tracker.get_by_task_id("running").add_artifact(file=b"y", filename="running.bin")
    publish(tracker, "waiting")
    # A finished container with an unfinished child is kept whole.
    publish(tracker, "g", container="celery.group")
    publish(tracker, "g1", parent="g")
    publish(tracker, "g2", parent="g")
    tracker.lifecycle.end(tracker.lifecycle.start(event("g1")), exception=ValueError("x"))
    assert tracker.get_by_task_id("g").is_terminal

    # Nothing is old enough yet.
    assert tracker.purge() == 0
    assert tracker.purge(older_than=timedelta(0)) == 2
    remaining = sorted(s.task_id for s in tracker.statuses(limit=None))
    assert remaining == ["g", "g1", "g2", "running", "waiting"]
    assert [p.name for p in stored_files(tmp_path / "artifacts")] == ["running.bin"]

    tracker.lifecycle.end(tracker.lifecycle.start(event("g2")))
    assert tracker.purge(older_than=timedelta(0)) == 3
    assert sorted(s.task_id for s in tracker.statuses(limit=None)) == ["running", "waiting"]


def test_purge_in_batches(sql_url, make_tracker):
    from taskstatus import Settings, Tracker

    tracker = make_tracker(sql_url)
    small = Tracker(
        Settings(
            url=sql_url, purge_batch_size=3, artifact_storage=tracker.settings.artifact_storage
        )
    )
    for i in range(10):
        publish(small, f"t{i}")
        small.lifecycle.end(small.lifecycle.start(event(f"t{i}")))
    assert small.purge(older_than=timedelta(0)) == 10
    assert small.count() == 0
    small.close()


# -- where files go without artifact_storage ---------------------------------------------------
def test_default_location_is_beside_the_sqlite_file_whatever_the_cwd(
    make_tracker, tmp_path, monkeypatch
):
    """Processes in other working directories (a web server, ``taskstatus delete``) find the
    files a worker wrote: they sit beside the database, not in anyone's working directory."""
    from click.testing import CliRunner

    from taskstatus.cli import cli

    url = f"sqlite:///{tmp_path / 'data' / 'app.db'}"
    (tmp_path / "data").mkdir()
    (tmp_path / "worker").mkdir()
    (tmp_path / "web").mkdir()
    monkeypatch.chdir(tmp_path / "worker")
    worker = make_tracker(url, artifact_storage=None)
    status = publish(worker, "t")
    artifact = status.add_artifact(file=b"rows", filename="export.csv")
    assert stored_files(tmp_path / "data" / "app.db.artifacts") != []
    assert stored_files(tmp_path / "worker") == []

    monkeypatch.chdir(tmp_path / "web")
    web = make_tracker(url, artifact_storage=None)
    with web.get_artifact(artifact.uuid).open() as f:
        assert f.read() == b"rows"
    env = {"TASKSTATUS_ARTIFACT_STORAGE": None, "TASKSTATUS_URL": None}
    result = CliRunner(env=env).invoke(cli, ["--url", url, "delete", str(status.uuid), "--yes"])
    assert result.exit_code == 0, result.output
    assert stored_files(tmp_path / "data" / "app.db.artifacts") == []


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_server_database_stores_files_only_where_told(
    backend, make_url, make_tracker, tmp_path, monkeypatch
):
    """A database several machines share has no default folder for files: a file artifact
    names the setting; texts and URLs need none."""
    from taskstatus import ConfigurationError

    monkeypatch.chdir(tmp_path)
    tracker = make_tracker(make_url(backend), artifact_storage=None)
    status = publish(tracker, "t")
    with pytest.raises(ConfigurationError, match=r"artifact_storage.*TASKSTATUS_ARTIFACT_STORAGE"):
        status.add_artifact(file=b"rows", filename="export.csv")
    status.add_artifact(name="Summary", text="2 rows")
    status.add_artifact(name="Link", url="https://example.com/r/1")
    assert sorted(a.name for a in status.artifacts) == ["Link", "Summary"]
    assert stored_files(tmp_path) == []


def test_deleting_without_the_file_location_says_so(make_url, make_tracker, tmp_path, caplog):
    """A process without ``artifact_storage`` deletes a status whose file a worker stored:
    the file cannot be reached, and a warning names it and the setting."""
    url = make_url("postgresql")
    worker = make_tracker(url, artifact_storage=str(tmp_path / "shared"))
    status = publish(worker, "t")
    artifact = status.add_artifact(file=b"rows", filename="export.csv")
    elsewhere = make_tracker(url, artifact_storage=None)
    elsewhere.delete(status.uuid)
    [message] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert str(artifact.uuid) in message and artifact.file in message
    assert "TASKSTATUS_ARTIFACT_STORAGE" in message


def test_memory_store_keeps_files_in_memory(make_tracker, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = make_tracker("memory://", artifact_storage=None)
    artifact = publish(tracker, "t").add_artifact(file=b"rows", filename="export.csv")
    with artifact.open() as f:
        assert f.read() == b"rows"
    assert stored_files(tmp_path) == []


def test_missing_files_are_named_in_a_warning(tracker, tmp_path, caplog):
    """A file that should exist but does not: opening it fails, deleting or purging its
    status goes on, and each says which artifact and which file."""
    for task_id in ("opened", "deleted", "purged"):
        publish(tracker, task_id)
        tracker.lifecycle.end(tracker.lifecycle.start(event(task_id)))
    files = {
        t: tracker.get_by_task_id(t).add_artifact(file=b"x", filename=f"{t}.bin")
        for t in ("opened", "deleted", "purged")
    }
    for path in stored_files(tmp_path / "artifacts"):
        path.unlink()

    def warned(artifact):
        return [
            r.getMessage()
            for r in caplog.records
            if r.levelname == "WARNING"
            and str(artifact.uuid) in r.getMessage()
            and artifact.file in r.getMessage()
        ]

    with pytest.raises(FileNotFoundError):
        files["opened"].open()
    assert warned(files["opened"])
    tracker.delete(tracker.get_by_task_id("deleted").uuid)
    assert warned(files["deleted"])
    tracker.delete(tracker.get_by_task_id("opened").uuid)
    assert tracker.purge(older_than=timedelta(0)) == 1
    assert warned(files["purged"])
