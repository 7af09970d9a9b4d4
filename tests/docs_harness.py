"""The code blocks of README.md and docs/*.md, run as tests so that the documentation cannot drift.

The root ``conftest.py`` loads this plugin; ``python -m pytest -n 2 docs README.md`` runs only
these tests. Every fenced block is one test item, named after its page and the line of its
opening fence (``docs/storage.md::231``):

- ``python`` blocks of a page run in order in one namespace per page, so a block may use what an
  earlier block of its page defined. A block whose first line names a file (``# proj/tasks.py``)
  becomes that module: it is written to the page's scratch directory (on ``sys.path``) and
  imported; ``# proj/tasks.py, continued`` runs in that module. A ``test_*`` function that a
  block defines is called.
- ``console``, ``bash``, ``sh`` and ``shell`` blocks run in bash in the page's scratch
  directory, which is also the working directory of its Python blocks (so the default
  ``sqlite:///taskstatus.db`` is a scratch store). In a block with ``$`` prompts only the
  prompted commands run; each must exit 0, or 1 when the output shown below it starts with
  ``Error:``; a ``[y/N]: y`` shown below it is answered on stdin.
- ``json`` and ``toml`` blocks are parsed.
- The names that examples leave to the reader (``render``, ``save``...) come from
  ``tests/docs_helpers.py``; the docs' example servers are replaced by the test servers
  (``EXAMPLE_URLS``).

An HTML comment on the line(s) right above a fence changes that:

- ``<!-- illustrative: REASON -->``: the block is not run. A block that is neither run nor marked
  illustrative with a reason fails.
- ``<!-- known-defect: REASON -->``: the block runs and is expected to fail (xfail), until the
  defect is fixed and the comment removed.
- ``<!-- test-setup: STEP -->``: the harness runs ``STEP`` (see ``SETUP_STEPS``) before the
  block, for example to start an in-process worker for the page's app.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("TASKSTATUS_TEST_REDIS", "redis://127.0.0.1:6379")

_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
_MARK = re.compile(r"^\s*<!--\s*(?P<kind>[\w-]+):\s*(?P<reason>.*?)\s*-->\s*$")
_MODULE_HEADER = re.compile(r"^#\s*(?P<path>[\w/]+\.py)(?P<continued>,\s*continued)?\s*$")
_MARKS = ("illustrative", "known-defect", "test-setup")
_SHELLS = ("console", "bash", "sh", "shell")
#: A ``taskstatus`` command line without anything for a shell to interpret.
_PLAIN_CLI = re.compile(r"^taskstatus(\s+[^|&;<>()$`\\*?]+)?$")

#: The servers and places the docs' examples name, and what the tests use instead: a private
#: PostgreSQL schema per page, a Redis database of the docs tests, scratch files.
EXAMPLE_URLS = {
    "postgresql+psycopg://app@db/app": "postgres",
    "postgresql://app:secret@localhost/app": "postgres",
    "postgresql://app:secret@db.internal/app": "postgres",
    "postgresql://app@db.internal/app": "postgres",
    "postgresql://app@archive-db/app": "postgres",
    "postgresql://app@db/app": "postgres",
    "postgresql://ops@db/app": "postgres",
    "redis://localhost:6379/0": "redis",
    "redis://localhost:6379/1": "redis",
    "sqlite:////tmp/demo.db": "sqlite:///demo.db",
    "/srv/app/media": "media",
    "s3://bucket/taskstatus": "artifacts",
    "s3://acme-exports/taskstatus": "artifacts",
}


class DocsError(Exception):
    """A block that did not do what the page says, reported without the harness's traceback."""


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    source: str
    marks: dict[str, str] = field(default_factory=dict)


