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
    live = tracker.begin(event("t"))
    a_bytes = live.add_artifact(file=b"id,name\n1,x\n", filename="export.csv")
    a_obj = live.add_artifact(name="Log", file=io.BytesIO(b"log line"), filename="run.log")
    source = tmp_path / "report.pdf"
    source.write_bytes(b"%PDF-1.7")
    a_path = live.add_artifact(name="Report", file=str(source))
    assert a_path.filename == "report.pdf"
    a_url = live.add_artifact(name="Link", url="https://example.com/r/1")
    a_text = live.add_artifact(name="Summary", text="42 rows imported")
    tracker.end(live)

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
        ({}, "exactly one of file, url or text"),
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
    with pytest.raises(TypeError, match="bytes, a binary file object or a path"):
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
    tracker.end(tracker.begin(event("done")))
    tracker.get_by_task_id("done").add_artifact(file=b"x", filename="done.bin")
    publish(tracker, "failed")
    tracker.end(tracker.begin(event("failed")), exception=ValueError("x"))
    publish(tracker, "running")
    tracker.begin(event("running"))
    tracker.get_by_task_id("running").add_artifact(file=b"y", filename="running.bin")
    publish(tracker, "waiting")
    # A finished container with an unfinished child is kept whole.
    publish(tracker, "g", container="celery.group")
    publish(tracker, "g1", parent="g")
    publish(tracker, "g2", parent="g")
    tracker.end(tracker.begin(event("g1")), exception=ValueError("x"))
    assert tracker.get_by_task_id("g").is_terminal

    # Nothing is old enough yet.
    assert tracker.purge() == 0
    assert tracker.purge(older_than=timedelta(0)) == 2
    remaining = sorted(s.task_id for s in tracker.statuses(limit=None))
    assert remaining == ["g", "g1", "g2", "running", "waiting"]
    assert [p.name for p in stored_files(tmp_path / "artifacts")] == ["running.bin"]

    tracker.end(tracker.begin(event("g2")))
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
        small.end(small.begin(event(f"t{i}")))
    assert small.purge(older_than=timedelta(0)) == 10
    assert small.count() == 0
    small.close()
