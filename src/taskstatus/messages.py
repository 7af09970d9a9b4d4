"""The texts end users read in a status's ``Error`` artifact when its queue, not the task,
ended the run: every queue adapter says the same thing the same way."""

from __future__ import annotations

__all__ = ["REJECTED", "TIMED_OUT", "UNSENT", "WORKER_LOST", "WORKER_SHUT_DOWN"]

#: A time limit stopped the task (Celery's hard limit, Dramatiq's, RQ's job timeout).
TIMED_OUT = "The task took too long and was stopped."
#: The process running the task died without reporting (killed, out of memory).
WORKER_LOST = "The worker running this task was lost."
#: The worker stopped and interrupted the task (Dramatiq's ``Shutdown``).
WORKER_SHUT_DOWN = "The worker shut down while the task was running."
#: The task refused its message for good (Celery's ``Reject(requeue=False)``).
REJECTED = "The task was rejected."
#: Publishing failed after the status was recorded (the broker was down): the task never ran.
UNSENT = "The task could not be sent to the queue."
