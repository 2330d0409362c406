"""The live tabs in Debian's chromium: a `&text=` deep link reproduces the live view, an `&effect=` link the Effect
view; a model that cannot load turns the buttons off with its reason while its neuron pages still open; a dataset
whose model name is markup runs nothing on any tab and shows its name literally."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from playwright.sync_api import sync_playwright

from hub_sync.synthetic import write_synthetic_dataset
from space.live import worked_example as example
from space.live.ui import live_tabs
from space.server import build_app, running
from space.sources import open_sources
from testkit.browser import ARTIFACTS, CHROMIUM_ARGS, ensure_chromium, query
from testkit.harvested import harvested_dataset

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


def test_effect_deep_link_reproduces_the_effect_view_and_runs_update_it(site):
    url, page = site
    text = "def <img src=x onerror=window.__pwned=1>(x):\n    return x"
    page.goto(
        f"{url}?model={quote(MODEL, safe='')}&layer=1&neuron=5&effect={quote(text, safe='')}"
        f"&neurons=L1N5%2C%20L0N2&intervention=clamp%202x%20max"
    )
    page.wait_for_selector("#ns-effect-result .ns-text .t")
    assert page.input_value("#ns-effect-text textarea") == text
    assert page.input_value("#ns-effect-neurons textarea, #ns-effect-neurons input") == "L1N5, L0N2"
    result = page.inner_text("#ns-effect-result")
    assert "L1N5 = " in result and "L0N2 = " in result and "clamp 2x max" in result and "Direct logit effects" in result
    shown = "".join(page.locator("#ns-effect-result .ns-text .t").all_inner_texts())
    assert "<img src=x onerror=window.__pwned=1>" in shown
    assert "KL" in page.get_attribute("#ns-effect-result .ns-text .t >> nth=2", "title")
    assert_nothing_ran(page)
    page.screenshot(path=ARTIFACTS / "effect.png", full_page=True)
    page.fill("#ns-intervention textarea, #ns-intervention input", "zero")
    page.fill("#ns-effect-text textarea", "while True:\n    pass")
    page.click("#ns-ablate")
    page.wait_for_function("() => new URLSearchParams(location.search).get('intervention') === 'zero'")
    link = query(page)
    assert link["effect"] == "while True:\n    pass" and link["neurons"] == "L1N5, L0N2" and "text" not in link
    page.wait_for_function("() => document.querySelector('#ns-effect-result').innerText.includes('(zero,')")
    page.fill("#ns-new-tokens input", "5")
    page.click("#ns-steer")
    page.wait_for_selector("#ns-steer-result .ns-steer")
    steered = page.inner_text("#ns-steer-result")
    assert "Unsteered" in steered and "5 new tokens at most, greedy" in steered
    page.fill("#ns-seed textarea, #ns-seed input", "3")
    page.click("#ns-steer")
    page.wait_for_function("() => document.querySelector('#ns-steer-result').innerText.includes('sampled with seed 3')")
    page.wait_for_function("() => new URLSearchParams(location.search).get('seed') === '3'")
    assert query(page)["steer"] == "5"
    page.screenshot(path=ARTIFACTS / "steer.png", full_page=True)
    continuations = page.inner_text("#ns-steer-result")
    page.goto(page.url)  # the Steer button's link reproduces both views
    page.wait_for_selector("#ns-steer-result .ns-steer")
    assert page.inner_text("#ns-steer-result") == continuations and page.input_value("#ns-new-tokens input") == "5"
    assert "(zero," in page.inner_text("#ns-effect-result")
    assert_nothing_ran(page)


def test_a_dataset_without_a_model_turns_the_live_buttons_off_with_the_reason(site):
    url, page = site
    page.goto(f"{url}?model=org/synthetic&layer=0&neuron=1")
    page.wait_for_selector(".ns-title")
    page.get_by_role("tab", name="Live").click()
    page.wait_for_function(
        "() => document.querySelector('#ns-live-status').innerText.includes('names no model to load')"
    )
    assert page.locator("#ns-live-run").is_disabled()
    page.get_by_role("tab", name="Effect").click()
    assert page.locator("#ns-ablate").is_disabled() and page.locator("#ns-steer").is_disabled()
    assert "names no model" in page.inner_text("#ns-effect-status")
    page.get_by_role("tab", name="Finder & probe").click()
    assert page.locator("#ns-find").is_disabled() and "names no model" in page.inner_text("#ns-finder-status")


def test_the_finder_opens_on_its_worked_example_and_the_probe_draws_its_chart(site):
    url, page = site
    page.goto(f"{url}?model={quote(MODEL, safe='')}&layer=0&neuron=1")
    page.wait_for_selector(".ns-title")
    page.get_by_role("tab", name="Finder & probe").click()
    assert page.input_value("#ns-with textarea") == example.WITH_FEATURE
    assert page.input_value("#ns-without textarea") == example.WITHOUT_FEATURE
    page.click("#ns-probe")  # one click, nothing typed
    page.wait_for_selector("#ns-probe-plot svg.ns-probe polyline")
    chart = page.locator("#ns-probe-plot svg.ns-probe")
    texts = chart.locator("text").all_text_contents()
    assert {"held-out accuracy", "probe", "chance"} <= set(texts)
    assert chart.locator("circle").count() >= 2 and chart.locator("polygon").count() == 1
    page.screenshot(path=ARTIFACTS / "probe.png", full_page=True)


def assert_nothing_ran(page) -> None:
    assert page.evaluate("typeof window.__pwned") == "undefined"
    panes = "#ns-notice img, #ns-page img, .ns-live-table img, [id^=ns-live] img, [id^=ns-find] img"
    panes += ", [id^=ns-effect] img, [id^=ns-steer] img"
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
    page.get_by_role("tab", name="Effect").click()
    page.fill("#ns-effect-text textarea", "def f(x):\n    return x")
    page.click("#ns-ablate")
    page.wait_for_selector("#ns-effect-result .ns-text .t")
    assert EVIL in page.inner_text("#ns-effect-result")
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
