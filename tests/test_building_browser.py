"""The page while a source is still being built (the embedded default's first launch), in Debian's chromium: the
banner follows the build's progress, and when the build is done the neuron page appears and the model menu
holds the new model, in the same page, without a reload or a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from hub_sync.synthetic import write_synthetic_dataset
from space.server import build_app, running
from space.sources import Catalog, open_sources
from testkit.browser import CHROMIUM_ARGS, ensure_chromium

pytestmark = pytest.mark.slow

BANNER_TEXT = "(document.querySelector('#ns-unavailable')?.innerText || '')"
BANNER_SAYS = f"t => {BANNER_TEXT}.includes(t)"
BANNER_LACKS = f"t => !{BANNER_TEXT}.includes(t)"
TITLE_IS = "t => document.querySelector('.ns-title')?.innerText === t"
WAIT_MS = 30_000  # the page polls every 3 s; a loaded machine answers late


class ScriptedBuild:
    """A build the test drives: its line changes on demand, and `finish` adds the built dataset to the catalog."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.progress = "harvesting: 1,024 of 4,096 tokens (25%)"
        self.done = False

    @property
    def running(self) -> bool:
        return not self.done

    def line(self) -> str:
        return f"Building the test dataset, once: {self.progress}"

    def finish(self, folder: Path) -> None:
        self.catalog.add(str(folder))
        self.done = True


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

        build.finish(folder)
        page.wait_for_function(TITLE_IS, arg="org/built · layer 0 · neuron 0", timeout=WAIT_MS)
        page.wait_for_function(BANNER_LACKS, arg="Building", timeout=WAIT_MS)
        assert page.input_value("#ns-model input") == "org/built"
        page.click("#ns-next")
        page.wait_for_function(TITLE_IS, arg="org/built · layer 0 · neuron 1", timeout=WAIT_MS)
        browser.close()
