"""The REST API's answers: payloads, filters, pages, links under a mount, downloads, bad
input, cross-site requests and a store that is down."""

from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from taskstatus import Settings, State, Tracker
from taskstatus.web import Principal, create_app
from taskstatus.web.errors import STORE_FAILED
from tests.helpers import event, publish
from tests.web.conftest import OTHER, OWNER, ROOT, header_user


def _ids(response):
    assert response.status_code == 200, response.text
    return [item["task_id"] for item in response.json()["results"]]


def test_payload_has_every_field_links_progress_and_artifacts(tracker, as_user):
    group = publish(tracker, "g", container="taskstatus.group", sealed=False)
    publish(tracker, "a", parent="g", total_steps=4)
    tracker.lifecycle.start(event("a"))
    tracker.increment_steps(tracker.get_by_task_id("a"), 1, 0)
    tracker.set_state(tracker.get_by_task_id("a"), "Sending emails")
    a = tracker.get_by_task_id("a")
    tracker.add_artifact(a, text="note")
    tracker.add_artifact(a, url="https://example.com/report")
    file = tracker.add_artifact(a, file=b"x", filename="out.txt")

    body = as_user(OWNER).get(f"/api/v1/tasks/{a.uuid}").json()
    assert body["url"] == f"http://testserver/api/v1/tasks/{a.uuid}"
    assert body["parent"] == str(group.uuid)
    assert body["progress"] == 0.25
    assert (body["state"], body["state_text"]) == ("In Progress", "Sending emails")
    assert {k: body[k] for k in ("task_id", "queue", "task_class", "user_id", "attempts")} == {
        "task_id": "a",
        "queue": "test",
        "task_class": "tests.task",
        "user_id": OWNER,
        "attempts": 1,
    }
    assert (body["completed_steps"], body["total_steps"], body["is_container"]) == (1, 4, False)
    for name in ("created", "modified", "started_at"):
        assert datetime.fromisoformat(body[name]).utcoffset() == timedelta(0), name
    assert body["finished_at"] is None
    assert [(x["name"], x["text"], x["url"]) for x in body["artifacts"]] == [
        ("Output", "note", None),
        ("Output", None, "https://example.com/report"),
        ("Output", None, None),
    ]
    assert [x["file"] for x in body["artifacts"]] == [
        None,
        None,
        f"http://testserver/api/v1/artifacts/{file.uuid}/file",
    ]
    container = as_user(OWNER).get(f"/api/v1/tasks/{group.uuid}").json()
    assert (container["is_container"], container["progress"]) == (True, 0.25)
    assert (body["sequential"], container["sequential"]) == (False, False)
    chain = publish(tracker, "c", container="celery.chain", sequential=True)
    assert as_user(OWNER).get(f"/api/v1/tasks/{chain.uuid}").json()["sequential"] is True


@pytest.fixture
def varied(tracker):
    publish(tracker, "e1", name="Export course 1")
    publish(tracker, "i1", name="Import grades")
    publish(tracker, "g", name="Nightly", container="taskstatus.group", sealed=False)
    publish(tracker, "g1", name="Nightly part", parent="g")
    tracker.lifecycle.start(event("i1"))
    publish(tracker, "x", name="export theirs", user_id=OTHER)
    return tracker


def test_filters(varied, as_user):
    mine = as_user(OWNER)

    def ids(**params):
        return _ids(mine.get("/api/v1/tasks/", params=params))

    assert ids() == ["g1", "g", "i1", "e1"]
    assert ids(state="in_progress") == ["i1"]
    assert ids(state=["Pending", "IN_PROGRESS"], parent="none") == ["g", "i1", "e1"]
    assert ids(search="EXPORT") == ["e1"]
    assert ids(parent=str(varied.get_by_task_id("g").uuid)) == ["g1"]
    assert ids(task_class="taskstatus.group") == ["g"]
    assert ids(queue="test", search="nightly") == ["g1", "g"]
    assert ids(queue="celery") == []
    created = varied.get_by_task_id("i1").created
    assert ids(created_after=created.isoformat(), created_before=created.isoformat()) == []
    assert ids(created_after=created.isoformat()) == ["g1", "g", "i1"]
    assert ids(created_before=created.isoformat()) == ["e1"]
    # Without an offset a time is UTC; with one it is converted.
    naive = created.replace(tzinfo=None).isoformat()
    assert ids(created_before=naive) == ["e1"]
    paris = created.astimezone(timezone(timedelta(hours=1))).isoformat()
    assert ids(created_before=paris) == ["e1"]


