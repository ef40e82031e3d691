"""The browser helper's skip/fail policy: skip locally when Chromium or its driver is
missing, fail in CI. No browser is started here."""

from __future__ import annotations

import pytest

import browser

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("missing", ["CHROMIUM", "CHROMEDRIVER"])
def test_missing_browser_part_skips_locally(monkeypatch, tmp_path, missing) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(browser, missing, str(tmp_path / "not-installed"))
    with pytest.raises(pytest.skip.Exception, match="not-installed"):
        browser.chromium_driver(tmp_path)


def test_missing_driver_fails_in_ci(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(browser, "CHROMEDRIVER", str(tmp_path / "not-installed"))
    if not browser.Path(browser.CHROMIUM).exists():
        monkeypatch.setattr(browser, "CHROMIUM", __file__)  # any existing file stands in
    with pytest.raises(pytest.fail.Exception, match="not-installed"):
        browser.chromium_driver(tmp_path)
