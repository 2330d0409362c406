"""The live tabs in Debian's chromium: a `&text=` deep link reproduces the live view; a model that cannot load
turns the buttons off with its reason while its neuron pages still open; a dataset whose model name is markup
runs nothing on any tab and shows its name literally."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from playwright.sync_api import sync_playwright

from hub_sync.synthetic import write_synthetic_dataset
from space.live.ui import live_tabs
from space.server import build_app, running
from space.sources import open_sources
from test_live_api import harvested_dataset
from test_space_browser import ARTIFACTS, CHROMIUM_ARGS, ensure_chromium, query

pytestmark = pytest.mark.slow
MODEL = "test/browser"
EVIL = 'Evil<img src=x onerror="window.__pwned=1">'


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("live_browser")
    dataset, _ = harvested_dataset(root, MODEL, n_windows=8, n_layers=2, d_mlp=16)
    synthetic = write_synthetic_dataset(root / "synthetic", n_layers=1, d_mlp=8, name="org/synthetic")
    evil, _ = harvested_dataset(root / "evil", EVIL, n_windows=8, n_layers=2, d_mlp=16)
    sources = [str(dataset), str(synthetic), str(evil)]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running(build_app(open_sources(sources), live_tabs())) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=ensure_chromium(), args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        yield url, page
        browser.close()


def test_text_deep_link_reproduces_the_live_view_and_runs_update_it(site):
    url, page = site
    text = "def <b>f</b>(x):\n    return x"
    page.goto(f"{url}?model={quote(MODEL, safe='')}&layer=1&neuron=5&text={quote(text, safe='')}")
    page.wait_for_selector("#ns-live-tokens .ns-text .t")
    assert page.input_value("#ns-live-text textarea") == text
    assert "L1 N" in page.inner_text("#ns-top-neurons") or "L0 N" in page.inner_text("#ns-top-neurons")
    shown = "".join(page.locator("#ns-live-tokens .ns-text .t").all_inner_texts())
    assert (
        shown.replace("↵", "\n").replace("·", " ").endswith("return x")
        and page.locator("#ns-live-tokens b").count() == 0
    )
    page.screenshot(path=ARTIFACTS / "live.png", full_page=True)
    page.fill("#ns-live-text textarea", "while True:\n    pass")
    page.click("#ns-live-run")
    page.wait_for_function("() => new URLSearchParams(location.search).get('text') === 'while True:\\n    pass'")
    assert query(page)["neuron"] == "5"
    page.wait_for_function("() => document.querySelector('#ns-live-tokens').innerText.includes('pass')")


def test_a_dataset_without_a_model_turns_the_live_buttons_off_with_the_reason(site):
    url, page = site
    page.goto(f"{url}?model=org/synthetic&layer=0&neuron=1")
    page.wait_for_selector(".ns-title")
    page.get_by_role("tab", name="Live").click()
    page.wait_for_function(
        "() => document.querySelector('#ns-live-status').innerText.includes('names no model to load')"
    )
    assert page.locator("#ns-live-run").is_disabled()
    page.get_by_role("tab", name="Finder & probe").click()
    assert page.locator("#ns-find").is_disabled() and "names no model" in page.inner_text("#ns-finder-status")


def assert_nothing_ran(page) -> None:
    assert page.evaluate("typeof window.__pwned") == "undefined"
    panes = "#ns-notice img, #ns-page img, .ns-live-table img, [id^=ns-live] img, [id^=ns-find] img"
    assert page.locator(panes).count() == 0


def test_a_model_name_made_of_markup_runs_nothing_on_any_tab_and_shows_literally(site):
    url, page = site
    page.goto(f"{url}?model={quote(EVIL, safe='')}&layer=1&neuron=3")
    page.wait_for_selector(".ns-title")
    assert page.inner_text(".ns-title") == f"{EVIL} · layer 1 · neuron 3"
    assert_nothing_ran(page)
    page.get_by_role("tab", name="Search").click()
    page.click("#ns-search")
    page.wait_for_function("t => document.querySelector('#ns-results').innerText.includes(t)", arg=EVIL)
    assert_nothing_ran(page)
    page.get_by_role("tab", name="Live").click()
    page.wait_for_function("t => document.querySelector('#ns-live-status').innerText.includes('Runs ' + t)", arg=EVIL)
    page.fill("#ns-live-text textarea", "def f(x):\n    return x")
    page.click("#ns-live-run")
    page.wait_for_selector("#ns-top-neurons .ns-live-table")
    assert EVIL in page.inner_text("#ns-live-tokens")
    assert_nothing_ran(page)
    page.get_by_role("tab", name="Finder & probe").click()
    page.wait_for_function("t => document.querySelector('#ns-finder-status').innerText.includes('Runs ' + t)", arg=EVIL)
    page.fill("#ns-with textarea", "def f(x):\n    return x\nclass A:\n    pass")
    page.fill("#ns-without textarea", "The cat sat.\nIt rained all day.\nA long walk home.")
    page.click("#ns-find")
    page.wait_for_selector("#ns-find-results .ns-live-table")
    page.screenshot(path=ARTIFACTS / "evil_name.png", full_page=True)
    assert_nothing_ran(page)
    page.goto(f"{url}n/{quote(EVIL, safe='')}/1/3")
    page.wait_for_selector(".ns-title")
    assert page.inner_text(".ns-title") == f"{EVIL} · layer 1 · neuron 3"
    assert_nothing_ran(page)
