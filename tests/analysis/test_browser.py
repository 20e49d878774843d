"""The neuron browser in headless Chromium: it loads over HTTP, lists the neurons, the id and
token filters and the entropy sort work, and the console stays free of errors."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

from analysis.neurons import collect, write_browser
from tti_ray.train.checkpoint import load_model

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and shutil.which("chromium") is None,
        reason="Debian chromium is not installed (apt-get install -y chromium)",
    ),
]


@pytest.fixture
def served_page(tiny_run, tmp_path):
    """The browser page for the tiny checkpoint, served by http.server on 127.0.0.1."""
    data = collect(load_model(tiny_run), "mlp_hidden", 0, top_k=3, n_tokens=256)
    page, _ = write_browser(data, tmp_path / "site")
    handler = functools.partial(_QuietHandler, directory=str(page.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{page.name}", data
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


def test_neuron_browser_in_headless_chromium(served_page, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    url, data = served_page
    errors, requests = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url, wait_until="load")
            page.screenshot(path=str(tmp_path / "neurons.png"))

            n = data["meta"]["n_neurons"]
            assert page.title().startswith("Neurons: mlp_hidden layer 0")
            assert page.locator("section.neuron").count() == n  # 64 < one page of 100
            assert page.locator("section.neuron").first.locator(".ctx").count() == 3
            assert f"of {n} matching" in page.locator("#count").inner_text()

            page.fill("#neuron-search", "7")
            assert page.locator("section.neuron").count() == 1
            assert page.locator("section.neuron .nid").inner_text() == "Neuron 7"
            page.fill("#neuron-search", "3-5, 60")
            assert page.locator("section.neuron").evaluate_all(
                "els => els.map(e => +e.dataset.neuron)"
            ) == [3, 4, 5, 60]
            page.fill("#neuron-search", "")

            # token filter: the neurons whose top contexts peak on a token containing the text
            word = data["vocab"][
                data["neurons"][0]["ctx"][0]["t"][data["neurons"][0]["ctx"][0]["m"]]
            ]
            q = word.strip().lower() or word
            expected = [
                x["id"]
                for x in data["neurons"]
                if any(q in data["vocab"][c["t"][c["m"]]].strip().lower() for c in x["ctx"])
            ]
            page.fill("#token-search", q)
            shown = page.locator("section.neuron").evaluate_all(
                "els => els.map(e => +e.dataset.neuron)"
            )
            assert shown == expected and 0 in shown
            page.fill("#token-search", "zzzz-no-such-token")
            assert page.locator("section.neuron").count() == 0
            assert page.locator(".empty").is_visible()
            page.fill("#token-search", "")

            page.select_option("#sort", "entropy-asc")
            ids = page.locator("section.neuron").evaluate_all(
                "els => els.map(e => +e.dataset.neuron)"
            )
            ent = {x["id"]: x["entropy"] for x in data["neurons"]}
            assert [ent[i] for i in ids] == sorted(ent.values())
            page.screenshot(path=str(tmp_path / "neurons_by_entropy.png"), full_page=False)
        finally:
            browser.close()
    assert errors == []
    assert all(r.startswith("http://127.0.0.1:") for r in requests)  # nothing off the machine
    assert (tmp_path / "neurons.png").stat().st_size > 0
    (tmp_path / "page.json").write_text(json.dumps({"url": url, "requests": requests}))
