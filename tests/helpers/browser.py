"""A real browser for the operator's page: Playwright driving Debian's Chromium (never ``playwright install``),
logged in to the Airflow UI through its own form. Screenshots go to ``artifacts/`` (``NDC_ARTIFACTS_DIR``), which
CI keeps."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import REPO

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


@contextmanager
def ndc_airflow(env: dict[str, str], log: Path) -> Iterator[tuple[str, str]]:
    """``ndc airflow`` on a free port with ``env``: yields ``(base URL, admin password)`` once the UI is healthy,
    reading the password it prints; stops airflow standalone and all its children afterwards."""
    import re
    import signal
    import subprocess
    import time
    import urllib.request
    from contextlib import suppress

    from ndc_lab import cluster

    port = cluster.free_port()
    env = {**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(cluster.free_port()),
           "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(cluster.free_port()), "AIRFLOW__CORE__PARALLELISM": "2"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(["ndc", "airflow", "--port", str(port)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, password = time.monotonic() + 240, None
        while time.monotonic() < deadline and proc.poll() is None and not password:
            found = re.search(rf"{re.escape(base)}  user admin, password (\S+)", log.read_text())
            with suppress(OSError):
                if found and urllib.request.urlopen(base + "/api/v2/monitor/health", timeout=5).status == 200:  # noqa: S310
                    password = found.group(1)
            time.sleep(1)
        assert password, f"ndc airflow did not come up:\n{log.read_text()[-3000:]}"
        yield base, password
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        for pid in cluster.session_members(proc.pid):  # standalone's children, in process groups of their own
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
