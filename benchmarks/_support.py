"""Shared pieces of the benchmark scripts: private databases, statement counting, tables.

Every benchmark run gets its own empty database: a temporary file for SQLite, a dedicated
schema for PostgreSQL and a dedicated database for MariaDB/MySQL, dropped at the end (also on
Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import taskstatus
from taskstatus import Settings, Tracker

PG_URL = os.environ.get("TASKSTATUS_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("TASKSTATUS_BENCH_MYSQL", "mysql://root@127.0.0.1:3306/test")
BACKENDS = ("sqlite", "postgresql", "mysql")
DEFAULT_BACKENDS = "sqlite,postgresql"


def backends_arg(text: str) -> list[str]:
    """``--backends sqlite,postgresql`` -> ["sqlite", "postgresql"]."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    names = ["postgresql" if name in ("pg", "postgres") else name for name in names]
    unknown = [name for name in names if name not in BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown backend(s) {', '.join(unknown) or '(none)'}; choose from {BACKENDS}"
        )
    return names


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backends",
        type=backends_arg,
        default=backends_arg(DEFAULT_BACKENDS),
        help=f"comma-separated, from {', '.join(BACKENDS)} (default: {DEFAULT_BACKENDS})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small smoke run (well under a minute)"
    )


def exit_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so that private databases are still dropped."""

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def run_main(main: Callable[[], None]) -> None:
    exit_on_sigterm()
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted: private databases were dropped", file=sys.stderr)
        sys.exit(130)


# -- private databases ---------------------------------------------------------------------------
def _admin_engine(url: str, driver: str) -> sa.Engine:
    return sa.create_engine(sa.engine.make_url(url).set(drivername=driver))


@contextmanager
def private_database(backend: str, folder: Path) -> Iterator[str]:
    """URL of a new, empty database of ``backend``; dropped when the block exits."""
    name = f"ts_bench_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'{name}.db'}"
        return
    if backend == "postgresql":
        admin = _admin_engine(PG_URL, "postgresql+psycopg")
        create, drop = f'CREATE SCHEMA "{name}"', f'DROP SCHEMA IF EXISTS "{name}" CASCADE'
        url = f"{PG_URL}?options=-csearch_path%3D{name}"
    else:
        admin = _admin_engine(MYSQL_URL, "mysql+pymysql")
        create = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
        drop = f"DROP DATABASE IF EXISTS `{name}`"
        url = str(sa.engine.make_url(MYSQL_URL).set(database=name))
    with admin.begin() as conn:
        conn.exec_driver_sql(create)
    try:
        yield url
    finally:
        try:
            with admin.begin() as conn:
                conn.exec_driver_sql(drop)
        except BaseException as exc:
            print(f"could not drop {backend} {name}: {exc!r}; drop it by hand", file=sys.stderr)
            raise
        finally:
            admin.dispose()


@contextmanager
def bench_tracker(backend: str, **settings: Any) -> Iterator[Tracker]:
    """An opened Tracker on a private database, artifacts in a temporary folder."""
    with (
        tempfile.TemporaryDirectory(prefix="taskstatus-bench-") as tmp,
        private_database(backend, Path(tmp)) as url,
    ):
        tracker = Tracker(
            Settings(url=url, artifact_storage=str(Path(tmp) / "artifacts"), **settings)
        )
        try:
            tracker.open()
            yield tracker
        finally:
            tracker.close()


# -- what reaches the database -------------------------------------------------------------------
@dataclass
class Counts:
    statements: int = 0
    commits: int = 0
    rollbacks: int = 0
    pings: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __sub__(self, other: Counts) -> Counts:
        return Counts(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @property
    def round_trips(self) -> int:
        """What a client/server database receives: statements, BEGIN + COMMIT/ROLLBACK of
        each transaction (none on autocommit connections), and the pool's pre-ping if on
        (checked against a libpq trace with psycopg)."""
        return self.statements + 2 * (self.commits + self.rollbacks) + self.pings


class StatementCounter:
    """Counts SQL statements (``before_cursor_execute``), transactions and pool pre-pings.

    The pre-ping (on every pool checkout when ``pool_pre_ping`` is on) runs on a raw DBAPI
    cursor, so SQLAlchemy's statement events do not see it; it is counted from the pool's
    checkout event instead.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.counts = Counts()
        self._pre_ping = bool(getattr(engine.pool, "_pre_ping", False))
        self._listeners: list[tuple[str, Callable[..., None]]] = [
            ("before_cursor_execute", self._statement),
            ("commit", self._commit),
            ("rollback", self._rollback),
            ("checkout", self._checkout),
        ]

    def _statement(self, *_args: Any) -> None:
        self.counts.statements += 1

    def _commit(self, conn: sa.Connection) -> None:
        if not _autocommit(conn):
            self.counts.commits += 1

    def _rollback(self, conn: sa.Connection) -> None:
        if not _autocommit(conn):
            self.counts.rollbacks += 1

    def _checkout(self, *_args: Any) -> None:
        if self._pre_ping:
            self.counts.pings += 1

    def snapshot(self) -> Counts:
        return Counts(*astuple(self.counts))

    def __enter__(self) -> StatementCounter:
        for name, listener in self._listeners:
            sa.event.listen(self.engine, name, listener)
        return self

    def __exit__(self, *_exc: object) -> None:
        for name, listener in self._listeners:
            sa.event.remove(self.engine, name, listener)


