"""Without opentelemetry-api, importing the tracing plugin says which extra installs it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Run in a fresh interpreter: hides every ``opentelemetry`` module, as if not installed.
WITHOUT_OPENTELEMETRY = textwrap.dedent(
    """
    import sys

    class NoOpenTelemetry:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoOpenTelemetry())
    try:
        import taskstatus.observability.otel
    except ImportError as exc:
        print(type(exc).__name__, exc.name, exc, sep="|")
    else:
        print("imported")
    """
)


def test_missing_opentelemetry_names_the_extra():
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
        ),
    }
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_OPENTELEMETRY],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    kind, name, message = done.stdout.strip().split("|")
    assert (kind, name) == ("ModuleNotFoundError", "opentelemetry")
    assert "opentelemetry-api" in message
    assert "pip install 'taskstatus[otel]'" in message


def test_the_plugin_imports_with_opentelemetry_api():
    """The same script without the blocker imports it: the test above fails for the right
    reason only."""
    script = WITHOUT_OPENTELEMETRY.replace("sys.meta_path.insert(0, NoOpenTelemetry())", "")
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "imported"
