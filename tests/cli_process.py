"""The ``taskstatus`` command run in a process of its own, as a user runs it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

#: The command installed beside this Python.
TASKSTATUS = Path(sys.executable).with_name("taskstatus")


@contextlib.contextmanager
def taskstatus_process(
    *args: str, env: Mapping[str, str] | None = None, stdout: int = subprocess.PIPE
) -> Iterator[subprocess.Popen[bytes]]:
    """``taskstatus *args``, configured by ``env`` only (none of this process's
    ``TASKSTATUS_*`` settings), output and errors together on ``stdout``; killed at the end of
    the block if it still runs."""
    own = {k: v for k, v in os.environ.items() if not k.startswith("TASKSTATUS_")}
    proc = subprocess.Popen(
        [str(TASKSTATUS), *args],
        env={**own, **(env or {})},
        stdout=stdout,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
