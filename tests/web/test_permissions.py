"""Who may do what, on every route and every store: owner, another user, a superuser and
nobody; plugins widening and narrowing the default rule."""

from __future__ import annotations

import pytest

import taskstatus
from tests.helpers import event, publish
from tests.web.conftest import OTHER, OWNER, ROLES, ROOT, USER_OF_ROLE

TRACE = 'Traceback (most recent call last):\n  File "/srv/app/secret.py"\nRuntimeError: disk full'


@pytest.fixture
def owned(tracker):
    """The owner's open container with a child, a text artifact and a file, and a task
    that failed; another user's task."""
    group = publish(tracker, "group", user_id=OWNER, container="taskstatus.group", sealed=False)
    child = publish(tracker, "child", user_id=OWNER, parent="group")
    broken = publish(tracker, "broken", user_id=OWNER)
    tracker.lifecycle.start(event("broken"))
    tracker.lifecycle.end(event("broken"), exception=RuntimeError("disk full"), traceback=TRACE)
    note = tracker.add_artifact(group, text="a note")
    file = tracker.add_artifact(group, file=b"id,grade\n1,A\n", filename="grades.csv")
    publish(tracker, "theirs", user_id=OTHER)
    return {
        "group": tracker.get(group.uuid),
        "child": tracker.get(child.uuid),
        "broken": tracker.get(broken.uuid),
        "note": note,
        "file": file,
    }


def _listed(response):
    assert response.status_code == 200, response.text
    return {item["task_id"] for item in response.json()["results"]}


@pytest.mark.parametrize("role", ROLES)
def test_every_route_for_each_caller(tracker, owned, as_user, role):
    client = as_user(USER_OF_ROLE[role])
    group, child, note, file = owned["group"], owned["child"], owned["note"], owned["file"]
    sees = role in ("owner", "superuser")
    everything = {str(a.uuid) for s in tracker.statuses(user_id=OWNER) for a in s.artifacts}
    answers = {
        "list": client.get("/api/v1/tasks/"),
        "get": client.get(f"/api/v1/tasks/{group.uuid}"),
        "children": client.get(f"/api/v1/tasks/{group.uuid}/children"),
        "artifacts": client.get("/api/v1/artifacts/"),
        "artifacts of status": client.get("/api/v1/artifacts/", params={"status": group.uuid}),
        "artifact": client.get(f"/api/v1/artifacts/{note.uuid}"),
        "file": client.get(f"/api/v1/artifacts/{file.uuid}/file"),
        "cancel": client.post(f"/api/v1/tasks/{group.uuid}/cancel"),
        "delete": client.delete(f"/api/v1/tasks/{child.uuid}"),
    }
    if role == "anonymous":
        assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(answers, 401)
        assert {r.json()["detail"] for r in answers.values()} == {"authentication required"}
        assert tracker.get(group.uuid).state is taskstatus.State.PENDING
        return
    expected = {
        "list": 200,
        "get": 200 if sees else 404,
        "children": 200 if sees else 404,
        "artifacts": 200,
        "artifacts of status": 200 if sees else 404,
        "artifact": 200 if sees else 404,
        "file": 200 if sees else 404,
        "cancel": 200 if sees else 404,
        "delete": 204 if sees else 404,
    }
    assert {name: r.status_code for name, r in answers.items()} == expected
    listed = _listed(answers["list"])
    artifacts = {a["uuid"] for a in answers["artifacts"].json()["results"]}
    if role in ("owner", "superuser"):
        mine = {"group", "child", "broken"}
        assert listed == (mine | {"theirs"} if role == "superuser" else mine)
        assert artifacts == everything
    else:
        assert listed == {"theirs"}
        assert artifacts == set()
        # Not a 403: whether someone else's status exists is not revealed.
        assert answers["get"].json() == {"detail": f"no task status with uuid {group.uuid}"}
        assert tracker.get(group.uuid).state is not taskstatus.State.CANCELED
        tracker.get(child.uuid)  # not deleted
        return
    assert answers["file"].content == b"id,grade\n1,A\n"
    assert _listed(answers["children"]) == {"child"}
    assert answers["cancel"].json()["state"] == "Canceled"
    with pytest.raises(taskstatus.NotFound):
        tracker.get(child.uuid)


def test_traceback_is_for_superusers_only(tracker, owned, as_user):
    child = owned["broken"]
    assert tracker.get(child.uuid).traceback == TRACE
    mine = as_user(OWNER).get(f"/api/v1/tasks/{child.uuid}").json()
    assert mine["traceback"] is None
    assert mine["artifacts"][0]["text"] == "RuntimeError: disk full"  # the message only
    assert as_user(ROOT).get(f"/api/v1/tasks/{child.uuid}").json()["traceback"] == TRACE


def test_terminate_and_user_id_filter_are_for_superusers(tracker, owned, as_user):
    group = owned["group"]
    owner, root = as_user(OWNER), as_user(ROOT)
    refused = owner.post(f"/api/v1/tasks/{group.uuid}/cancel", params={"terminate": "true"})
    assert refused.status_code == 403
    assert refused.json() == {"detail": "terminate is for superusers only"}
    assert owner.get("/api/v1/tasks/", params={"user_id": OTHER}).status_code == 403
    assert _listed(owner.get("/api/v1/tasks/", params={"user_id": OWNER})) == {
        "group",
        "child",
        "broken",
    }
    assert _listed(root.get("/api/v1/tasks/", params={"user_id": OTHER})) == {"theirs"}
    done = root.post(f"/api/v1/tasks/{group.uuid}/cancel", params={"terminate": "true"})
    assert done.json()["state"] == "Canceled"


class SupportAndAuditors:
    """Support staff see every task; auditors see only user 8's; only superusers delete."""

    @taskstatus.hookimpl
    def taskstatus_visible_owners(self, principal):
        return {"support": True, "auditor": [OTHER], "banned": False}.get(principal.id)

    @taskstatus.hookimpl
    def taskstatus_permission(self, principal, action, status):
        if action == "delete" and not principal.is_superuser:
            return False
        if action == "cancel" and principal.id == "support":
            return True
        return None


def test_plugins_widen_and_narrow_lists_in_the_query_and_each_status(tracker, owned, as_user):
    tracker.register(SupportAndAuditors())
    group = owned["group"]
    support, auditor, banned, owner = (as_user(u) for u in ("support", "auditor", "banned", OWNER))
    assert _listed(support.get("/api/v1/tasks/")) == {"group", "child", "broken", "theirs"}
    assert _listed(auditor.get("/api/v1/tasks/")) == {"theirs"}
    assert _listed(banned.get("/api/v1/tasks/")) == set()
    # A short page is full: the filter is in the query, not applied to a fetched page.
    assert _listed(support.get("/api/v1/tasks/", params={"limit": 1})) == {"theirs"}
    assert _listed(auditor.get("/api/v1/tasks/", params={"limit": 1})) == {"theirs"}
    assert support.get(f"/api/v1/tasks/{group.uuid}").status_code == 200
    assert auditor.get(f"/api/v1/tasks/{group.uuid}").status_code == 404
    assert support.get(f"/api/v1/artifacts/{owned['note'].uuid}").status_code == 200
    assert auditor.get(f"/api/v1/artifacts/{owned['file'].uuid}/file").status_code == 404
    assert owner.delete(f"/api/v1/tasks/{group.uuid}").status_code == 403
    assert support.post(f"/api/v1/tasks/{group.uuid}/cancel").json()["state"] == "Canceled"
    assert as_user(ROOT).delete(f"/api/v1/tasks/{group.uuid}").status_code == 204
