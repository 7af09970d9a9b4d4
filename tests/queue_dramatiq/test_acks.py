"""A Redis worker's acknowledgements that wait for taskstatus's write.

A message that succeeded is acknowledged by the writer once its success is stored. Until then
it no longer takes a place in the Redis consumer's prefetch, so that the consumer goes on
fetching; but at most ``FREED_PREFETCHES * prefetch`` such messages per consumer, so that a
writer that cannot keep up still holds the worker back.

The writer acknowledges the messages of one write together, in one Redis pipeline, with each
middleware's ``before_ack`` and ``after_ack`` for every message; a pipeline that fails leaves
them to Dramatiq's own one-by-one acknowledgement.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
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


class Gate(dramatiq.Middleware):  # type: ignore[misc]
    """Counts the messages processed and records each one's ``before_ack`` and
    ``after_ack``; holds every acknowledgement until opened (the first one it holds is the
    writer's, which then writes and acknowledges nothing more)."""

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

    def acknowledged(self) -> int:
        with self.lock:
            return sum("after" in calls for calls in self.calls.values())


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


@contextlib.contextmanager
def gated_worker(
    uid: str, pipelines: int | None = None, monkeypatch: pytest.MonkeyPatch | None = None
) -> Iterator[tuple[Gate, Pipelines | None, list[str], int]]:
    """A 2-thread Redis worker running MESSAGES tracked messages behind a :class:`Gate`,
    with its pipelines counted (``pipelines``: how many of them fail): the gate, the
    pipelines, the message ids and the bound of messages run while the gate is shut. On
    leaving, the gate is opened; every message must have been acknowledged, Succeeded."""
    url = f"{REDIS_URL}/13"
    require_server("Redis", url)
    broker = actors.make_broker(url)
    queue = f"acks-{uuid.uuid4().hex[:10]}"
    actor = taskstatus.track()(
        dramatiq.actor(noop, broker=broker, queue_name=queue, actor_name=f"noop_{queue}")
    )
    gate = Gate()
    broker.add_middleware(gate)
    counted = None
    if monkeypatch is not None and pipelines is not None:
        counted = Pipelines(broker.client, pipelines)
        monkeypatch.setattr(broker.client, "pipeline", counted)
    worker = dramatiq.Worker(broker, queues={queue}, worker_threads=2, worker_timeout=50)
    # Started before the messages are sent: its threads run messages before its boot ends,
    # and until then a worker writes each outcome and acknowledges it on the worker thread.
    worker.start()
    try:
        sent = [actor.send(uid, i).message_id for i in range(MESSAGES)]
        # The writer holds the first acknowledgement: FREED_PREFETCHES * prefetch messages
        # wait without a place in the prefetch, and `prefetch` more fill it, all run; then
        # the consumer stops.
        bound = (FREED_PREFETCHES + 1) * worker.queue_prefetch
        assert bound < len(sent)
        yield gate, counted, sent, bound
        gate.open.set()
        broker.join(queue, timeout=int(TIMEOUT * 1000))
        poll(gate.acknowledged, lambda n: n == len(sent), "every acknowledgement")
        assert gate.processed == len(sent)
        assert set(gate.calls) == set(sent)
        assert {taskstatus.get_by_task_id(task_id).state for task_id in sent} == {State.SUCCEEDED}
        unacked = broker.client.scard(f"{broker.namespace}:__acks__.{broker.broker_id}.{queue}")
        assert unacked == 0
    finally:
        gate.open.set()
        worker.stop()
        broker.flush(queue)
        broker.close()


def test_messages_waiting_for_their_write_take_no_prefetch_slot_up_to_a_bound(store, uid):
    with gated_worker(uid) as (gate, _, _, bound):
        poll(lambda: gate.processed, lambda n: n >= bound, "the bound to be reached")
        time.sleep(0.3)  # room for a message beyond the bound to be run
        assert gate.processed == bound


def test_the_acknowledgements_of_one_write_go_in_one_pipeline(store, uid, monkeypatch):
    with gated_worker(uid, 0, monkeypatch) as (gate, pipelines, sent, bound):
        poll(lambda: gate.processed, lambda n: n >= bound, "the bound to be reached")
    assert pipelines is not None
    # The messages that waited behind the held one were acknowledged together.
    assert max(pipelines.sizes) > 1
    assert sum(pipelines.sizes) <= len(sent)
    assert {tuple(calls) for calls in gate.calls.values()} == {("before", "after")}


def test_a_failed_pipeline_leaves_its_messages_to_dramatiqs_own_acknowledgement(
    store, uid, monkeypatch
):
    with gated_worker(uid, 1, monkeypatch) as (gate, _, _, bound):
        poll(lambda: gate.processed, lambda n: n >= bound, "the bound to be reached")
    # Each message acknowledged once; those of the failed pipeline were told twice before.
    assert {calls[-2:] == ["before", "after"] for calls in gate.calls.values()} == {True}
    assert {calls.count("after") for calls in gate.calls.values()} == {1}
    assert max(len(calls) for calls in gate.calls.values()) == 3
