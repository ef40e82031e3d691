"""Launch Debian's headless Chromium for real-browser tests (Selenium).

Never downloads anything: the browser is ``/usr/bin/chromium`` and the driver
``/usr/bin/chromedriver`` (Debian packages ``chromium`` and ``chromium-driver``), and the
driver path is given to ``Service`` explicitly, which makes Selenium skip Selenium Manager.

A test that needs the browser skips, with the reason, only when Chromium or its driver is
absent and the environment variable ``CI`` is not ``"true"``; in CI a missing browser or
driver is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = "apt-get update && apt-get install -y chromium chromium-driver"

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",                      # containers and root: no user namespaces for the sandbox
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",   # no update checks, no safe-browsing downloads
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",           # small /dev/shm in containers crashes tabs
    "--window-size=1400,1000",
)

PAGE_LOAD_TIMEOUT_S = 30


def chromium_driver(tmp_path: Path):
    """A headless Chromium ``webdriver.Chrome`` with a fresh profile under ``tmp_path``.

    The caller quits it (``driver.quit()``, e.g. in ``finally``).

    Raises:
        pytest.skip.Exception: Chromium or its driver is absent and ``CI`` is not "true".
    """
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if missing and os.environ.get("CI") != "true":
        pytest.skip(f"{' and '.join(missing)} not found; install them with: {INSTALL_HINT}")
    # Imported here so that a machine without selenium can still collect the tests.
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    if not Path(CHROMIUM).exists():
        pytest.fail(f"CI=true but {CHROMIUM} is missing; CI must run: {INSTALL_HINT}")
    if not Path(CHROMEDRIVER).exists():
        pytest.fail(f"{CHROMIUM} is installed but {CHROMEDRIVER} is not; run: {INSTALL_HINT}")

    profile = Path(tmp_path) / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    service = Service(executable_path=CHROMEDRIVER, log_output=str(Path(tmp_path) / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
    return driver
