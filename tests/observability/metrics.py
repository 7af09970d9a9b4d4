"""Scraping and reading Prometheus metrics in tests, and the switch the test workers read.

A test worker started with TS_METRICS_PORT installs the Prometheus plugin, and its main
process serves ``/metrics`` on that port (on loopback); with PROMETHEUS_MULTIPROC_DIR set too,
in prometheus_client's multiprocess mode, where the pool forks.
"""

from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

#: The environment variable of the switch: the port the worker serves its metrics on.
PORT = "TS_METRICS_PORT"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def install_from_env(*, sequential_children: bool = False) -> int | None:
    """Install the plugin when the switch is on; the port to serve on, or None."""
    port = os.environ.get(PORT)
    if not port:
        return None
    from taskstatus.observability import prometheus

    prometheus.install(sequential_children=sequential_children)
    return int(port)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_env(port: int, multiproc_dir: Path | None) -> dict[str, str]:
    """The environment that turns the switch on (multiprocess mode with a directory)."""
    env = {PORT: str(port)}
    if multiproc_dir is not None:
        multiproc_dir.mkdir(parents=True, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
    return env


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels, read by prometheus_client's own
    parser."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(port: int, headers: Mapping[str, str] | None = None) -> Samples:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return parse(response.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


def counts(samples: Samples, name: str, label: str = "task") -> dict[str, float]:
    """The non-zero values of ``name`` by one label, summed over the others."""
    found: dict[str, float] = {}
    for (n, labels), v in samples.items():
        if n == name and v:
            key = dict(labels).get(label, "")
            found[key] = found.get(key, 0) + v
    return found
