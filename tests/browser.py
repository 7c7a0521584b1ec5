"""A real browser for the operator's page: Playwright driving Debian's Chromium (never ``playwright install``),
logged in to the Airflow UI through its own form. Screenshots go to ``artifacts/`` (``NDC_ARTIFACTS_DIR``), which
CI keeps."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .conftest import REPO

CHROMIUM = os.environ.get("NDC_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("NDC_ARTIFACTS_DIR", REPO / "artifacts"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@contextmanager
def logged_in(base: str, password: str, user: str = "admin") -> Iterator:
    """A Chromium page logged in to the Airflow UI at ``base`` through the login form."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(base + "/", wait_until="networkidle")
            page.locator("input[name=username]").fill(user)
            page.locator("input[name=password]").fill(password)
            page.locator("button[type=submit]").click()
            page.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)
            yield page
        finally:
            browser.close()


def operator_frame(page, base: str):
    """The operator's page as the Airflow UI shows it: Browse > NDC operations, an iframe of the plugin's app."""
    page.goto(base + "/plugin/ndc_operations", wait_until="networkidle")
    frame = page.frame_locator("iframe")
    frame.get_by_test_id("generated-at").wait_for(timeout=30_000)
    return frame
