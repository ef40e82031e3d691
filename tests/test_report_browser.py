"""report.html in a real headless Chromium: every chart decodes, the answer comes first,
and at 1024 px no table is wider than the page."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.results import report

try:
    from tests.browser import chromium_driver
    from tests import report_docs as docs
except ImportError:  # pytest run from inside tests/
    from browser import chromium_driver  # type: ignore[no-redef]
    import report_docs as docs  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(120)


def test_report_html_loads_in_chromium_and_fits_1024_px(tmp_path: Path) -> None:
    doc = docs.full_doc()
    paths = report.render_report(doc, tmp_path / "out")
    driver = chromium_driver(tmp_path)
    try:
        driver.set_window_size(1024, 900)
        driver.get(paths["report.html"].resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => ["
            "i.complete, i.naturalWidth, i.naturalHeight, i.getAttribute('src').slice(0, 22)]);")
        assert len(images) == len([k for k in paths if k not in ("report.md", "report.html")]) == 5
        for complete, width, height, src in images:
            assert complete and width > 0 and height > 0, images
            assert src == "data:image/png;base64,"      # embedded, nothing fetched
        headings = driver.execute_script("return Array.from(document.querySelectorAll('h2')).map(h => h.textContent);")
        assert headings[:2] == ["Which model for which case", "At each load"]
        for heading in ("echo", "broadcast", "Memory per connection", "Caveats", "Environment"):
            assert heading in headings
        page = driver.execute_script("return document.documentElement.clientWidth;")
        assert 900 <= page <= 1024
        widths = driver.execute_script(
            "return Array.from(document.querySelectorAll('table')).map(t => t.getBoundingClientRect().right);")
        assert len(widths) == 3 and max(widths) <= page, (widths, page)
        assert driver.execute_script("return document.documentElement.scrollWidth;") <= page
        urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
        assert [u for u in urls if not u.startswith("data:")] == []
    finally:
        driver.quit()


def test_helper_skips_without_chromium_outside_ci(tmp_path: Path, monkeypatch) -> None:
    import sys
    helper = sys.modules[chromium_driver.__module__]
    monkeypatch.setattr(helper, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium chromium-driver"):
        chromium_driver(tmp_path)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        chromium_driver(tmp_path)