@pytest.mark.parametrize(
    ("path", "params", "problem"),
    [
        ("/api/v1/tasks/not-a-uuid", {}, "uuid"),
        ("/api/v1/tasks/not-a-uuid/children", {}, "uuid"),
        ("/api/v1/artifacts/12345", {}, "uuid"),
        ("/api/v1/artifacts/", {"status": "nope"}, "uuid"),
        ("/api/v1/tasks/", {"state": "Done"}, "unknown state 'Done'"),
        ("/api/v1/tasks/", {"limit": 0}, "greater than or equal to 1"),
        ("/api/v1/tasks/", {"limit": 10**9}, "less than or equal to 500"),
        ("/api/v1/tasks/", {"limit": "many"}, "valid integer"),
        ("/api/v1/tasks/", {"cursor": "garbage"}, "invalid cursor"),
        ("/api/v1/artifacts/", {"cursor": "WzEsMl0"}, "invalid cursor"),
        ("/api/v1/tasks/", {"created_after": "yesterday"}, "must be an ISO 8601 date and time"),
        ("/api/v1/tasks/", {"created_before": "2026-13-45"}, "must be an ISO 8601 date"),
        ("/api/v1/tasks/", {"created_before": "1700000000"}, "must be an ISO 8601 date"),
        ("/api/v1/tasks/", {"stat": "Failed"}, "unknown query parameter(s) stat; known: "),
        ("/api/v1/tasks/", {"created_after": "0001-01-01T00:00:00+01:00"}, "out of range"),
        ("/api/v1/tasks/", {"parent": "mine"}, '"parent"],"msg":"String should match pattern'),
        ("/api/v1/tasks/", {"search": "a\x00b"}, "search must not contain NUL"),
        ("/api/v1/tasks/", {"queue": "q" * 256}, "queue must be at most 255 characters"),
    ],
)
def test_bad_input_answers_4xx_naming_the_problem(tracker, as_user, path, params, problem):
    answer = as_user(OWNER).get(path, params=params)
    assert 400 <= answer.status_code < 500, answer.text
    assert problem in answer.text


def test_missing_ids_answer_404(tracker, as_user):
    nobody = "00000000-0000-4000-8000-000000000000"
    for path in (f"/api/v1/tasks/{nobody}", f"/api/v1/artifacts/{nobody}/file"):
        assert as_user(ROOT).get(path).status_code == 404
    assert as_user(ROOT).post(f"/api/v1/tasks/{nobody}/cancel").status_code == 404
    text = tracker.add_artifact(publish(tracker), text="no file here")
    answer = as_user(OWNER).get(f"/api/v1/artifacts/{text.uuid}/file")
    assert answer.status_code == 404
    assert answer.json() == {"detail": f"artifact {text.uuid} has no file"}


def test_walking_next_returns_each_old_status_once_while_new_ones_arrive(tracker, as_user):
    old = [publish(tracker, f"old-{n:04}").task_id for n in range(1000)]
    fresh = itertools.count()
    client, seen = as_user(OWNER), []
    url = "/api/v1/tasks/?limit=37&search=o"
    while url:
        page = client.get(url)
        seen += _ids(page)
        url = page.json()["next"]
        for _ in range(3):
            publish(tracker, f"new-{next(fresh)}")
    assert seen == list(reversed(old))


def test_next_link_keeps_the_filters(tracker, as_user):
    for n in range(5):
        publish(tracker, f"t{n}")
        publish(tracker, f"u{n}", user_id=OTHER)
    first = as_user(ROOT).get("/api/v1/tasks/", params={"user_id": OTHER, "limit": 2}).json()
    query = parse_qs(urlsplit(first["next"]).query)
    assert (query["user_id"], query["limit"]) == ([OTHER], ["2"])
    second = as_user(ROOT).get(first["next"])
    assert _ids(second) == ["u2", "u1"]
    tracker.lifecycle.start(event("t1"))
    states = {"state": ["In Progress", "PENDING"], "limit": 3}
    page = as_user(OWNER).get("/api/v1/tasks/", params=states).json()
    assert parse_qs(urlsplit(page["next"]).query)["state"] == ["In Progress", "PENDING"]
    assert _ids(as_user(OWNER).get(page["next"])) == ["t1", "t0"]


