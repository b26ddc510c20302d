"""Browser tests: Debian's Chromium driven by Playwright for Python, headless, offline.

The browser is the system's (`/usr/bin/chromium`, or `SWITCHBOARD_TEST_CHROMIUM`), launched through
Playwright's `executable_path`: nothing is downloaded at test time (`playwright install` is never
run). Without a Chromium, or without the playwright package, these tests are skipped, loudly: the
skip reason names what is missing and how to get it, and the run's summary repeats it. `.ci/run`
installs Chromium (apt, as root) so CI always runs them.

Pages under test are served on loopback by `site`, on another port than Switchboard: another
origin, as the company's website is for the chat widget. Screenshots go to docs/screenshots/.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Generous: two shared cores run eight test suites at once. Every wait is for a condition, never a sleep.
TIMEOUT_MS = 30_000

_skipped: list[str] = []


class BrowserTestsSkipped(UserWarning):
    """The browser tests did not run on this machine."""


def find_chromium() -> str | None:
    """`SWITCHBOARD_TEST_CHROMIUM` when set (and only it), else Debian's chromium."""
    if chosen := os.environ.get("SWITCHBOARD_TEST_CHROMIUM"):
        candidates = [chosen]
    else:
        candidates = ["/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium")]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def why_no_browser() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "BROWSER TESTS SKIPPED: the playwright package is missing (pip install -e '.[test]')"
    if find_chromium() is None:
        return (
            "BROWSER TESTS SKIPPED: no Chromium found (SWITCHBOARD_TEST_CHROMIUM, else /usr/bin/chromium); "
            "install Debian's chromium package (apt-get install -y chromium), as .ci/run does as root"
        )
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    reason = why_no_browser()
    if reason is not None:
        _skipped.append(reason)
        warnings.warn(reason, BrowserTestsSkipped, stacklevel=1)
        pytest.skip(reason)
    return find_chromium()  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def _needs_chromium(chromium_path):
    """First of every browser test's fixtures: without a browser, skip before starting any server."""


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _skipped:
        terminalreporter.section("browser tests", sep="!", red=True, bold=True)
        terminalreporter.line(_skipped[0], red=True, bold=True)


@pytest.fixture
async def browser(chromium_path, tmp_path):
    """A fresh Chromium with its own temporary profile (a persistent context: one window, one storage)."""
    from playwright.async_api import async_playwright  # noqa: PLC0415 -- only where a browser exists

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium_path,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1024, "height": 720},
            service_workers="block",
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            await context.close()


@pytest.fixture
def screenshot_path():
    """Where a test saves a screenshot for the README: docs/screenshots/NAME.png."""

    def path(name: str) -> str:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return str(SCREENSHOTS / f"{name}.png")

    return path


class Site:
    """A website on loopback (another origin than Switchboard's): pages set by the test, each with
    its own headers (a Content-Security-Policy, say)."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[str, dict[str, str]]] = {}
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 -- http.server's name
                page = site.pages.get(self.path.split("?", 1)[0])
                if page is None:
                    self.send_error(404)
                    return
                body, headers = page
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format, *args):  # noqa: A002 -- quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, path: str, html: str, headers: dict[str, str] | None = None) -> str:
        self.pages[path] = (html, headers or {})
        return self.origin + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def site():
    s = Site()
    yield s
    s.close()
