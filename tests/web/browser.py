"""Debian's Chromium driven by Playwright, for the dashboard's browser tests.

Nothing is downloaded at run time: the browser is the system's (``apt-get install chromium``),
launched by path. Without it the tests fail under CI and are skipped loudly elsewhere, as the
tests of an unreachable server are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable
from tests.waiting import TIMEOUT

CHROMIUM = Path(os.environ.get("TASKSTATUS_TEST_CHROMIUM", "/usr/bin/chromium"))
#: axe-core, vendored (see vendor/README.md).
AXE = Path(__file__).with_name("vendor") / "axe.min.js"


def require_chromium() -> None:
    """Fail (CI) or skip loudly (elsewhere) without the browser or Playwright."""
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright package is missing (pip install -e '.[dev]')"
    if reason is not None:
        unavailable(f"a browser: {reason}; install it to run the browser tests")


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def expect(browser: Any) -> Any:
    """Playwright's ``expect``, waiting at most TIMEOUT for what it expects."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT * 1000)
    return expect


@pytest.fixture
def screenshots(
    request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Path:
    """The folder a test's screenshots go to (below ``$TASKSTATUS_SCREENSHOTS`` when set),
    named in the test's output."""
    chosen = os.environ.get("TASKSTATUS_SCREENSHOTS")
    folder = Path(chosen) / request.node.name if chosen else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    with capsys.disabled():
        print(f"\nscreenshots of {request.node.nodeid}: {folder}")
    return folder


class Visitor:
    """A user in a browser context of their own (``X-User`` sent with every request, as
    the tests' authenticator reads it), whose page records every dialog and script error;
    a context manager that closes the context."""

    def __init__(
        self, browser: Any, base_url: str, user: str | None, shots: Path, **options: Any
    ) -> None:
        """``options``: for the browser context (``color_scheme``, ``viewport``...)."""
        headers = {} if user is None else {"x-user": user}
        self.context = browser.new_context(base_url=base_url, extra_http_headers=headers, **options)
        self.page = self.context.new_page()
        self.user = user
        self.shots = shots
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self._console)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _console(self, message: Any) -> None:
        # A not-found page is a 404, which the console reports too: that one is expected.
        if message.type == "error" and "status of 404" not in message.text:
            self.errors.append(message.text)

    def violations(self) -> list[dict[str, Any]]:
        """The serious and critical accessibility violations axe-core finds on the page."""
        # Evaluated through the browser's debugging protocol, which the page's CSP allows.
        self.page.evaluate(AXE.read_text())
        found = self.page.evaluate(
            """async () => (await axe.run(document, {resultTypes: ["violations"]}))
                .violations.map((v) => ({
                    id: v.id, impact: v.impact, help: v.help,
                    nodes: v.nodes.map((n) => n.target.join(" ")),
                }))"""
        )
        return [v for v in found if v["impact"] in ("serious", "critical")]

    def shot(self, name: str) -> Path:
        path = self.shots / f"{len(list(self.shots.iterdir())):02d}-{self.user}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def __enter__(self) -> Visitor:
        return self

    def __exit__(self, *exc: object) -> None:
        # Before the server stops: its streams to this page end with the page.
        self.context.close()