def test_artifact_pages(tracker, as_user):
    status = publish(tracker)
    for n in range(5):
        tracker.add_artifact(status, text=f"a{n}")
    client, texts = as_user(OWNER), []
    url = "/api/v1/artifacts/?limit=2"
    while url:
        page = client.get(url).json()
        texts += [a["text"] for a in page["results"]]
        url = page["next"]
    assert texts == ["a4", "a3", "a2", "a1", "a0"]


def test_links_honour_the_mount_path_and_root_path(memory_tracker, make_client):
    status = publish(memory_tracker)
    file = memory_tracker.add_artifact(status, file=b"content", filename="a.txt")
    publish(memory_tracker)
    api = create_app(header_user, tracker=memory_tracker)
    fastapi_parent = FastAPI()
    fastapi_parent.mount("/tasks", api)
    # Behind a proxy, the ASGI server's root_path is part of every request's path.
    for app, root_path, prefix in (
        (Starlette(routes=[Mount("/tasks", api)]), "", "/tasks"),
        (fastapi_parent, "", "/tasks"),
        (fastapi_parent, "/proxied", "/proxied/tasks"),
        (api, "/proxied", "/proxied"),
    ):
        client = make_client(app, OWNER, root_path=root_path)
        body = client.get(f"{prefix}/api/v1/tasks/?limit=1").json()
        assert body["next"].startswith(f"http://testserver{prefix}/api/v1/tasks/?")
        item = client.get(body["next"]).json()["results"][0]
        assert item["url"] == f"http://testserver{prefix}/api/v1/tasks/{status.uuid}"
        assert client.get(item["url"]).json()["uuid"] == str(status.uuid)
        link = item["artifacts"][0]["file"]
        assert link == f"http://testserver{prefix}/api/v1/artifacts/{file.uuid}/file"
        assert client.get(link).content == b"content"


def test_download_headers_and_content(tracker, as_user):
    status = publish(tracker)
    content = bytes(range(256)) * 4096  # 1 MiB: several chunks
    file = tracker.add_artifact(status, file=content, filename='résumé "final".pdf')
    answer = as_user(OWNER).get(f"/api/v1/artifacts/{file.uuid}/file")
    assert answer.status_code == 200
    assert answer.content == content
    assert answer.headers["content-type"] == "application/pdf"
    assert answer.headers["content-length"] == str(len(content))
    assert answer.headers["content-disposition"] == (
        'attachment; filename="r_sum_ _final_.pdf"; '
        "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.pdf"
    )
    assert answer.headers["x-content-type-options"] == "nosniff"
    unknown = tracker.add_artifact(status, file=b"?", filename="data.zzz-unknown")
    answer = as_user(OWNER).get(f"/api/v1/artifacts/{unknown.uuid}/file")
    assert answer.headers["content-type"] == "application/octet-stream"


def test_a_missing_file_answers_404(tracker, as_user):
    file = tracker.add_artifact(publish(tracker), file=b"x", filename="gone.txt")
    tracker.artifact_storage.delete([file.file])
    answer = as_user(OWNER).get(f"/api/v1/artifacts/{file.uuid}/file")
    assert answer.status_code == 404
    assert answer.json() == {"detail": f"the file of artifact {file.uuid} is missing"}


def test_state_changes_from_other_sites_are_refused(memory_tracker, make_client):
    api = create_app(header_user, tracker=memory_tracker, trusted_origins=["https://app.example"])
    client = make_client(api, OWNER)

    def cancel(**headers):
        status = publish(memory_tracker)
        return client.post(f"/api/v1/tasks/{status.uuid}/cancel", headers=headers)

    def delete(**headers):
        return client.delete(f"/api/v1/tasks/{publish(memory_tracker).uuid}", headers=headers)

    for change in (cancel, delete):
        for refused in (
            {"sec-fetch-site": "cross-site"},
            {"sec-fetch-site": "same-site", "origin": "http://testserver"},
            {"origin": "https://evil.example"},
            {"origin": "null"},
        ):
            answer = change(**refused)
            assert answer.status_code == 403, (change, refused)
            assert "refused" in answer.json()["detail"]
        for accepted in (
            {},  # not from a browser page
            {"sec-fetch-site": "same-origin", "origin": "http://testserver"},
            {"sec-fetch-site": "none"},
            {"origin": "http://testserver"},
            {"origin": "https://app.example", "sec-fetch-site": "cross-site"},
        ):
            assert change(**accepted).status_code in (200, 204), (change, accepted)
    # Reads are never refused: a page of another site cannot read the answer anyway.
    assert client.get("/api/v1/tasks/", headers={"sec-fetch-site": "cross-site"}).status_code == 200


