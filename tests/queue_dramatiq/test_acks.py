"""A Redis worker acknowledges the messages of one write together, in one pipeline.

The writer thread stores the successes of many messages at once and then acknowledges them:
with the script and arguments of Dramatiq's own acknowledgement, sent in one round trip, and
with each middleware's ``before_ack`` and ``after_ack`` for every message. A pipeline that
fails leaves them to Dramatiq's own one-by-one acknowledgement.
"""

from __future__ import annotations

import collections
import threading
import uuid
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis

import taskstatus
from taskstatus import State
from taskstatus.queues.dramatiq import FREED_PREFETCHES
from tests.conftest import private_store, require_server
from tests.queue_dramatiq import actors
from tests.queue_dramatiq.conftest import REDIS_URL, use_store
from tests.waiting import TIMEOUT, poll

pytestmark = pytest.mark.timeout(120)

MESSAGES = 30


def noop(user_id: str, i: int) -> int:
    return i


class Acks(dramatiq.Middleware):  # type: ignore[misc]
    """Records each message's ``before_ack`` and ``after_ack``; holds the first
    acknowledgement until opened, so that many messages wait for the next one."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.processed = 0
        self.calls: dict[str, list[str]] = collections.defaultdict(list)

    def after_process_message(self, broker: dramatiq.Broker, message: Any, **_: object) -> None:
        with self.lock:
            self.processed += 1

    def before_ack(self, broker: dramatiq.Broker, message: Any) -> None:
        with self.lock:
            self.calls[message.message_id].append("before")
        self.open.wait(TIMEOUT)

    def after_ack(self, broker: dramatiq.Broker, message: Any) -> None:
        with self.lock:
            self.calls[message.message_id].append("after")


class Pipelines:
    """Counts the commands of each Redis pipeline the broker's client executes, and makes
    the first ``failures`` of them fail as if Redis had gone away."""

    def __init__(self, client: redis.Redis, failures: int = 0) -> None:
        self.sizes: list[int] = []
        self.failures = failures
        self._pipeline = client.pipeline

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        pipe = self._pipeline(*args, **kwargs)
        execute = pipe.execute

        def counted(*a: Any, **k: Any) -> Any:
            if self.failures:
                self.failures -= 1
                raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379.")
            self.sizes.append(len(pipe.command_stack))
            return execute(*a, **k)

        pipe.execute = counted
        return pipe


@pytest.fixture
def store(tmp_path: Path):
    with private_store("sqlite", tmp_path) as url:
        tracker = use_store(url, tmp_path)
        yield
        tracker.close()


def _run(uid: str, failures: int, monkeypatch: pytest.MonkeyPatch) -> tuple[Acks, Pipelines]:
    """Run MESSAGES tracked messages on a 2-thread Redis worker whose first acknowledgement
    is held until the bound of waiting messages is reached; all must end acknowledged."""
    url = f"{REDIS_URL}/13"
    require_server("Redis", url)
    broker = actors.make_broker(url)
    queue = f"acks-{uuid.uuid4().hex[:10]}"
    actor = taskstatus.track()(
        dramatiq.actor(noop, broker=broker, queue_name=queue, actor_name=f"noop_{queue}")
    )
    acks = Acks()
    broker.add_middleware(acks)
    pipelines = Pipelines(broker.client, failures)
    monkeypatch.setattr(broker.client, "pipeline", pipelines)
    sent = [actor.send(uid, i).message_id for i in range(MESSAGES)]
    worker = dramatiq.Worker(broker, queues={queue}, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        bound = (FREED_PREFETCHES + 1) * worker.queue_prefetch
        poll(lambda: acks.processed, lambda n: n >= bound, "the bound of waiting messages")
        acks.open.set()
        broker.join(queue, timeout=int(TIMEOUT * 1000))
        acked = lambda: sum("after" in calls for calls in acks.calls.values())  # noqa: E731
        poll(acked, lambda n: n == MESSAGES, "every acknowledgement")
        assert {taskstatus.get_by_task_id(task_id).state for task_id in sent} == {State.SUCCEEDED}
        unacked = broker.client.scard(f"{broker.namespace}:__acks__.{broker.broker_id}.{queue}")
        assert unacked == 0
        assert set(acks.calls) == set(sent)
    finally:
        acks.open.set()
        worker.stop()
        broker.flush(queue)
        broker.close()
    return acks, pipelines


def test_the_acknowledgements_of_one_write_go_in_one_pipeline(store, uid, monkeypatch):
    acks, pipelines = _run(uid, 0, monkeypatch)
    # The messages that waited behind the held one were acknowledged together.
    assert max(pipelines.sizes) > 1
    assert sum(pipelines.sizes) <= MESSAGES
    assert {tuple(calls) for calls in acks.calls.values()} == {("before", "after")}


def test_a_failed_pipeline_leaves_its_messages_to_dramatiqs_own_acknowledgement(
    store, uid, monkeypatch
):
    acks, _ = _run(uid, 1, monkeypatch)
    # Each message acknowledged once; those of the failed pipeline were told twice before.
    assert {calls[-2:] == ["before", "after"] for calls in acks.calls.values()} == {True}
    assert {calls.count("after") for calls in acks.calls.values()} == {1}
    assert max(len(calls) for calls in acks.calls.values()) == 3
