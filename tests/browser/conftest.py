"""Headless Chromium (Debian's `chromium`, driven by Playwright) against the real app on Ray Serve.

The app is the session's `serve_app` (tests/serve_fixtures.py, shared with tests/integration), or an
app already running elsewhere: `STUDIO_TEST_BROWSER_URL` and `STUDIO_TEST_BROWSER_ADMIN_KEY`. The
browser is `STUDIO_TEST_CHROMIUM`, else `chromium` on the PATH.
Set `STUDIO_TEST_SCREENSHOTS` to a folder to get each page's screenshot there as well.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright


@dataclass(frozen=True)
class Studio:
    """Where the app runs and how to act as its admin."""

    url: str
    admin: dict[str, str]

    def tenant(self, name: str) -> tuple[str, dict[str, str]]:
        """Create a client and a key through the admin API; return the key and its auth headers."""
        with httpx.Client(base_url=self.url, timeout=30) as http:
            client = http.post("/admin/clients", json={"name": name}, headers=self.admin).json()
            key = http.post(f"/admin/clients/{client['id']}/keys", headers=self.admin).json()["secret"]
        return key, {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def studio(request: pytest.FixtureRequest) -> Studio:
    external = os.environ.get("STUDIO_TEST_BROWSER_URL")
    if external:
        admin_key = os.environ["STUDIO_TEST_BROWSER_ADMIN_KEY"]
        return Studio(external.rstrip("/"), {"Authorization": f"Bearer {admin_key}"})
    app = request.getfixturevalue("serve_app")
    return Studio(app.url, app.admin)


def chromium_path() -> str:
    """Return the Chromium to drive (Playwright's own browser downloads are not used)."""
    found = os.environ.get("STUDIO_TEST_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail(
            "no chromium: `apt-get install chromium` (scripts/test.sh does) or set STUDIO_TEST_CHROMIUM"
        )
    return found


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
    yield chromium
    chromium.close()


@dataclass
class StudioPage:
    """A fresh tab on the studio, with screenshots into the test's folder and page errors recorded."""

    page: Page
    studio: Studio
    folder: Path
    errors: list[str] = field(default_factory=list)

    def open(self, route: str = "") -> None:
        self.page.goto(f"{self.studio.url}/studio{'#/' + route if route else ''}")

    def sign_in(self, key: str) -> None:
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()

    def go(self, link: str) -> None:
        """Follow a link of the main navigation."""
        self.page.get_by_role("navigation", name="Main").get_by_role("link", name=link, exact=True).click()

    def screenshot(self, name: str) -> None:
        path = self.folder / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        extra = os.environ.get("STUDIO_TEST_SCREENSHOTS")
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(extra) / path.name)


@pytest.fixture
def studio_page(browser: Browser, studio: Studio, tmp_path: Path) -> Iterator[StudioPage]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    context.set_default_timeout(30_000)
    page = context.new_page()
    tab = StudioPage(page, studio, tmp_path)

    def on_console(message: ConsoleMessage) -> None:
        # The browser logs every 4xx/5xx it fetched; the tests look at what the page shows instead.
        if message.type == "error" and "Failed to load resource" not in message.text:
            tab.errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: tab.errors.append(str(error)))
    yield tab
    context.close()
    assert not tab.errors, tab.errors