def test_a_store_that_is_down_answers_503(tmp_path, make_client, caplog):
    down = Tracker(Settings(url="postgresql://postgres:secret@127.0.0.1:9/test"))
    client = make_client(down, OWNER)
    for path in ("/api/v1/tasks/", "/api/v1/tasks/00000000-0000-4000-8000-000000000000"):
        answer = client.get(path)
        assert answer.status_code == 503, answer.text
        # The database's words and where it is are for the operator: in the log only.
        assert answer.json()["detail"] == STORE_FAILED
        assert "127.0.0.1" in caplog.text
        assert "secret" not in caplog.text


def test_async_authenticator_and_default_tracker(memory_tracker, make_client, request):
    import taskstatus

    previous = taskstatus.set_tracker(memory_tracker)
    request.addfinalizer(lambda: taskstatus.set_tracker(previous))
    publish(memory_tracker, "mine")

    async def authenticate(request):
        return Principal(7) if request.headers.get("authorization") == "Bearer t" else None

    client = make_client(create_app(authenticate))
    nobody = client.get("/api/v1/tasks/")
    assert nobody.status_code == 401
    assert "www-authenticate" not in nobody.headers  # no scheme to name unless told
    assert _ids(client.get("/api/v1/tasks/", headers={"authorization": "Bearer t"})) == ["mine"]
    challenging = make_client(create_app(authenticate, challenge="Bearer"))
    assert challenging.get("/api/v1/tasks/").headers["www-authenticate"] == "Bearer"


def test_openapi_and_a_docs_page_without_cdn(memory_tracker, make_client):
    client = make_client(memory_tracker)
    spec = client.get("/api/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert set(spec["paths"]) == {
        "/api/v1/tasks/",
        "/api/v1/tasks/{uuid}",
        "/api/v1/tasks/{uuid}/children",
        "/api/v1/tasks/{uuid}/cancel",
        "/api/v1/tasks/{uuid}/events",
        "/api/v1/events",
        "/api/v1/artifacts/",
        "/api/v1/artifacts/{uuid}",
        "/api/v1/artifacts/{uuid}/file",
    }
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    assert "openapi.json" in page.text
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)
    assert [s.value for s in State] == spec["components"]["schemas"]["State"]["enum"]


def test_a_principal_has_a_text_id():
    assert Principal(7) == Principal("7")
    for missing in (None, ""):
        with pytest.raises(TypeError, match="return None for no caller"):
            Principal(missing)


def test_a_status_carries_its_retries_where_lists_do_not(tracker, as_user):
    publish(tracker, "r")
    tracker.hook.taskstatus_prerun(event=event("r"))
    tracker.hook.taskstatus_retry(event=event("r", exception=TimeoutError("busy")))
    tracker.hook.taskstatus_prerun(event=event("r"))
    status = tracker.get_by_task_id("r")
    (attempt,) = tracker.attempts(status)

    body = as_user(OWNER).get(f"/api/v1/tasks/{status.uuid}").json()
    (retry,) = body["retries"]
    assert (body["attempts"], retry["number"], retry["message"]) == (2, 1, "TimeoutError: busy")
    assert datetime.fromisoformat(retry["started_at"]) == attempt.started_at
    assert datetime.fromisoformat(retry["retried_at"]) == attempt.retried_at
    # A page of a list, a container's children and a cancel answer the status without it.
    (listed,) = as_user(OWNER).get("/api/v1/tasks/").json()["results"]
    assert listed["attempts"] == 2 and "retries" not in listed
    canceled = as_user(OWNER).post(f"/api/v1/tasks/{status.uuid}/cancel").json()
    assert canceled["state"] == "Canceled" and "retries" not in canceled
    fresh = publish(tracker, "fresh")
    assert as_user(OWNER).get(f"/api/v1/tasks/{fresh.uuid}").json()["retries"] == []
