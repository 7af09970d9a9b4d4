"""The tracking RQ workers, counting tasks for Prometheus when the test asks for it
(TS_METRICS_PORT: see tests.observability.switch), set up as docs/observability.md shows:
``rq worker -w`` imports this module in the worker's main process, which installs the plugin
and serves ``/metrics`` before any work horse forks."""

from __future__ import annotations

from taskstatus.queues.rq import SimpleWorker, Worker
from tests.observability.switch import install_from_env

__all__ = ["SimpleWorker", "Worker"]

port = install_from_env(sequential_children=True)
if port is not None:
    from taskstatus.observability import prometheus

    prometheus.start_http_server(port, addr="127.0.0.1")
