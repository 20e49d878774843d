"""Headless Chromium opens the MLflow UI's compare view of two child runs and finds the
objective metric names on the page (the UI is a React app: only a browser renders it).

Compare URL, as the UI builds it (``getCompareRunPageRoute`` in MLflow's bundle):
``#/compare-runs?runs=[<run ids as JSON>]&experiments=[<experiment ids as JSON>]``.
The screenshot is saved in the test's tmp dir; ``TTI_RAY_DOCS_SCREENSHOT=1`` also copies it
to ``docs/mlflow_compare.png``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil

import pytest

from .conftest import ROOT, have_chromium

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not have_chromium(), reason="needs Debian's chromium (/usr/bin/chromium)"),
]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
OBJ = ["val/perplexity", "val/polysemanticity/mean"]


def show_metric_row(page, name: str) -> tuple[object, list[str]]:
    """Scroll the compare view's metrics table (a virtualised grid: only rows in view exist in
    the DOM) until the row ``name`` is the second one in view; return its link and the values
    shown in that row."""
    link = page.locator('a[title="Plot chart"]', has_text=re.compile(f"^{re.escape(name)}$"))
    grid = page.locator(".ReactVirtualized__Grid").last  # the values column: it scrolls
    grid.hover()
    for _ in range(100):
        if link.count():
            break
        page.mouse.wheel(0, 90)
        page.wait_for_timeout(100)
    top = link.first.evaluate("a => a.parentElement.offsetTop")
    page.mouse.wheel(0, max(0, top - 45) - grid.evaluate("g => g.scrollTop"))
    page.wait_for_timeout(300)
    for dy in (1, -1):  # the names column follows the values column one scroll event late
        page.mouse.wheel(0, dy)
        page.wait_for_timeout(300)
    values = grid.evaluate("(g, top) => [...g.querySelectorAll('div')]"
                           ".filter(d => d.style.top === top + 'px').map(d => d.innerText)", top)
    return link.first, values


def _tidy(page) -> None:
    """Best effort, for a readable screenshot: close the assistant panel, fold the charts and run
    details, show only the params that differ."""
    for target in (page.locator('button[aria-label="Close"]'),
                   page.get_by_text("Visualizations", exact=True),
                   page.get_by_text("Run details", exact=True),
                   page.get_by_text("Show diff only")):
        with contextlib.suppress(Exception):  # layout details differ between MLflow versions
            target.first.click(timeout=3000)


def test_compare_view_of_two_trials_shows_the_objectives(served_sweep, tmp_path):
    from playwright.sync_api import sync_playwright

    s = served_sweep
    runs = sorted(s.children, key=lambda r: r.info.run_name)[:2]
    ids = [r.info.run_id for r in runs]
    url = (f"{s.server.url}/#/compare-runs?runs={json.dumps(ids)}"
           f"&experiments={json.dumps([s.experiment.experiment_id])}")
    shot = tmp_path / "mlflow_compare.png"
    shown: dict[str, list[str]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or
                                    "/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(url, wait_until="domcontentloaded", timeout=120_000)
            page.locator('a[title="Plot chart"]').first.wait_for(timeout=120_000)
            page.get_by_text("Comparing 2 Runs").first.wait_for(timeout=30_000)
            _tidy(page)
            for name in reversed(OBJ):  # end on the first objective: both rows in view
                link, values = show_metric_row(page, name)
                assert link.is_visible(), name
                shown[name] = values
            page.screenshot(path=str(shot))
            text = page.inner_text("body")
        finally:
            browser.close()
    for name in OBJ:  # the row shows both runs' final values, in the order of the URL
        want = [r.data.metrics[name] for r in runs]
        assert [float(v) for v in shown[name]] == pytest.approx(want, rel=1e-3), name
    assert "interventions.anti_poly.coef" in text
    assert shot.stat().st_size > 10_000
    if os.environ.get("TTI_RAY_DOCS_SCREENSHOT"):
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / "mlflow_compare.png")
