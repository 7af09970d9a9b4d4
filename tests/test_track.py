"""@track: names, total steps, owner checks and argument binding (queue-independent part)."""

from __future__ import annotations

import inspect

import pytest
from hypothesis import given
from hypothesis import strategies as st

import taskstatus
from taskstatus.tracking import TrackSpec, find_spec


@taskstatus.track(name="Export {course_id}", total_steps=lambda a: len(a["items"]))
def export(user_id, course_id, items, fmt="csv", **extra):
    return course_id


def test_track_leaves_the_function_callable():
    assert export(7, 3, [1]) == 3
    assert find_spec(export).user_arg == "user_id"


def test_describe_a_call():
    info = find_spec(export).describe(export, (7, 3, [1, 2, 3]), {"flag": True})
    assert info.name == "Export 3"
    assert info.total_steps == 3
    assert info.user_id == "7"
    assert info.arguments == {
        "user_id": 7,
        "course_id": 3,
        "items": [1, 2, 3],
        "fmt": "csv",
        "flag": True,
    }


@pytest.mark.parametrize("owner", [None, "", "  "])
def test_missing_or_empty_owner_is_a_type_error(owner):
    with pytest.raises(TypeError, match="owner argument 'user_id' is missing or empty"):
        find_spec(export).describe(export, (owner, 3, []), {})


def test_owner_argument_can_be_renamed():
    @taskstatus.track(user_arg="owner")
    def job(self, owner, n):
        return n

    spec = find_spec(job)
    info = spec.describe(job, ("alice", 2), {}, skip_first=True, task_name="app.job")
    assert (info.user_id, info.name, info.total_steps) == ("alice", "app.job", 1)
    with pytest.raises(TypeError, match="'owner'"):
        spec.describe(job, (), {"n": 1, "owner": None}, skip_first=True)


def test_wrong_arguments_are_named():
    with pytest.raises(TypeError, match=r"export\(\): missing a required argument"):
        find_spec(export).describe(export, (7,), {})


def test_bad_name_template_is_named():
    @taskstatus.track(name="Import {path}")
    def job(user_id, filename):
        pass

    with pytest.raises(
        ValueError, match=r"uses 'path' which is not an argument.*user_id, filename"
    ):
        find_spec(job).describe(job, (1, "a.csv"), {})


def test_callable_name_and_bad_total():
    @taskstatus.track(name=lambda a: f"Rebuild {a['n']}", total_steps=lambda a: -1)
    def job(user_id, n):
        pass

    with pytest.raises(ValueError, match="total_steps must be between"):
        find_spec(job).describe(job, (1, 5), {})
    assert find_spec(job).render_name({"n": 5}, "x") == "Rebuild 5"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": 3}, TypeError),
        ({"total_steps": "ten"}, TypeError),
        ({"total_steps": -2}, ValueError),
        ({"user_arg": "not an identifier"}, ValueError),
    ],
)
def test_bad_track_arguments(kwargs, error):
    with pytest.raises(error):
        taskstatus.track(**kwargs)


def _plain(user_id, a, b=2, c="c"):
    return a


@given(
    args=st.lists(st.integers(), max_size=5).map(tuple),
    kwargs=st.dictionaries(st.sampled_from(["user_id", "a", "b", "c", "d"]), st.integers()),
    partial=st.booleans(),
)
def test_fast_binding_agrees_with_inspect(args, kwargs, partial):
    """Plain parameters are bound without inspect; the result (or error) is inspect's."""
    signature = inspect.signature(_plain)

    def by_inspect():
        bound = (
            signature.bind_partial(*args, **kwargs) if partial else signature.bind(*args, **kwargs)
        )
        bound.apply_defaults()
        return dict(bound.arguments)

    spec = TrackSpec()
    try:
        expected = by_inspect()
    except TypeError:
        with pytest.raises(TypeError, match="_plain"):
            spec.arguments(_plain, args, kwargs, partial=partial)
        return
    got = spec.arguments(_plain, args, kwargs, partial=partial)
    assert got == expected
    assert list(got) == list(expected)
