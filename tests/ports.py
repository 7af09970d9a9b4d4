"""TCP ports for servers that tests start in other processes (metrics servers, private
Redis and PostgreSQL, ``taskstatus serve``).

Asking the kernel for a free port (binding to port 0) and closing the socket hands back an
ephemeral port, one the kernel may give the next outgoing connection before the server
binds it — and this suite opens thousands of connections to the shared services. So ports
come from below the ephemeral range instead, a block for each xdist worker, each one tried
with a bind before it is handed out.
"""

from __future__ import annotations

import itertools
import os
import socket

#: The first port handed out; below Linux's ephemeral range (32768-60999) and the ports of
#: the shared services (RabbitMQ's distribution port 25672 included).
BASE = 20000
#: Ports for each xdist worker.
BLOCK = 500


def _worker_index() -> int:
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name.removeprefix("gw") or 0)


_next = itertools.count()


def free_port() -> int:
    """A loopback port no other process of this test run is given, and free right now."""
    first = BASE + _worker_index() * BLOCK
    for _ in range(BLOCK):
        port = first + next(_next) % BLOCK
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{first + BLOCK - 1}")