def _autocommit(conn: sa.Connection) -> bool:
    """An autocommit connection sends no BEGIN/COMMIT/ROLLBACK."""
    return bool(conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT")


def machine() -> str:
    """CPU count and load average: the numbers are only as steady as the machine."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.2f} (1 min) / {five:.2f} (5 min)"


def source_revision() -> str:
    """Which taskstatus was measured: its git commit, marked when the tree has local changes."""
    root = Path(taskstatus.__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return f"taskstatus {taskstatus.__version__}"
    return f"taskstatus {taskstatus.__version__} at {out.stdout.strip()}"


# -- output --------------------------------------------------------------------------------------
#: Minimum tracked/untracked worker throughput, from the queue adapter issues (none given for
#: MySQL/MariaDB).
OVERHEAD_TARGETS = {"sqlite": 0.9, "postgresql": 0.8}


def verdict(met: bool) -> str:
    return "meets target" if met else "MISSES target"


def overhead_rounds(
    label: str, backend: str, rounds: int, unit: str, run: Callable[[int], tuple[float, float]]
) -> tuple[list[str], bool]:
    """Run ``run(round) -> (untracked, tracked per second)`` ``rounds`` times, printing each
    round; return the table cells (untracked, tracked, median ratio, range, target, verdict)
    and whether the median ratio meets the target of ``backend``."""
    ratios, untracked, tracked = [], [], []
    for r in range(rounds):
        u, t = run(r)
        untracked.append(u)
        tracked.append(t)
        ratios.append(t / u)
        print(
            f"  {label} round {r + 1}/{rounds}: untracked {u:,.0f} {unit}/s, "
            f"tracked {t:,.0f} {unit}/s, ratio {t / u:.3f}",
            flush=True,
        )
    ratio = statistics.median(ratios)
    met = ratio >= OVERHEAD_TARGETS[backend]
    cells = [
        f"{statistics.median(untracked):,.0f}",
        f"{statistics.median(tracked):,.0f}",
        f"{ratio:.3f}",
        f"{min(ratios):.3f}..{max(ratios):.3f}",
        f">= {OVERHEAD_TARGETS[backend]}",
        verdict(met),
    ]
    return cells, met


#: The paired ratio (both kinds of task in one worker) every worker benchmark aims at (issue 15).
PAIRED_TARGET = 0.95


def paired_cells(pairs: Sequence[tuple[float, float]]) -> tuple[list[str], bool]:
    """Table cells of the (untracked, tracked per second) pairs measured in one worker, as
    :func:`overhead_rounds` gives them, and whether their median ratio meets
    :data:`PAIRED_TARGET`."""
    ratios = [t / u for u, t in pairs]
    ratio = statistics.median(ratios)
    met = ratio >= PAIRED_TARGET
    cells = [
        f"{statistics.median(u for u, _ in pairs):,.0f}",
        f"{statistics.median(t for _, t in pairs):,.0f}",
        f"{ratio:.3f}",
        f"{min(ratios):.3f}..{max(ratios):.3f}",
        f">= {PAIRED_TARGET}",
        verdict(met),
    ]
    return cells, met


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of unsorted ``values``."""
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def server_version(engine: sa.Engine) -> str:
    """The database server's name and version, for the report header."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return "SQLite " + str(conn.exec_driver_sql("select sqlite_version()").scalar())
        return str(conn.exec_driver_sql("select version()").scalar()).split(" on ")[0][:60]


# -- plugins on (``--plugin``) -------------------------------------------------------------------
#: Plugins a worker benchmark can measure with, installed in the publishing process and in the
#: workers: the ratio is printed without and with each.
PLUGINS = ("prometheus",)
#: Tells a benchmark's worker which plugin to install (read by :func:`install_worker_plugin`).
PLUGIN_ENV = "TS_BENCH_PLUGIN"


def add_plugin_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plugin",
        choices=PLUGINS,
        help="measure again with this plugin on (publisher and worker): ratios without and with",
    )


def plugin_passes(plugin: str | None) -> list[str | None]:
    """The passes of a run: without plugins, then with ``plugin`` if one was asked for."""
    return [None, plugin] if plugin else [None]


def plugin_label(backend: str, plugin: str | None) -> str:
    return f"{backend} + {plugin}" if plugin else backend


def install_plugin(plugin: str | None) -> None:
    """From now on (the last pass), ``plugin`` counts in this process and in every worker that
    a benchmark starts."""
    if plugin is None:
        return
    from taskstatus.observability import prometheus

    os.environ[PLUGIN_ENV] = plugin
    prometheus.install()


def install_worker_plugin(*, sequential_children: bool = False) -> None:
    """In a benchmark's worker: install the plugin the benchmark asked for (in multiprocess
    mode when the benchmark set ``PROMETHEUS_MULTIPROC_DIR``, where the worker forks)."""
    if os.environ.get(PLUGIN_ENV) == "prometheus":
        from taskstatus.observability import prometheus

        prometheus.install(sequential_children=sequential_children)