def parse_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown page, with the marker comments right above each."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        start, indent = i, len(fence["indent"])
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:] if not lines[i][:indent].strip() else lines[i])
            i += 1
        marks, above = {}, start - 1
        while above >= 0 and (mark := _MARK.match(lines[above])):
            marks[mark["kind"]] = mark["reason"]
            above -= 1
        blocks.append(Block(start + 1, fence["lang"], "\n".join(body) + "\n", marks))
        i += 1
    return blocks


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".md" and (
        file_path == ROOT / "README.md" or file_path.parent == ROOT / "docs"
    ):
        return DocPage.from_parent(parent, path=file_path)
    return None


class DocPage(pytest.File):
    """One Markdown page: its blocks, and the scratch state they share while they run."""

    run: PageRun | None = None
    blocks: list[Block]

    def collect(self) -> Iterator[DocBlock]:
        self.blocks = parse_blocks(self.path.read_text())
        for index, block in enumerate(self.blocks):
            if not block.marks.get("illustrative"):
                yield DocBlock.from_parent(self, name=str(block.line), block=block, index=index)

    def setup(self) -> None:
        self.run = PageRun(self.path)

    def teardown(self) -> None:
        if self.run is not None:
            self.run.close()
            self.run = None


class DocBlock(pytest.Item):
    def __init__(self, *, block: Block, index: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.block, self.index = block, index
        # Celery's Redis result backend calls a method that redis-py deprecated.
        self.add_marker(pytest.mark.filterwarnings("ignore:Call to deprecated setex"))
        if "known-defect" in block.marks:
            self.add_marker(pytest.mark.xfail(reason=block.marks["known-defect"], strict=False))

    def runtest(self) -> None:
        page = self.parent
        assert isinstance(page, DocPage) and page.run is not None
        problem = _problem(self.block)
        if problem:
            raise DocsError(problem)
        # Blocks build on the ones above them: run those first if this process has not (xdist
        # may hand the blocks of one page to different workers). Their failures are their own
        # items' to report.
        for index, earlier in enumerate(page.blocks[: self.index]):
            if index not in page.run.done and not _problem(earlier):
                page.run.done.add(index)
                with contextlib.suppress(Exception):
                    page.run.execute(earlier)
        page.run.done.add(self.index)
        page.run.execute(self.block)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.block.line - 1, _where(self.path, self.block)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, DocsError):
            return f"{_where(self.path, self.block)}: {excinfo.value}"
        return super().repr_failure(excinfo, style="short")


def _where(path: Path, block: Block) -> str:
    return f"{path.relative_to(ROOT)}:{block.line}"


def _problem(block: Block) -> str | None:
    unknown = set(block.marks) - set(_MARKS)
    if unknown:
        return f"unknown marker(s) {sorted(unknown)}; known: {', '.join(_MARKS)}"
    if "illustrative" in block.marks:
        return "an illustrative block needs a reason: <!-- illustrative: why it cannot run -->"
    if block.lang not in ("python", "json", "toml", *_SHELLS):
        return (
            f"a {block.lang or 'plain'} block cannot run: mark it "
            "<!-- illustrative: REASON --> on the line above the fence"
        )
    step = block.marks.get("test-setup")
    if step is not None and step not in SETUP_STEPS:
        return f"unknown test-setup step {step!r}; known: {', '.join(SETUP_STEPS)}"
    return None


