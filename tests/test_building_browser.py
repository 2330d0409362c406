"""The page while a source is still being built (the embedded default's first launch), in Debian's chromium: the
banner follows the build's progress, and when the build is done the neuron page appears and the model menu
holds the new model, in the same page, without a reload or a restart. Meanwhile the Live tab runs the build's
model alone."""

from __future__ import annotations

import pytest
from playwright.sync_api import sync_playwright

from hub_sync.reader import open_dataset
from hub_sync.synthetic import write_synthetic_dataset
from space.live.ui import live_tabs
from space.server import build_app, running
from space.sources import open_sources
from testkit.browser import ARTIFACTS, CHROMIUM_ARGS, ensure_chromium
from testkit.harvested import harvested_dataset
from testkit.scripted_build import ScriptedBuild

pytestmark = pytest.mark.slow

BANNER_TEXT = "(document.querySelector('#ns-unavailable')?.innerText || '')"
BANNER_SAYS = f"t => {BANNER_TEXT}.includes(t)"
BANNER_LACKS = f"t => !{BANNER_TEXT}.includes(t)"
TITLE_IS = "t => document.querySelector('.ns-title')?.innerText === t"
HOSTILE = 'test/built<img src=x onerror="window.__pwned=1">'  # a model name is untrusted text
WAIT_MS = 30_000  # the page polls every 3 s; a loaded machine answers late


def text_of(selector: str) -> str:
    """A page function: whether the element's text includes the argument."""
    return f"t => (document.querySelector('{selector}')?.innerText || '').includes(t)"


def test_the_page_follows_a_build_and_shows_its_neurons_when_it_is_done(tmp_path):
    folder = write_synthetic_dataset(tmp_path / "built", n_layers=2, d_mlp=12, name="org/built")
    catalog = open_sources([])
    build = ScriptedBuild(catalog)
    catalog.building.append(build)
    with running(build_app(catalog)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=ensure_chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function(BANNER_SAYS, arg="harvesting: 1,024 of 4,096", timeout=WAIT_MS)
        build.progress = "writing the dataset: layer 1: Parquet files (step 4 of 4)"
        page.wait_for_function(BANNER_SAYS, arg="layer 1: Parquet files", timeout=WAIT_MS)
        assert page.locator(".ns-title").count() == 0, "no neuron before the build is done"
        assert "it is being built" in page.inner_text("#ns-notice")

        build.finish(folder)
        page.wait_for_function(TITLE_IS, arg="org/built · layer 0 · neuron 0", timeout=WAIT_MS)
        page.wait_for_function(BANNER_LACKS, arg="Building", timeout=WAIT_MS)
        assert page.input_value("#ns-model input") == "org/built"
        assert "being built" not in page.inner_text("#ns-notice")
        page.click("#ns-next")
        page.wait_for_function(TITLE_IS, arg="org/built · layer 0 · neuron 1", timeout=WAIT_MS)
        browser.close()



def test_the_live_tab_runs_the_model_while_its_dataset_builds_then_the_dataset_joins_in(tmp_path):
    dataset, _ = harvested_dataset(tmp_path, HOSTILE, n_windows=8, n_layers=2, d_mlp=16)
    catalog = open_sources([])
    build = ScriptedBuild(catalog)
    build.model_spec = open_dataset(dataset).manifest.model.source
    catalog.building.append(build)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running(build_app(catalog, live_tabs())) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=ensure_chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{url}?view=live")
        page.wait_for_function(text_of("#ns-live-status"), arg="run its model alone", timeout=WAIT_MS)
        page.fill("#ns-live-text textarea", "def add(a, b):\n    return a + b")
        page.click("#ns-live-run")
        page.wait_for_selector("#ns-live-tokens .ns-text .t", timeout=WAIT_MS)
        page.wait_for_function(text_of("#ns-top-neurons"), arg="Highest activation", timeout=WAIT_MS)
        assert "scaled to this text" in page.inner_text("#ns-live-notice")
        assert "this text's scale" in page.inner_text("#ns-live-tokens")
        assert "dataset max" not in page.inner_text("#ns-top-neurons")
        assert HOSTILE in page.inner_text("#ns-live-tokens") and page.evaluate("window.__pwned") is None
        page.screenshot(path=ARTIFACTS / "live-while-building.png", full_page=True)

        build.finish(dataset)
        page.wait_for_function(text_of("#ns-live-status"), arg=f"Runs {HOSTILE}", timeout=WAIT_MS)
        page.click("#ns-live-run")
        page.wait_for_function(text_of("#ns-top-neurons"), arg="relative to the neuron's dataset max", timeout=WAIT_MS)
        assert "scaled to this text" not in page.inner_text("#ns-live-notice")
        assert HOSTILE in page.inner_text("#ns-live-tokens") and page.evaluate("window.__pwned") is None
        browser.close()
