"""Browser tests: headless Debian Chromium driven by Playwright against a live Django server.

Playwright never downloads a browser here: it launches /usr/bin/chromium (installed by
`make test` through scripts/ensure_browser.sh). Every step of a test can be photographed with
`shots.take("name")`; when a test fails (or KEEP_SCREENSHOTS=1 is set), its screenshots are
kept under test-artifacts/<test name>/.
"""

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

# Playwright's sync API keeps an event loop running in this thread from the first browser test
# on; the ORM calls tests (and pytest-django's database fixtures) make between browser steps are
# still plain synchronous calls, so Django's async guard must stand aside in this process. It
# has to be process-wide: the database fixtures run outside any one test's fixtures.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Flags for a sandbox without network or GPU: no first-run work, no background requests.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_PASSWORD = "browser-test-password"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's outcome on the test item, so fixtures know whether it failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test process."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure_browser.sh (make test does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Shots:
    """Screenshots of a test's steps, kept only if the test fails."""

    def __init__(self, page: Page, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.count = 0

    def take(self, name: str) -> None:
        """Photograph the page as it is now."""
        self.count += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(self.folder / f"{self.count:02d}-{name}.png"), full_page=True)


@pytest.fixture
def page(browser: Browser, request, tmp_path) -> Iterator[Page]:
    """A fresh browser context and page; 10 s timeouts so a broken page fails fast."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def shots(page: Page, request, tmp_path) -> Iterator[Shots]:
    """Step screenshots; copied to test-artifacts/<test>/ (plus a final one) on failure."""
    recorder = Shots(page, tmp_path / "shots")
    yield recorder
    # A failure in the test body, or in a fixture set up after this one (logging in, say).
    failed = any(
        getattr(getattr(request.node, f"report_{phase}", None), "failed", False)
        for phase in ("setup", "call")
    )
    if failed or os.environ.get("KEEP_SCREENSHOTS"):
        # The page may be gone by now; the earlier shots are kept either way.
        if failed:
            with contextlib.suppress(Exception):
                recorder.take("at-failure")
        target = ARTIFACTS / request.node.name
        shutil.rmtree(target, ignore_errors=True)
        if recorder.folder.exists():
            shutil.copytree(recorder.folder, target)


@pytest.fixture
def operator(django_user_model):
    """A superuser the browser logs in as."""
    return django_user_model.objects.create_superuser(
        "operator", "operator@example.com", ADMIN_PASSWORD
    )


@pytest.fixture
def logged_in(page: Page, live_server, operator) -> Page:
    """The page, logged in to the admin."""
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", operator.username)
    page.fill("#id_password", ADMIN_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    return page