class PageRun:
    """The scratch state of one page while its blocks run: directory, namespace, servers."""

    def __init__(self, page: Path) -> None:
        import celery._state
        import dramatiq.broker

        import taskstatus
        from tests import docs_helpers

        self.page = page
        self.dir = Path(tempfile.mkdtemp(prefix="taskstatus-docs-"))
        self.namespace: dict[str, Any] = {
            # The module name of the page's functions and tasks, distinct for each page.
            "__name__": "docs_" + re.sub(r"\W", "_", page.stem),
            **{k: v for k, v in vars(docs_helpers).items() if not k.startswith("_")},
        }
        self.done: set[int] = set()
        self.cleanups: list[Callable[[], object]] = []  # workers and the like
        self._servers: list[Callable[[], object]] = []  # the private databases, dropped last
        self._urls: dict[str, str] = {}
        # What the page's blocks may replace (the default tracker, Dramatiq's global broker,
        # Celery's current app), put back when the page ends.
        self._tracker = taskstatus.set_tracker(None)
        self._broker = dramatiq.broker.global_broker
        self._celery_app = celery._state._tls.current_app
        self._environ = dict(os.environ)
        self._cwd = os.getcwd()
        self._sys_path = list(sys.path)
        for name in [n for n in os.environ if n.startswith("TASKSTATUS_")]:
            del os.environ[name]
        os.chdir(self.dir)
        sys.path.insert(0, str(self.dir))

    # -- running blocks ----------------------------------------------------------------------------
    def execute(self, block: Block) -> None:
        step = block.marks.get("test-setup")
        if step is not None:
            SETUP_STEPS[step](self)
        source = self.localize(block.source)
        if block.lang == "python":
            self._python(block, source)
        elif block.lang in _SHELLS:
            self._shell(source)
        elif block.lang == "json":
            json.loads(source)
        else:
            tomllib = pytest.importorskip("tomllib")
            tomllib.loads(source)

    def _compile(self, block: Block, source: str) -> Any:
        # Padded so that tracebacks name the page's own lines.
        return compile("\n" * block.line + source, str(self.page), "exec")

    def _python(self, block: Block, source: str) -> None:
        header = _MODULE_HEADER.match(source.split("\n", 1)[0])
        if header is not None:
            self._module(block, source, header["path"], bool(header["continued"]))
            return
        tests_before = {k: v for k, v in self.namespace.items() if k.startswith("test_")}
        exec(self._compile(block, source), self.namespace)
        for name, obj in list(self.namespace.items()):
            if name.startswith("test_") and callable(obj) and tests_before.get(name) is not obj:
                obj()

    def _module(self, block: Block, source: str, path: str, continued: bool) -> None:
        """The block is the file ``path``: write it and import it (or run it in its module)."""
        name = path[: -len(".py")].replace("/", ".")
        file = self.dir / path
        if continued:
            with file.open("a") as f:
                f.write("\n" + source)
            exec(self._compile(block, source), vars(sys.modules[name]))
            return
        for package in reversed(Path(path).parents[:-1]):
            (self.dir / package).mkdir(exist_ok=True)
            (self.dir / package / "__init__.py").touch()
        file.write_text(source)
        importlib.invalidate_caches()
        parent, _, leaf = name.rpartition(".")
        spec = importlib.util.spec_from_file_location(name, file)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        if parent:
            setattr(importlib.import_module(parent), leaf, module)
        exec(self._compile(block, source), vars(module))

    def _shell(self, source: str) -> None:
        lines = source.splitlines()
        if not any(line.startswith("$ ") for line in lines):
            self._bash(source, expected=0, answer=None)
            return
        prompts = [i for i, line in enumerate(lines) if line.startswith("$ ")]
        for n, i in enumerate(prompts):
            shown = lines[i + 1 : prompts[n + 1] if n + 1 < len(prompts) else len(lines)]
            expected = 1 if shown and shown[0].startswith("Error:") else 0
            answer = next((m[1] for s in shown if (m := re.search(r"\[y/N\]: (\w+)", s))), None)
            self._command(lines[i][2:], expected=expected, answer=answer)

    def _command(self, command: str, *, expected: int, answer: str | None) -> None:
        """A plain ``taskstatus ...`` runs in this process (no interpreter start-up); the rest
        in bash."""
        if not _PLAIN_CLI.match(command):
            self._bash(command, expected=expected, answer=answer)
            return
        from click.testing import CliRunner

        from taskstatus.cli import cli

        args = shlex.split(command)[1:]
        result = CliRunner().invoke(
            cli, args, input=answer and f"{answer}\n", prog_name="taskstatus"
        )
        if result.exit_code != expected:
            raise DocsError(
                f"`{command}` exited with {result.exit_code}, the page shows {expected}\n"
                f"{result.output}{result.exception!r}"
            )

    def _bash(self, script: str, *, expected: int, answer: str | None) -> None:
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        env = dict(os.environ, PATH=path)  # the `taskstatus` of this environment
        # A session of its own, so that nothing a block starts outlives it.
        with subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=self.dir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        ) as done:
            try:
                stdout, stderr = done.communicate(f"{answer}\n" if answer else "", timeout=60)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(done.pid, signal.SIGKILL)
        if done.returncode != expected:
            raise DocsError(
                f"`{script.strip()}` exited with {done.returncode}, the page shows {expected}\n"
                f"--- stdout\n{stdout}--- stderr\n{stderr}"
            )

    # -- servers -----------------------------------------------------------------------------------
    def localize(self, source: str) -> str:
        """``source`` with the docs' example servers replaced by the test servers."""
        for example in sorted(EXAMPLE_URLS, key=len, reverse=True):
            if example in source:
                url = self._url(EXAMPLE_URLS[example])
                if example.startswith("postgresql+psycopg:"):
                    url = url.replace("postgresql:", "postgresql+psycopg:", 1)
                source = source.replace(example, url)
        return source

    def _url(self, kind: str) -> str:
        if kind not in self._urls:
            if kind == "postgres":
                from tests.conftest import _private_postgres

                schema = _private_postgres()
                self._urls[kind] = next(schema)
                self._servers.append(lambda: list(schema))
            elif kind == "redis":
                from tests.conftest import require_server

                require_server("Redis", REDIS_URL)
                self._urls[kind] = f"{REDIS_URL}/{docs_redis_db()}"
            else:
                self._urls[kind] = kind
        return self._urls[kind]

    def close(self) -> None:
        import celery._state
        import dramatiq.broker

        import taskstatus

        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        tracker = taskstatus.set_tracker(self._tracker)
        if tracker is not None:
            tracker.close()  # writes what a worker still had queued
        for cleanup in self._servers:
            cleanup()
        dramatiq.broker.global_broker = self._broker
        celery._state._tls.current_app = self._celery_app
        os.chdir(self._cwd)
        os.environ.clear()
        os.environ.update(self._environ)
        sys.path[:] = self._sys_path
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", None) or "").startswith(str(self.dir)):
                del sys.modules[name]
        shutil.rmtree(self.dir, ignore_errors=True)


