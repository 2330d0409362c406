"""Overview, Rate and Compare in Debian's chromium: the landing Overview opens a neuron in place, a blind rating
reveals nothing until it is answered, the rater is remembered across a reload, and two models compare side by side.

Screenshots go to artifacts/space/ (gitignored) for a human to look at.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, sync_playwright

from hub_sync.synthetic import HOSTILE_TOKENS, write_synthetic_dataset
from space.rating import RatingStore
from space.research_tabs import research_tabs
from space.server import build_app, running
from space.sources import open_sources
from testkit.browser import ARTIFACTS, CHROMIUM_ARGS, ensure_chromium, query

pytestmark = pytest.mark.slow
PLAIN, HOSTILE = "org/plain", "org/hostile"
EVIL = 'Evil<img src=x onerror="window.__pwned=1">'


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("research_browser")
    plain = write_synthetic_dataset(root / "plain", n_layers=3, d_mlp=20, name=PLAIN, seed=3)
    hostile = write_synthetic_dataset(
        root / "hostile", n_layers=2, d_mlp=16, bottom_k=2, d_vocab=10, hostile=True, name=HOSTILE
    )
    evil = write_synthetic_dataset(root / "evil", n_layers=1, d_mlp=6, name=EVIL, seed=9)
    catalog = open_sources([str(plain), str(hostile), str(evil)])
    store = RatingStore(root / "ratings")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running(build_app(catalog, research_tabs(store))) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=ensure_chromium(), args=CHROMIUM_ARGS)
        yield url, browser, store
        browser.close()


@pytest.fixture
def page(site) -> Page:
    _, browser, _ = site
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def test_the_landing_overview_opens_a_neuron_in_place(site, page):
    url, _, _ = site
    page.goto(url)
    page.wait_for_selector("#ns-overview .ns-open")
    assert page.inner_text("#ns-overview .ns-title").startswith(f"{PLAIN}: 3 layers")
    assert not {"model", "layer", "neuron"} & set(query(page))
    page.screenshot(path=ARTIFACTS / "overview.png", full_page=True)
    page.click("#ns-overview .ns-title")  # a click beside the links opens nothing
    page.wait_for_timeout(500)
    assert page.locator("#ns-overview .ns-title").is_visible() and not {"layer", "neuron"} & set(query(page))
    link = page.locator("#ns-overview [data-list=max] a.ns-open").first
    layer, neuron = link.get_attribute("data-layer"), link.get_attribute("data-neuron")
    link.click()
    page.wait_for_function(
        "t => document.querySelector('#ns-page .ns-title')?.innerText === t",
        arg=f"{PLAIN} · layer {layer} · neuron {neuron}",
    )
    page.wait_for_function("n => new URLSearchParams(location.search).get('neuron') === n", arg=neuron)
    assert query(page) == {"model": PLAIN, "layer": layer, "neuron": neuron}
    page.reload()
    page.wait_for_function(
        "t => document.querySelector('#ns-page .ns-title')?.innerText === t",
        arg=f"{PLAIN} · layer {layer} · neuron {neuron}",
    )


def test_a_deep_link_opens_the_overview_of_a_hostile_model_and_runs_nothing(site, page):
    url, _, _ = site
    page.goto(url + f"?view=overview&model={HOSTILE}")
    page.wait_for_function(
        "t => document.querySelector('#ns-overview .ns-title')?.innerText.startsWith(t)", arg=f"{HOSTILE}: 2 layers"
    )
    page.wait_for_function("() => window.__neuroscopeLanded === true")
    assert query(page) == {"view": "overview", "model": HOSTILE}  # the link stays a link to the overview
    shown = page.inner_text("#ns-overview")
    assert "Most negative" in shown and any(token in shown for token in HOSTILE_TOKENS)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#ns-overview img, #ns-overview script").count() == 0
    page.locator("#ns-ov-layer input").click()
    page.get_by_role("option", name="1", exact=True).click()
    page.wait_for_function("() => document.querySelector('#ns-overview h3')?.innerText.includes('layer 1')")
    page.locator("#ns-overview [data-list=negative] a.ns-open").first.click()
    page.wait_for_function("() => document.querySelector('#ns-page .ns-title')?.innerText.includes('layer 1')")


def new_sample(page: Page) -> None:
    """Ask for a sample and wait for its examples."""
    page.click("#ns-rate-next")
    page.wait_for_selector("#ns-rate-sample .ns-ex")


def answer(page: Page, choice: str) -> None:
    """Pick an answer, submit it and wait for the reveal."""
    page.locator("#ns-rate-answer label", has_text=choice).click()
    page.click("#ns-rate-submit")
    page.wait_for_selector("#ns-rate-reveal .ns-reveal")


def test_a_blind_rating_reveals_nothing_until_answered_and_the_rater_is_remembered(site, page):
    url, _, store = site
    page.goto(url + "?view=rate")
    new_sample(page)
    pane = page.inner_html("#ns-rate-sample .ns-blind")
    for secret in (PLAIN, HOSTILE, "Evil", "data-", "href"):
        assert secret not in pane, secret
    assert not re.search(r"(?i)(layer|neuron|window)\W*\d", page.inner_text("#ns-rate-sample"))
    assert all(re.fullmatch(r"-?[0-9.e+-]+", title) for title in re.findall(r'title="([^"]*)"', pane))
    assert set(query(page)) <= {"view"} and page.evaluate("document.title") == "Neuroscope Hub"
    assert page.locator("#ns-rate-reveal .ns-reveal").count() == 0
    page.screenshot(path=ARTIFACTS / "rate.png", full_page=True)
    page.fill("#ns-rate-note textarea, #ns-rate-note input", "no shared token")
    answer(page, "Not interpretable")
    first = store.ratings()[-1]
    reveal = page.inner_text("#ns-rate-reveal")
    assert f"{first['model']} · layer {first['layer']}" in reveal and f"neuron {first['neuron']}" in reveal
    assert first["answer"] == "not" and first["note"] == "no shared token"
    page.wait_for_function("() => document.querySelector('#ns-rate-summary')?.innerText.includes('[')")
    page.reload()
    new_sample(page)
    answer(page, "Unsure")
    second = store.ratings()[-1]
    assert second["rater"] == first["rater"] and second["id"] != first["id"]
    assert (second["model"], second["layer"], second["neuron"]) != (first["model"], first["layer"], first["neuron"])
    page.click("#ns-rate-submit")
    page.wait_for_function("() => document.querySelector('#ns-rate-result-notice')?.innerText.includes('already')")


def test_two_models_compare_side_by_side(site, page):
    url, _, _ = site
    page.goto(url + "?view=compare")
    page.click("#ns-compare-run")
    page.wait_for_selector("#ns-compare table")
    headers = page.locator("#ns-compare table.ns-compare > thead th").all_inner_texts()
    assert headers[1:] == [PLAIN, HOSTILE]
    assert page.locator("#ns-compare svg").count() == 4
    assert "random" in page.inner_text("#ns-compare")
    page.screenshot(path=ARTIFACTS / "compare.png", full_page=True)


def assert_nothing_ran(page: Page) -> None:
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#ns-overview img, #ns-rate-reveal img, #ns-rate-summary img").count() == 0


def test_a_model_name_made_of_markup_stays_text_in_the_overview_the_reveal_and_the_summary(site, page):
    url, _, _ = site
    page.goto(url + f"?view=overview&model={quote(EVIL, safe='')}")
    page.wait_for_function(
        "t => document.querySelector('#ns-overview .ns-title')?.innerText.startsWith(t)", arg=f"{EVIL}: 1 layers"
    )
    assert_nothing_ran(page)
    page.goto(url + "?view=rate")  # a new rater: strata in turn, the sixth is the markup model's only one
    for _ in range(6):
        page.click("#ns-rate-next")
        page.wait_for_selector("#ns-rate-reveal .ns-reveal", state="detached")
        page.wait_for_selector("#ns-rate-sample .ns-ex")
        answer(page, "Unsure")
        if EVIL in page.inner_text("#ns-rate-reveal"):
            break
    assert f"That was {EVIL} · layer 0" in page.inner_text("#ns-rate-reveal")
    page.wait_for_function("t => document.querySelector('#ns-rate-summary')?.innerText.includes(t)", arg=EVIL)
    assert_nothing_ran(page)
