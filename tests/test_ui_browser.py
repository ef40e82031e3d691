"""``bench ui`` in a real headless Chromium (issue 5): start a swarm from Locust's start
form, watch the ``echo`` row's request count grow in the page, stop it from the page,
then SIGTERM ``bench ui`` and check that no process it started remains.

Selectors follow Locust 2.47's React UI: form inputs by ``name`` (``userCount``,
``spawnRate``, ``host``, ``messageBytes``), the class picker as a table of rows
``[checkbox, class name, ...]``, the stats table by its ``data-sortkey`` headers, and
the buttons by their text.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

try:
    from tests.browser import chromium_driver
    from tests.uiproc import UiProcess, free_port
except ImportError:  # pytest run from inside tests/
    from browser import chromium_driver
    from uiproc import UiProcess, free_port

pytestmark = pytest.mark.timeout(150)

# Seconds to wait for something to appear or change in the page (React re-renders
# the stats every 2 s).
PAGE_WAIT_S = 30.0
# Seconds the Stop button may stay on the page after a click before it is pressed again,
# and the status may read "cleanup" before the page is reloaded.
STOP_RECLICK_S = 3.0
REQUESTS_COLUMN_KEY = "numRequests"


def wait_for(predicate, timeout: float = PAGE_WAIT_S, what: str = "", interval: float = 0.25):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except WebDriverException as exc:  # element not there yet, or re-rendered under us
            last_error = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}" +
                (f" (last error: {last_error.__class__.__name__})" if last_error else ""))


def set_field(driver, name: str, value: str) -> None:
    """Replace the value of the React-controlled input ``name``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element(By.NAME, name)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(value)
    assert field.get_attribute("value") == value


def class_checkbox(driver, class_name: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(
        By.XPATH, f"//tr[td[normalize-space()='{class_name}']]//input[@type='checkbox']")


def echo_requests(driver) -> int | None:
    """The ``# Requests`` cell of the ``echo`` row in the stats table, or None if absent."""
    from selenium.webdriver.common.by import By

    headers = driver.find_elements(By.XPATH, "//table[thead//th[@data-sortkey]]//thead//th")
    keys = [h.get_attribute("data-sortkey") for h in headers]
    if REQUESTS_COLUMN_KEY not in keys or "name" not in keys:
        return None
    rows = driver.find_elements(By.XPATH, "//table[thead//th[@data-sortkey]]//tbody/tr")
    for row in rows:
        cells = [c.text.strip() for c in row.find_elements(By.TAG_NAME, "td")]
        if len(cells) == len(keys) and cells[keys.index("name")] == "echo":
            return int(cells[keys.index(REQUESTS_COLUMN_KEY)].replace(",", ""))
    return None


def test_swarm_from_the_page_and_stop(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    ui = UiProcess(["asyncio", "--web-port", str(free_port())], tmp_path)
    driver = None
    try:
        driver = chromium_driver(tmp_path)
        driver.get(ui.url)
        # The start form, with the host and our custom arguments filled in.
        host = wait_for(lambda: driver.find_element(By.NAME, "host").get_attribute("value"),
                        what="the start form")
        assert host.startswith("tcp://127.0.0.1:")
        assert driver.find_element(By.NAME, "messageBytes").get_attribute("value") == "64"
        assert driver.find_element(By.NAME, "broadcastRate").get_attribute("value")
        set_field(driver, "userCount", "3")
        set_field(driver, "spawnRate", "10")
        # Our arguments sit in the collapsed "Custom parameters" section: open it, set one.
        driver.find_element(
            By.XPATH, "//button[@aria-expanded][contains(normalize-space(), 'Custom parameters')]").click()
        wait_for(lambda: driver.find_element(By.NAME, "messageBytes").is_displayed(),
                 what="the custom parameters to unfold")
        set_field(driver, "messageBytes", "100")
        # The class picker offers both users, both ticked: the server is in echo mode.
        broadcast = class_checkbox(driver, "BroadcastUser")
        if broadcast.is_selected():
            broadcast.click()
        wait_for(lambda: not class_checkbox(driver, "BroadcastUser").is_selected(),
                 what="BroadcastUser to be unticked")
        assert class_checkbox(driver, "EchoUser").is_selected()
        driver.find_element(By.CSS_SELECTOR, "form button[type='submit']").click()

        first = wait_for(lambda: echo_requests(driver), what="the echo row with requests")
        grown = wait_for(lambda: (n := echo_requests(driver)) and n > first and n,
                         what=f"the echo request count to grow past {first}")
        assert grown > first > 0
        # The custom argument reached the users: Locust's average size is the line size.
        assert "100" in [c.text.strip() for c in driver.find_elements(
            By.XPATH, "//table[thead//th[@data-sortkey]]//tbody/tr[td[normalize-space()='echo']]/td")]

        driver.find_element(By.XPATH, "//button[normalize-space()='Stop']").click()
        clicked = [time.monotonic()]

        def stopped() -> bool:
            status = driver.find_element(By.TAG_NAME, "body").text.upper()
            if "STOPPED" in status:
                return True
            # Locust's page polls the stats only while the state is spawning or running: a
            # poll answered during the runner's brief "cleanup" (its users being stopped; long
            # on a loaded machine) leaves the page showing "cleanup" for good. Reload it, as a
            # user would, and read the state afresh.
            if "CLEANUP" in status and time.monotonic() - clicked[0] > STOP_RECLICK_S:
                driver.refresh()
                clicked[0] = time.monotonic()
                return False
            # On a loaded machine the page can re-render under the first click and lose it:
            # while the Stop button is still there after a few seconds, press it again
            # (stopping a stopping runner is harmless).
            stop = driver.find_elements(By.XPATH, "//button[normalize-space()='Stop']")
            if stop and time.monotonic() - clicked[0] > STOP_RECLICK_S:
                stop[0].click()
                clicked[0] = time.monotonic()
            return False

        wait_for(stopped, what="the status to read stopped")
        # Stopped means stopped: the count no longer moves (two stats refreshes apart).
        settled = echo_requests(driver)
        time.sleep(4.5)
        assert echo_requests(driver) == settled
    except BaseException:
        if driver is not None:
            (tmp_path / "page.html").write_text(driver.page_source)
        ui.kill()
        raise
    finally:
        if driver is not None:
            driver.quit()
    assert ui.stop() == 0, ui.stderr()
    assert "Traceback" not in ui.stderr(), ui.stderr()