def docs_redis_db() -> int:
    """A Redis database of the docs tests' own (5..10), one per xdist worker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return 5 + int(worker[2:] or 0) % 6


# -- set-up steps (<!-- test-setup: STEP -->) ------------------------------------------------------
SETUP_STEPS: dict[str, Callable[[PageRun], None]] = {}


def setup_step(func: Callable[[PageRun], None]) -> Callable[[PageRun], None]:
    SETUP_STEPS[func.__name__.replace("_", "-")] = func
    return func


@setup_step
def celery_worker(run: PageRun) -> None:
    """An in-process worker (a thread pool) for the page's ``proj.celery_app.app``."""
    from celery.contrib.testing.worker import start_worker

    worker = start_worker(
        sys.modules["proj.celery_app"].app, pool="threads", concurrency=4, perform_ping_check=False
    )
    controller = worker.__enter__()

    def stop() -> None:
        controller.stop()  # a warm shutdown: the tasks running finish, and write their outcome
        worker.__exit__(None, None, None)

    run.cleanups.append(_forget_queues)
    run.cleanups.append(stop)


@setup_step
def dramatiq_worker(run: PageRun) -> None:
    """An in-process Dramatiq worker for the page's ``proj.broker.broker``."""
    import dramatiq

    broker = sys.modules["proj.broker"].broker
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    run.cleanups.append(_forget_queues)
    run.cleanups.append(broker.close)
    run.cleanups.append(worker.stop)


