"""The switch the test workers read (light: it imports prometheus_client only when on).

A test worker started with TS_METRICS_PORT installs the Prometheus plugin, and serves
``/metrics`` on that port (on loopback); with PROMETHEUS_MULTIPROC_DIR set too, in
prometheus_client's multiprocess mode, where the pool forks.
"""

from __future__ import annotations

import os

#: The environment variable of the switch: the port the worker serves its metrics on.
PORT = "TS_METRICS_PORT"


def install_from_env(*, sequential_children: bool = False) -> int | None:
    """Install the plugin when the switch is on; the port to serve on, or None."""
    port = os.environ.get(PORT)
    if not port:
        return None
    from taskstatus.observability import prometheus

    prometheus.install(sequential_children=sequential_children)
    return int(port)
