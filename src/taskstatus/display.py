"""How states look in a terminal (CLI tables, the demo's progress bars)."""

from __future__ import annotations

from .models import State

__all__ = ["STATE_STYLES"]

#: rich style per state.
STATE_STYLES = {
    State.PENDING: "yellow",
    State.IN_PROGRESS: "cyan",
    State.RETRYING: "bright_yellow",
    State.SUCCEEDED: "green",
    State.FAILED: "bold red",
    State.CANCELED: "magenta",
}
