"""Stand-ins for the application code that the documentation's examples leave to the reader.

The examples call functions such as ``render(issue)`` or ``save(batch)`` that stand for your own
work, and say so in a comment. The docs tests (``tests/docs_harness.py``) put every public name
of this module into the namespace of each page, so those examples run as printed. Each stand-in
does the least that lets its example go on.
"""

from __future__ import annotations

from collections.abc import Iterator

from celery import Celery

#: "Your Celery app", for the examples that decorate a task with ``@app.task`` without creating
#: the app first. An in-memory broker: these examples define tasks, they do not send them.
app = Celery("docs_examples", broker="memory://", backend="cache+memory://", set_as_current=False)

#: The exported file of the README's example.
csv_bytes = b"course,item\ncourse-v1:demo,intro\n"


def render(issue: object) -> str:
    return f"Newsletter {issue}"


def send(address: str, body: str) -> None:
    pass


def fetch_bounces() -> list[str]:
    return ["bounce@example.com"]


def handle(bounce: str) -> None:
    pass


def count_rows(path: str) -> int:
    return 3


def read_rows(path: str) -> Iterator[dict[str, str]]:
    for n in range(count_rows(path)):
        yield {"row": str(n)}


def save(batch: list[dict[str, str]]) -> None:
    pass


def rollback_partial_import(path: str) -> None:
    pass


def rebuild_search_index() -> None:
    pass


def export_section(section: str) -> str:
    return f"{section}\n"


def send_notification(user_id: str | None, name: str, state: str) -> None:
    pass