@setup_step
def stop_workers(run: PageRun) -> None:
    """Stops the workers that earlier steps started (before a block that runs tasks eagerly)."""
    while run.cleanups:
        run.cleanups.pop()()


def _forget_queues() -> None:
    """Deletes what the queues of a page left in the docs tests' Redis database."""
    import redis

    client = redis.Redis.from_url(f"{REDIS_URL}/{docs_redis_db()}")
    keys = [k for k in client.keys("*") if k.startswith(_QUEUE_KEYS)]
    if keys:
        client.delete(*keys)
    client.close()


#: The Redis keys of Celery (queue ``celery``, bindings, results), Dramatiq and RQ.
_QUEUE_KEYS = (b"celery", b"_kombu.", b"unacked", b"dramatiq:", b"rq:")


@setup_step
def rq_burst(run: PageRun) -> None:
    """Runs the jobs queued on the page's ``proj.queues.queue`` with a SimpleWorker, in burst."""
    from taskstatus.queues.rq import SimpleWorker

    queue = sys.modules["proj.queues"].queue
    run.cleanups.append(_forget_queues)
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


@setup_step
def running_task(run: PageRun) -> None:
    """``status``: the live handle of a started task, for snippets that run inside a task."""
    import taskstatus
    from taskstatus import TaskEvent
    from taskstatus.tracking import activate, deactivate

    for name, content in (("report.pdf", b"%PDF-1.4\n"), ("big.zip", b"PK\x05\x06" + bytes(18))):
        (run.dir / name).write_bytes(content)
    tracker = taskstatus.get_tracker()
    event = TaskEvent(task_id=f"docs-{uuid.uuid4().hex}", name="Docs example", user_id="7")
    tracker.lifecycle.publish(event)
    live = tracker.lifecycle.start(event)
    token = activate(live)
    run.namespace["status"] = live

    def end() -> None:
        tracker.lifecycle.end(live)
        deactivate(token)

    run.cleanups.append(end)


#: The statuses that docs/cli.md shows, for its commands to act on: uuid, name, state, steps done
#: and total; the first two are the steps of the third, a ``taskstatus.group``.
CLI_SAMPLE = (
    ("9bf3818f-cd62-4310-92c0-2ccbf182cf85", "Import users.csv", "Failed", 0, 1),
    ("8e28cb7c-a289-425f-ba28-03f1764aab1a", "Import grades.csv", "Succeeded", 1, 1),
    ("f6f3c4c7-976b-4b9b-ab53-9ad6bd410712", "Nightly import", "Failed", 0, 0),
    ("9e9737fd-bc55-4887-9a53-786dd4a3b2c3", "Export course-v1:demo", "In Progress", 45, 120),
)


@setup_step
def cli_sample(run: PageRun) -> None:
    """The statuses of docs/cli.md's sample output, in the scratch directory's default store."""
    from taskstatus import Artifact, NotFound, Settings, State, TaskStatus, Tracker

    created = datetime.now(timezone.utc) - timedelta(days=1)  # younger than the page's purges
    group = uuid.UUID(CLI_SAMPLE[2][0])
    tracker = Tracker(Settings(url="sqlite:///taskstatus.db")).open()
    try:
        with contextlib.suppress(NotFound):  # left by an earlier block
            tracker.delete(group)
        with contextlib.suppress(NotFound):
            tracker.delete(CLI_SAMPLE[3][0])
        rows = (CLI_SAMPLE[2], *CLI_SAMPLE[:2], CLI_SAMPLE[3])  # the group before its steps
        for n, (id_, name, state, done, total) in enumerate(rows):
            is_group = id_ == CLI_SAMPLE[2][0]
            tracker.store.insert(
                TaskStatus(
                    uuid=uuid.UUID(id_),
                    task_id=f"sample-{n}",
                    queue="taskstatus" if is_group else "celery",
                    task_class="taskstatus.group" if is_group else "app.tasks.sample",
                    name=name,
                    user_id="7" if name.startswith("Export") else "3",
                    parent_uuid=group if name.startswith("Import") else None,
                    is_container=is_group,
                    state=State(state),
                    completed_steps=done,
                    total_steps=total,
                    created=created,
                    modified=created,
                    started_at=created,
                    finished_at=None if state == "In Progress" else created,
                    traceback="OSError: disk full" if state == "Failed" else None,
                )
            )
        tracker.store.add_artifact(
            Artifact(
                uuid=uuid.uuid4(),
                status_uuid=uuid.UUID(CLI_SAMPLE[0][0]),
                name="Error",
                text="OSError: disk full",
                created=created,
                modified=created,
            )
        )
    finally:
        tracker.close()


