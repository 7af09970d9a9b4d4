"""schemathesis against the OpenAPI document: generated requests, for each kind of caller,
never get a 5xx nor an answer the document does not describe."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from taskstatus import Settings, Tracker
from taskstatus.web import create_app
from tests.helpers import event, publish
from tests.web.conftest import OTHER, OWNER, ROOT, header_user


def _app():
    """An app on a few statuses of two owners (statuses and files kept in memory)."""
    tracker = Tracker(Settings(url="memory://", artifact_storage="memory://taskstatus-schema"))
    group = publish(tracker, "g", user_id=OWNER, container="taskstatus.group", sealed=False)
    publish(tracker, "c", user_id=OWNER, parent="g")
    publish(tracker, "f", user_id=OWNER)
    tracker.lifecycle.start(event("f"))
    tracker.lifecycle.end(event("f"), exception=RuntimeError("boom"))
    publish(tracker, "r", user_id=OWNER)
    tracker.lifecycle.start(event("r"))
    tracker.lifecycle.end(
        event("r"), exception=TimeoutError("busy"), retrying=True
    )  # a retry history
    tracker.add_artifact(group, file=b"x,y\n", filename="out.csv")
    tracker.add_artifact(publish(tracker, "o", user_id=OTHER), text="theirs")
    return create_app(header_user, tracker=tracker)


schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", _app())
# Every check but one: a cursor is any string to the schema, yet only one this API wrote is
# accepted (400 otherwise, as the tests of bad input want), which the schema cannot say.
schema.config.checks.update(excluded_check_names=["positive_data_acceptance"])
bounded = settings(
    max_examples=25,
    derandomize=True,  # the same requests on every run: a failure is reproducible
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# A stream of events ends only when its task does, and schemathesis reads a response whole:
# as a caller who may follow them, those routes are tested in test_events.py instead.
followers = schema.exclude(path_regex=r"events$")


@followers.parametrize()
@bounded
def test_as_the_owner(case):
    case.call_and_validate(headers={"x-user": OWNER})


@followers.parametrize()
@bounded
def test_as_a_superuser(case):
    case.call_and_validate(headers={"x-user": ROOT})


@schema.parametrize()
@bounded
def test_as_nobody(case):
    case.call_and_validate()
