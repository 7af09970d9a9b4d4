"""Celery adapter: Celery's own events -> taskstatus lifecycle hooks.

``install(app)`` hooks three places, each Celery's narrowest point for its job:

* **publish** — the app's ``amqp.send_task_message``, the one function every message passes
  through (``delay``, ``apply_async``, canvas, retries, chain steps sent by workers). Running in
  the call path, it can refuse a tracked task without its owner (``TypeError``, nothing sent);
  a ``before_task_publish`` receiver could not, as Celery only logs receiver errors. The
  message (protocol 2) says which chain, group or chord a task belongs to. What it recorded
  for a message the broker then refuses ends Failed in the same call.
* **run** — tracked tasks' ``run`` is wrapped when Celery builds the task's tracer (as
  ``build_tracer`` is the one place every pool and ``apply()`` go through), so a canceled task is
  skipped before its body runs and every outcome is recorded in the process that ran it.
* **signals** in the worker's main process for what the pool child cannot report:
  ``task_failure`` for a lost worker or hard time limit, ``task_revoked``.

``group.apply_async`` is wrapped too, only to learn when a group has published all its
children, so that its container may end, and ``Task.retry``, only to learn the exception a
retry was given. Untracked tasks are left untouched.

The modules: ``publish`` (messages as they are sent), ``canvas`` (chains, groups and chords as
containers), ``retry``, ``run``, ``signals`` (worker processes), ``patches`` (what is patched
in Celery), ``compat`` (django-user-tasks' ``UserTask``), ``adapter`` (one app's parts).
"""

from __future__ import annotations

from ...tracker import Tracker
from .._install import install_arguments, queue_library

# Every module of this package imports Celery: a missing Celery is reported here, once.
with queue_library("celery"):
    from celery import Celery

    from .adapter import CeleryAdapter, adapters
    from .canvas import NAME_HEADER as NAME_HEADER
    from .canvas import NAME_KWARG as NAME_KWARG
    from .canvas import PREVIOUS_RESULT as PREVIOUS_RESULT
    from .compat import UserTask, UserTaskMixin
    from .patches import patch_celery
    from .run import REPLACED as REPLACED
    from .tasks import QUEUE as QUEUE

__all__ = ["CeleryAdapter", "UserTask", "UserTaskMixin", "install"]


def install(
    target: Celery | None = None,
    positional_tracker: Tracker | None = None,
    /,
    *,
    tracker: Tracker | None = None,
    app: Celery | None = None,
) -> CeleryAdapter:
    """Track the ``@taskstatus.track`` tasks (and ``UserTask`` subclasses) of the Celery app
    ``target``; returns its adapter.

    Call it where the app is created, in producers and workers alike. ``tracker`` defaults to
    the one made by ``taskstatus.configure()`` (looked up at each event, so configuring after
    ``install`` is fine). Installing twice returns the same adapter. (``install(app,
    tracker)`` and ``install(app=app)`` still work, with a DeprecationWarning.)
    """
    app, tracker = install_arguments(target, app, "app", positional_tracker, tracker)
    if not isinstance(app, Celery):
        raise TypeError(f"install() takes a Celery app, got {type(app).__name__}")
    existing = adapters.get(id(app))
    if existing is not None:
        return existing
    adapter = CeleryAdapter(app, tracker)
    adapters[id(app)] = adapter
    patch_celery()
    adapter.connect()
    return adapter
