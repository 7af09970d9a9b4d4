"""A Redis worker's prefetch and the messages whose acknowledgement waits for taskstatus's write.

A message that succeeded is acknowledged by the writer once its success is stored. Until then
it no longer takes a place in the Redis consumer's prefetch, so that the consumer goes on
fetching; but at most ``FREED_PREFETCHES * prefetch`` such messages per consumer, so that a
writer that cannot keep up still holds the worker back.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import dramatiq
import pytest

import taskstatus
from taskstatus import State
from taskstatus.queues.dramatiq import FREED_PREFETCHES
from tests.conftest import private_store, require_server
from tests.queue_dramatiq import actors
from tests.queue_dramatiq.conftest import REDIS_URL, use_store
from tests.waiting import TIMEOUT, poll


def noop(user_id: str, i: int) -> int:
    return i


class Gate(dramatiq.Middleware):  # type: ignore[misc]
    """Counts the messages processed; holds every acknowledgement until opened (the first
    one it holds is the writer's, which then writes and acknowledges nothing more)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.processed = 0

    def after_process_message(self, broker: dramatiq.Broker, message: object, **_: object) -> None:
        with self.lock:
            self.processed += 1

    def before_ack(self, broker: dramatiq.Broker, message: object) -> None:
        self.open.wait(TIMEOUT)


@pytest.fixture
def store(tmp_path: Path):
    with private_store("sqlite", tmp_path) as url:
        tracker = use_store(url, tmp_path)
        yield
        tracker.close()


def test_messages_waiting_for_their_write_take_no_prefetch_slot_up_to_a_bound(store, uid):
    url = f"{REDIS_URL}/13"
    require_server("Redis", url)
    broker = actors.make_broker(url)
    queue = f"prefetch-{uuid.uuid4().hex[:10]}"
    actor = taskstatus.track()(
        dramatiq.actor(noop, broker=broker, queue_name=queue, actor_name=f"noop_{queue}")
    )
    gate = Gate()
    broker.add_middleware(gate)
    sent = [actor.send(uid, i).message_id for i in range(30)]
    worker = dramatiq.Worker(broker, queues={queue}, worker_threads=2, worker_timeout=50)
    prefetch = worker.queue_prefetch
    worker.start()
    try:
        # The writer holds the first acknowledgement: FREED_PREFETCHES * prefetch messages
        # wait without a slot, and `prefetch` more fill the slots, all run; then the
        # consumer stops.
        bound = (FREED_PREFETCHES + 1) * prefetch
        assert bound < len(sent)
        poll(lambda: gate.processed, lambda n: n >= bound, "the bound to be reached")
        time.sleep(0.3)  # room for a message beyond the bound to be run
        assert gate.processed == bound
        gate.open.set()
        broker.join(queue, timeout=int(TIMEOUT * 1000))
        assert gate.processed == len(sent)
        states = {taskstatus.get_by_task_id(task_id).state for task_id in sent}
        assert states == {State.SUCCEEDED}
    finally:
        gate.open.set()
        worker.stop()
        broker.flush(queue)
        broker.close()