@setup_step
def django_user_tasks_rows(run: PageRun) -> None:
    """The two tables of django-user-tasks, with a few rows and a file, in the page's PostgreSQL
    schema (the Django database of docs/migrating-from-django-user-tasks.md)."""
    import sqlalchemy as sa

    url = sa.engine.make_url(run.localize("postgresql+psycopg://app@db/app"))
    media = run.dir / "media" / "user_tasks" / "2026" / "11" / "24"
    media.mkdir(parents=True)
    (media / "users.csv").write_bytes(b"id,name\n1,Ada\n")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in _DJANGO_TABLES:
            conn.exec_driver_sql(statement)
    engine.dispose()


_DJANGO_TABLES = (
    """CREATE TABLE user_tasks_usertaskstatus (
        id serial PRIMARY KEY, uuid uuid NOT NULL UNIQUE, user_id integer NOT NULL,
        task_id varchar(128) NOT NULL UNIQUE, is_container boolean NOT NULL,
        task_class varchar(128) NOT NULL, name varchar(255) NOT NULL, state varchar(128) NOT NULL,
        completed_steps smallint NOT NULL, total_steps smallint NOT NULL,
        attempts smallint NOT NULL, parent_id integer REFERENCES user_tasks_usertaskstatus,
        created timestamptz NOT NULL, modified timestamptz NOT NULL)""",
    """CREATE TABLE user_tasks_usertaskartifact (
        id serial PRIMARY KEY, uuid uuid NOT NULL UNIQUE,
        status_id integer NOT NULL REFERENCES user_tasks_usertaskstatus,
        name varchar(255) NOT NULL, file varchar(100) NOT NULL, url varchar(200) NOT NULL,
        text text NOT NULL, created timestamptz NOT NULL, modified timestamptz NOT NULL)""",
    """INSERT INTO user_tasks_usertaskstatus VALUES
        (1, gen_random_uuid(), 3, 'c-1', true, 'celery.chain', 'Nightly import', 'Failed',
         1, 2, 1, NULL, now() - interval '1 day', now()),
        (2, gen_random_uuid(), 3, 'c-2', false, 'app.tasks.import_file', 'Import users.csv',
         'Succeeded', 1, 1, 1, 1, now() - interval '1 day', now()),
        (3, gen_random_uuid(), 3, 'c-3', false, 'app.tasks.import_file', 'Import grades.csv',
         'Failed', 0, 1, 2, 1, now() - interval '1 day', now()),
        (4, gen_random_uuid(), 7, 'c-4', false, 'app.tasks.newsletter', 'Newsletter 42',
         'Sending emails', 120, 400, 1, NULL, now(), now())""",
    """INSERT INTO user_tasks_usertaskartifact VALUES
        (1, gen_random_uuid(), 2, 'Output', 'user_tasks/2026/11/24/users.csv', '', '', now(),
         now()),
        (2, gen_random_uuid(), 3, 'Error', '', '', 'ValueError: grade A+ is not a number', now(),
         now()),
        (3, gen_random_uuid(), 4, 'Dashboard', '', 'https://bi.example.com/r/42', '', now(),
         now())""",
)
