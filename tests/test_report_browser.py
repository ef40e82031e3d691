"""report.html in a real headless Chromium: every chart image decodes and the tables
are there (issue 5, real-browser tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.results import analysis
from bench.results import report

try:
    from tests.browser import chromium_driver
except ImportError:  # pytest run from inside tests/, or tests/ not importable as a package
    from browser import chromium_driver

FIXTURE = Path(__file__).parent / "fixtures" / "results_small.json"

pytestmark = pytest.mark.timeout(120)


def test_report_html_loads_in_chromium(tmp_path: Path) -> None:
    doc = json.loads(FIXTURE.read_text(encoding="utf-8"))
    paths = report.render_report(doc, tmp_path / "out")
    driver = chromium_driver(tmp_path)
    try:
        driver.get(paths["report.html"].resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => ["
            "i.complete, i.naturalWidth, i.naturalHeight, i.getAttribute('src').slice(0, 22)]);")
        expected_charts = [k for k in paths if k not in ("report.md", "report.html")]
        assert len(images) == len(expected_charts) == 4
        for complete, width, height, src in images:
            assert complete and width > 0 and height > 0, images
            assert src == "data:image/png;base64,"      # embedded, nothing fetched
        tables = driver.execute_script(
            "return Array.from(document.querySelectorAll('table')).map(t => "
            "[t.querySelectorAll('thead th').length, t.querySelectorAll('tbody tr').length]);")
        # Per mode: the results table (backend x users) and the ratio table (backend rows).
        assert len(tables) == 2 * len(analysis.modes(doc))
        n_backends = len(analysis.backends(doc))
        assert tables[0][1] == n_backends * len(analysis.user_counts(doc, "echo"))
        assert tables[1][1] == n_backends
        heading_text = driver.execute_script(
            "return Array.from(document.querySelectorAll('h2')).map(h => h.textContent);")
        for heading in ("Recommendation", "echo", "broadcast", "Caveats", "Environment"):
            assert heading in heading_text
        # No resource besides the page itself was requested.
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
