"""Publishing while the broker or the store is down, on each queue, with real workers.

* Broker outage: a thread publishes a stream of tasks (and groups) while the test's own Redis,
  the broker, stops and starts again. Every publish that raised raised the broker's own error
  and left no Pending status (its tasks are Failed, "could not be sent"); every task accepted
  ends Succeeded; every container ends. The Redis keeps what it acknowledged (the outage loses
  no accepted message, as a broker that keeps its messages), so that a task left Pending
  could only be taskstatus's doing.
* Store outage: publishing raises ``taskstatus.StoreUnavailable`` and sends nothing; once the
  store is back, publishing works again.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import kombu.exceptions
import pytest
import redis

import taskstatus
from taskstatus import State, StoreUnavailable, TaskStatus
from taskstatus.messages import UNSENT
from tests.conftest import private_store, show_on_failure
from tests.faults.servers import PrivateRedis
from tests.waiting import error_texts, find, poll

pytestmark = pytest.mark.timeout(180)

#: Tasks accepted before the outage, and after it, in each stream.
ACCEPTED_EACH_SIDE = 8
#: Publishes that raised during the outage, at least.
RAISED_AT_LEAST = 3


@dataclass
class Published:
    """One publish call of the stream: the task ids it sends, and whether it raised."""

    task_ids: list[str]
    group: bool
    error: BaseException | None = None


@dataclass
class Stream:
    """Publishes from a thread, one call after another, until stopped."""

    publish: Callable[[list[str], bool], None]
    calls: list[Published] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n = 0
        while not self._stop.is_set():
            group = n % 4 == 3
            call = Published([uuid.uuid4().hex for _ in range(2 if group else 1)], group)
            try:
                self.publish(call.task_ids, group)
            except Exception as exc:
                call.error = exc
            self.calls.append(call)
            n += 1
            time.sleep(0.02)

    def count(self, *, raised: bool) -> int:
        return sum((c.error is not None) == raised for c in list(self.calls))

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join(60)
            assert not thread.is_alive(), "a publish never returned"


def show_worker_logs(request: pytest.FixtureRequest, folder: Path) -> None:
    """The end of each worker log in ``folder`` in the report, if the test fails."""

    def sections() -> list[tuple[str, str]]:
        return [
            (log.name, "\n".join(log.read_text(errors="replace").splitlines()[-200:]))
            for log in sorted(folder.glob("worker-*.log"))
        ]

    show_on_failure(request, sections)


def reviver(
    procs: Callable[[], list[subprocess.Popen[bytes]]], start: Callable[[], object]
) -> Callable[[], None]:
    """Start a worker again once all have exited, as their supervisor would: a Redis outage
    can stop them (an ``rq worker`` exits on a Redis error met outside its wait for a job; a
    celery worker stops on a connection lost while it acknowledges, kombu's "Unrecoverable
    error")."""

    def revive() -> None:
        if all(proc.poll() is not None for proc in procs()):
            start()

    return revive


def through_broker_outage(
    stream: Stream,
    broker: PrivateRedis,
    broker_errors: tuple[type[BaseException], ...],
    owner: int,
    revive: Callable[[], None],
    lost_by_broker: Callable[[], set[str]] = set,
) -> None:
    """Run ``stream`` while ``broker`` (a private server) stops and starts, then check what
    every publish left behind once the workers are done (``revive``: restart a worker that
    the outage stopped, as its supervisor would; ``lost_by_broker``: task ids whose message
    the broker's log shows it lost, which stay Pending)."""
    with stream.running():
        poll(lambda: stream.count(raised=False), lambda n: n >= ACCEPTED_EACH_SIDE, "publishes")
        broker.stop()
        poll(lambda: stream.count(raised=True), lambda n: n >= RAISED_AT_LEAST, "failures")
        broker.start()
        before = stream.count(raised=False)
        poll(
            lambda: stream.count(raised=False),
            lambda n: n >= before + ACCEPTED_EACH_SIDE,
            "publishes after the outage",
        )
    # 0 orphans: every status ends (a Pending one would stay so), but a task whose message
    # the broker lost, and its container.
    raised = {t for c in stream.calls if c.error is not None for t in c.task_ids}
    lost = lost_by_broker()

    def stuck(found: list[TaskStatus]) -> set[str]:
        """The tasks left Pending because the broker lost their message."""
        return {s.task_id for s in found if s.state is State.PENDING and s.task_id in lost}

    def unended() -> list[tuple[str, str, bool]]:
        revive()
        found = taskstatus.statuses(user_id=owner, limit=None)
        left = stuck(found)
        waiting = {s.parent_uuid for s in found if s.task_id in left}
        return [
            (s.task_id, s.state.value, s.task_id in raised)
            for s in found
            if not s.is_terminal and s.task_id not in left and s.uuid not in waiting
        ]

    try:
        poll(unended, lambda left: not left, "every status to end (task id, state, raised)")
    except AssertionError as exc:
        held = {t: broker_keys_holding(broker.url, t) for t, _, _ in unended()}
        raise AssertionError(f"{exc}\nbroker keys holding each: {held}") from None
    found = taskstatus.statuses(user_id=owner, limit=None)
    left = stuck(found)
    assert not [s for s in found if s.state is State.PENDING and s.task_id not in left], found
    for call in stream.calls:
        statuses = [find(task_id) for task_id in call.task_ids]
        if call.error is None:
            ended = [s.state if s else None for s in statuses if s is None or s.task_id not in left]
            assert ended == [State.SUCCEEDED] * len(ended), call
        else:
            # The caller got the broker's own error, unchanged.
            assert isinstance(call.error, broker_errors), repr(call.error)
            for status in statuses:
                # A group's members sent before the broker went down ran; those recorded
                # and not sent failed; those never reached were never recorded.
                if status is not None and status.state is not State.SUCCEEDED:
                    assert status.state is State.FAILED, status
                    assert error_texts(status) == [UNSENT]
            if not call.group:
                assert statuses[0] is not None and statuses[0].state is State.FAILED
        if call.group:
            # RQ's enqueue_many has no container.
            parents = {s.parent_uuid for s in statuses if s is not None} - {None}
            for parent in parents:
                assert parent is not None
                container = taskstatus.get(parent)
                if left.intersection(call.task_ids):
                    # A container ends when every child has; this one never will.
                    assert not container.is_terminal, (call, container)
                    continue
                expected = State.SUCCEEDED if call.error is None else State.FAILED
                assert container.state is expected, (call, container)
    failed = [s for s in found if s.state is State.FAILED and not s.is_container]
    assert len(failed) >= stream.count(raised=True)


def lost_in_delivery(broker: PrivateRedis, queue: str) -> set[str]:
    """Task ids of the Celery messages that kombu's Redis transport lost when ``broker`` was
    killed: taken from ``queue`` for a worker before the kill, never recorded as delivered.

    The transport takes a message with BRPOP, and records it in ``unacked`` (from which an
    unacknowledged message is delivered again) only once the answer has reached the worker:
    a server killed in between has removed the message for good, before the worker saw it.
    Its status stays Pending: Celery on Redis loses that task, whatever tracks it.
    """
    logged = broker.commands()
    kill = broker.kills[-1]
    waiting: list[bytes] = []  # the queue's list, leftmost first
    taken: set[str] = set()
    delivered: set[str] = set()

    def task_id(message: object) -> str:
        return str(message["headers"]["id"])  # type: ignore[index]

    key = queue.encode()
    for at, (command, *args) in enumerate(logged):
        verb = command.upper()
        if verb == b"LPUSH" and args[0] == key:
            waiting[:0] = reversed(args[1:])
        elif verb == b"RPUSH" and args[0] == key:
            waiting.extend(args[1:])
        elif verb == b"RPOP" and args[0] == key and waiting:
            message = json.loads(waiting.pop())
            if at < kill:
                taken.add(task_id(message))
        elif verb == b"HSET" and args[0] == b"unacked":
            delivered.add(task_id(json.loads(args[2])[0]))
    return taken - delivered


def broker_keys_holding(url: str, task_id: str) -> list[str]:
    """The broker's keys whose name or value mentions ``task_id``: where a message that was
    never run waits (a queue, an unacknowledged set), if anywhere."""
    client = redis.Redis.from_url(url)
    found = []
    needle = task_id.encode()
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind == b"hash":
            values = [*client.hkeys(key), *client.hvals(key)]
        elif kind in (b"set", b"zset"):
            values = list(client.smembers(key) if kind == b"set" else client.zrange(key, 0, -1))
        elif kind == b"string":
            values = [client.get(key) or b""]
        else:
            values = []
        if needle in key or any(needle in v for v in values):
            found.append(f"{key.decode(errors='replace')} ({kind.decode()})")
    return found


# -- Celery ------------------------------------------------------------------------------------
@contextlib.contextmanager
def celery_cell(broker_url: str, store: str, tmp: Path) -> Iterator[object]:
    from tests.queue_celery.conftest import Cell

    with private_store(store, tmp) as url:
        cell = Cell("redis", url, tmp, broker_url=broker_url)
        try:
            cell.activate()
            yield cell
        finally:
            cell.close()


def test_celery_broker_outage(own_durable_redis, tmp_path, uid, request):
    from celery import group

    from tests.queue_celery.app import count

    show_worker_logs(request, tmp_path)
    with celery_cell(own_durable_redis.url, "sqlite", tmp_path) as cell:
        cell.start_worker(concurrency=2)  # type: ignore[attr-defined]

        def publish(task_ids: list[str], is_group: bool) -> None:
            if is_group:
                group(count.si(uid, 1).set(task_id=t) for t in task_ids).apply_async()
            else:
                count.apply_async((uid, 1), task_id=task_ids[0])

        through_broker_outage(
            Stream(publish),
            own_durable_redis,
            (kombu.exceptions.OperationalError,),
            uid,
            reviver(
                lambda: [w.proc for w in cell.workers],  # type: ignore[attr-defined]
                lambda: cell.start_worker(concurrency=2),  # type: ignore[attr-defined]
            ),
            lambda: lost_in_delivery(own_durable_redis, cell.queue),  # type: ignore[attr-defined]
        )


def test_celery_store_outage(own_postgres, own_redis, tmp_path, uid):
    from tests.queue_celery.app import count

    with celery_cell(own_redis.url, "sqlite", tmp_path) as cell:
        taskstatus.configure(url=own_postgres.url)
        waiting = redis.Redis.from_url(own_redis.url)
        queue = cell.queue  # type: ignore[attr-defined]
        through_store_outage(
            own_postgres, lambda: count.delay(uid, 1).id, lambda: waiting.llen(queue)
        )


# -- Dramatiq ----------------------------------------------------------------------------------
@contextlib.contextmanager
def dramatiq_cell(broker_url: str, store: str, tmp: Path) -> Iterator[object]:
    from tests.queue_dramatiq.conftest import Cell, use_store

    with private_store(store, tmp) as url:
        use_store(url, tmp)
        cell = Cell("redis", url, tmp, broker_url=broker_url)
        try:
            cell.activate()
            yield cell
        finally:
            cell.close()


def dramatiq_waiting(broker_url: str, queue: str) -> Callable[[], int]:
    client = redis.Redis.from_url(broker_url)
    return lambda: client.hlen(f"dramatiq:{queue}.msgs")  # each message, by its id


def test_dramatiq_broker_outage(own_durable_redis, tmp_path, uid, request):
    import dramatiq
    from dramatiq.message import Message

    from tests.queue_dramatiq import actors

    show_worker_logs(request, tmp_path)
    with dramatiq_cell(own_durable_redis.url, "sqlite", tmp_path) as cell:
        cell.start_worker()  # type: ignore[attr-defined]

        def message(task_id: str) -> Message[object]:
            return actors.count.message(uid, 1).copy(message_id=task_id)

        def publish(task_ids: list[str], is_group: bool) -> None:
            if is_group:
                dramatiq.group(message(t) for t in task_ids).run()
            else:
                actors.count.broker.enqueue(message(task_ids[0]))

        through_broker_outage(
            Stream(publish),
            own_durable_redis,
            (redis.exceptions.ConnectionError,),
            uid,
            reviver(lambda: cell.workers, cell.start_worker),  # type: ignore[attr-defined]
        )


def test_dramatiq_store_outage(own_postgres, own_redis, tmp_path, uid):
    from tests.queue_dramatiq import actors

    with dramatiq_cell(own_redis.url, "sqlite", tmp_path) as cell:
        taskstatus.configure(url=own_postgres.url)
        through_store_outage(
            own_postgres,
            lambda: actors.count.send(uid, 1).message_id,
            dramatiq_waiting(own_redis.url, cell.queue),  # type: ignore[attr-defined]
        )


def test_dramatiq_many_during_a_store_outage_send_nothing(own_postgres, own_redis, tmp_path, uid):
    """A group, a pipeline and a batch of sends raise (NotRecorded, as send() does, from
    group.run() and pipeline.run()) and enqueue nothing; once the store is back, they work."""
    import dramatiq

    from taskstatus.queues.dramatiq import NotRecorded
    from tests.queue_dramatiq import actors

    def sends() -> None:
        with taskstatus.batch():
            for _ in range(5):
                actors.count.send(uid, 1)

    publishers: list[tuple[type[Exception], Callable[[], object]]] = [
        (NotRecorded, lambda: dramatiq.group(actors.count.message(uid, 1) for _ in range(5)).run()),
        (
            NotRecorded,
            lambda: dramatiq.pipeline(actors.count.message(uid, 1) for _ in range(5)).run(),
        ),
        (StoreUnavailable, sends),
    ]
    with dramatiq_cell(own_redis.url, "sqlite", tmp_path) as cell:
        taskstatus.configure(url=own_postgres.url)
        waiting = dramatiq_waiting(own_redis.url, cell.queue)  # type: ignore[attr-defined]
        own_postgres.stop()
        for error, publish in publishers:
            with pytest.raises(error):
                publish()
        assert waiting() == 0
        own_postgres.start()
        poll(_try(lambda: str(sends())), lambda done: done is not None, "a batch to work")
        for _, publish in publishers[:2]:
            publish()
        assert waiting() == 5 + 5 + 1
        assert len(taskstatus.statuses(user_id=uid, limit=None)) == 5 + 6 + 6


# -- RQ ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def rq_cell(redis_url: str, store: str, tmp: Path) -> Iterator[object]:
    from rq import Queue

    import taskstatus.queues.rq
    from tests.queue_rq.conftest import Cell

    taskstatus.queues.rq.install()
    with private_store(store, tmp) as url:
        tracker = taskstatus.configure(url=url, artifact_storage=str(tmp / "artifacts"))
        queue = Queue(f"ts-{uuid.uuid4().hex[:12]}", connection=redis.Redis.from_url(redis_url))
        cell = Cell(queue, url, tmp, redis_url=redis_url)
        try:
            yield cell
        finally:
            cell.close()
            tracker.close()


def test_rq_broker_outage(own_durable_redis, tmp_path, uid, request):
    from rq import Queue

    from tests.queue_rq import jobs

    show_worker_logs(request, tmp_path)
    with rq_cell(own_durable_redis.url, "sqlite", tmp_path) as cell:
        queue = cell.queue  # type: ignore[attr-defined]
        cell.start()  # type: ignore[attr-defined]

        def publish(task_ids: list[str], is_group: bool) -> None:
            if is_group:
                queue.enqueue_many(
                    [Queue.prepare_data(jobs.count, (uid, 1), job_id=t) for t in task_ids]
                )
            else:
                queue.enqueue(jobs.count, uid, 1, job_id=task_ids[0])

        through_broker_outage(
            Stream(publish),
            own_durable_redis,
            (redis.exceptions.ConnectionError,),
            uid,
            reviver(lambda: cell.procs, cell.start),  # type: ignore[attr-defined]
        )


def test_rq_store_outage(own_postgres, own_redis, tmp_path, uid):
    from tests.queue_rq import jobs

    with rq_cell(own_redis.url, "sqlite", tmp_path) as cell:
        queue = cell.queue  # type: ignore[attr-defined]
        taskstatus.configure(url=own_postgres.url)
        through_store_outage(
            own_postgres, lambda: queue.enqueue(jobs.count, uid, 1).id, lambda: queue.count
        )


def test_rq_many_during_a_store_outage_save_nothing(own_postgres, own_redis, tmp_path, uid):
    from tests.queue_rq import jobs

    with rq_cell(own_redis.url, "sqlite", tmp_path) as cell:
        queue = cell.queue  # type: ignore[attr-defined]
        taskstatus.configure(url=own_postgres.url)

        def enqueue_many() -> list[object]:
            return queue.enqueue_many([queue.prepare_data(jobs.count, (uid, 1))] * 5)

        def enqueues() -> None:
            with taskstatus.batch():
                for _ in range(5):
                    queue.enqueue(jobs.count, uid, 1)

        own_postgres.stop()
        for publish in (enqueue_many, enqueues):
            with pytest.raises(StoreUnavailable):
                publish()
        assert queue.count == 0
        own_postgres.start()
        poll(_try(lambda: str(enqueue_many())), lambda done: done is not None, "a publish to work")
        enqueues()
        assert queue.count == 10
        assert len(taskstatus.statuses(user_id=uid, limit=None)) == 10


# -- store outage, every queue -----------------------------------------------------------------
def through_store_outage(
    store: object, publish: Callable[[], str], waiting: Callable[[], int]
) -> None:
    """With the store down, ``publish()`` raises StoreUnavailable and sends nothing (the
    broker's queue stays empty); once it is back, a publish is recorded and sent."""
    store.stop()  # type: ignore[attr-defined]
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            publish()
    assert waiting() == 0
    store.start()  # type: ignore[attr-defined]
    task_id = poll(_try(publish), lambda task_id: task_id is not None, "a publish to work")
    status = find(task_id)  # type: ignore[arg-type]
    assert status is not None and status.state is State.PENDING
    assert waiting() == 1


def _try(publish: Callable[[], str]) -> Callable[[], str | None]:
    """``publish``, or None while the store still refuses (it has just started)."""

    def attempt() -> str | None:
        try:
            return publish()
        except StoreUnavailable:
            return None

    return attempt


# -- a chain the broker refuses ----------------------------------------------------------------
def test_celery_chain_refused_ends_with_its_steps(own_redis, tmp_path, uid):
    from celery import chain

    from tests.queue_celery.app import count

    with celery_cell(own_redis.url, "sqlite", tmp_path):
        own_redis.stop()
        with pytest.raises(kombu.exceptions.OperationalError):
            chain(count.si(uid, 1), count.si(uid, 2)).delay()
        own_redis.start()  # for the cell to clean up
        assert_refused_chain(uid, "celery.chain")


def test_celery_chain_step_a_worker_cannot_send_ends_the_chain(own_redis, tmp_path, uid):
    """The next step of a chain, recorded with the chain, is sent by the worker that ran the
    step before; if the broker refuses it then, that step and the chain end Failed."""
    from celery import chain

    from tests.queue_celery.app import count

    with celery_cell(own_redis.url, "sqlite", tmp_path):
        chain(count.si(uid, 1), count.si(uid, 2), count.si(uid, 3)).delay()  # no worker
        (root,) = taskstatus.statuses(user_id=uid, parent=None)
        first, second, third = root.children()
        own_redis.stop()
        with pytest.raises(kombu.exceptions.OperationalError):
            # As the worker sends it, once the first step has succeeded: with the rest of
            # the chain in its message.
            count.apply_async(
                (uid, 2),
                task_id=second.task_id,
                parent_id=first.task_id,
                chain=[dict(count.si(uid, 3).set(task_id=third.task_id))],
            )
        own_redis.start()
        second = taskstatus.get(second.uuid)
        assert (second.state, error_texts(second)) == (State.FAILED, [UNSENT])
        assert taskstatus.get(root.uuid).state is State.FAILED
        assert taskstatus.get(third.uuid).state is State.CANCELED  # never to be sent


def test_dramatiq_pipeline_refused_ends_with_its_steps(own_redis, tmp_path, uid):
    import dramatiq

    from tests.queue_dramatiq import actors

    with dramatiq_cell(own_redis.url, "sqlite", tmp_path) as cell:
        own_redis.stop()
        with pytest.raises(redis.exceptions.ConnectionError):
            dramatiq.pipeline([actors.count.message(uid, 1), actors.count.message(uid, 2)]).run()
        own_redis.start()  # for the cell to clean up
        assert_refused_chain(uid, "dramatiq.pipeline")
        assert dramatiq_waiting(own_redis.url, cell.queue)() == 0  # type: ignore[attr-defined]


def test_dramatiq_pipeline_step_a_worker_cannot_send_ends_the_pipeline(own_redis, tmp_path, uid):
    """As on Celery: the next step of a pipeline that the worker cannot send ends Failed."""
    import dramatiq
    from dramatiq.message import Message

    from tests.queue_dramatiq import actors

    with dramatiq_cell(own_redis.url, "sqlite", tmp_path):
        pipe = dramatiq.pipeline(actors.count.message(uid, n) for n in (1, 2, 3))
        pipe.run()  # no worker: the first step waits in Redis
        (root,) = taskstatus.statuses(user_id=uid, parent=None)
        _, second, third = root.children()
        own_redis.stop()
        with pytest.raises(redis.exceptions.ConnectionError):
            # As the worker sends it, once the first step has succeeded.
            actors.count.broker.enqueue(Message(**pipe.messages[0].options["pipe_target"]))
        own_redis.start()
        second = taskstatus.get(second.uuid)
        assert (second.state, error_texts(second)) == (State.FAILED, [UNSENT])
        assert taskstatus.get(root.uuid).state is State.FAILED
        assert taskstatus.get(third.uuid).state is State.CANCELED


def assert_refused_chain(uid: int, kind: str) -> None:
    """A two-step chain (1 and 2 steps) never sent: it and both steps are Failed, none is
    left Pending or canceled, and its counts are the sums over its steps."""
    (root,) = taskstatus.statuses(user_id=uid, parent=None)
    assert (root.task_class, root.state, error_texts(root)) == (kind, State.FAILED, [UNSENT])
    steps = root.children()
    assert [(s.state, error_texts(s)) for s in steps] == [(State.FAILED, [UNSENT])] * 2
    assert (root.completed_steps, root.total_steps) == (0, sum(s.total_steps for s in steps))
    assert root.total_steps == 3
