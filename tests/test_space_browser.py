"""The real page in Debian's chromium through Playwright: deep links, moves, search, hostile data, short links.

Screenshots go to artifacts/space/ (gitignored) for a human to look at.
"""

from __future__ import annotations

import re

import pytest
from huggingface_hub import constants
from playwright.sync_api import Page, sync_playwright

from hub_sync.synthetic import (
    HOSTILE_EXPLANATIONS,
    HOSTILE_TOKENS,
    write_synthetic_dataset,
    write_synthetic_explanations,
)
from space.explainer import LiveExplainer
from space.server import build_app, running
from space.sources import open_sources
from space.views import RESULT_COLUMNS
from testkit.browser import ARTIFACTS, CHROMIUM_ARGS, ensure_chromium, query
from testkit.openai_server import Fault, OpenAIServer
from testkit.planted import write_planted_dataset

pytestmark = pytest.mark.slow

RESULT_CELL = "#ns-results [data-testid=cell-{row}-{col}]"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("space_browser")
    plain = write_synthetic_dataset(
        root / "plain", n_layers=3, d_mlp=20, window=40, top_k=8, random_k=4, name="org/plain", seed=3
    )
    hostile = write_synthetic_dataset(
        root / "hostile", n_layers=2, d_mlp=16, bottom_k=2, d_vocab=10, hostile=True, name="org/hostile"
    )
    catalog = open_sources([str(plain), str(hostile), str(root / "missing")])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running(build_app(catalog)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=ensure_chromium(), args=CHROMIUM_ARGS)
        yield url, browser
        browser.close()


@pytest.fixture
def page(site) -> Page:
    _, browser = site
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def open_app(page: Page, url: str, link: str) -> None:
    page.goto(url + link)
    page.wait_for_selector(".ns-title")


def title(page: Page) -> str:
    return page.inner_text(".ns-title")


def wait_for_title(page: Page, text: str) -> None:
    page.wait_for_function("t => document.querySelector('.ns-title')?.innerText === t", arg=text)


def test_deep_link_opens_the_neuron_and_moves_update_the_url(site, page):
    url, _ = site
    open_app(page, url, "?model=org/plain&layer=1&neuron=5&__sign=keep-me")
    assert title(page) == "org/plain · layer 1 · neuron 5"
    page.locator(".ns-ex summary").first.click()
    page.screenshot(path=ARTIFACTS / "neuron_page.png", full_page=True)
    page.click("#ns-next")
    wait_for_title(page, "org/plain · layer 1 · neuron 6")
    page.wait_for_function("() => new URLSearchParams(location.search).get('neuron') === '6'")
    assert query(page) == {"model": "org/plain", "layer": "1", "neuron": "6", "__sign": "keep-me"}
    page.click("#ns-prev")
    page.click("#ns-prev")
    wait_for_title(page, "org/plain · layer 1 · neuron 4")
    page.wait_for_function("() => new URLSearchParams(location.search).get('neuron') === '4'")
    page.click("#ns-random")
    page.wait_for_timeout(1500)
    page.wait_for_function(
        "() => { const p = new URLSearchParams(location.search); return document.querySelector('.ns-title').innerText"
        " === `${p.get('model')} · layer ${p.get('layer')} · neuron ${p.get('neuron')}`; }"
    )
    shown = title(page)
    page.click("#ns-copy")
    page.wait_for_function(
        "() => (document.querySelector('#ns-link textarea, #ns-link input')?.value || '').includes('neuron=')"
    )
    link = page.input_value("#ns-link textarea, #ns-link input")
    assert "__sign" not in link and link.startswith(url)
    assert page.input_value("#ns-card textarea, #ns-card input").startswith(url + "n/org/plain/")
    page.reload()
    page.wait_for_selector(".ns-title")
    assert title(page) == shown and query(page)["__sign"] == "keep-me"


def test_bad_deep_link_shows_a_message_and_a_valid_neuron(site, page):
    url, _ = site
    open_app(page, url, "?model=org/plain&layer=7&neuron=abc")
    assert title(page) == "org/plain · layer 0 · neuron 0"
    notice = page.inner_text("#ns-notice")
    assert "Layer '7' is not in 'org/plain'" in notice and "Neuron 'abc'" in notice
    page.wait_for_function("() => new URLSearchParams(location.search).get('layer') === '0'")
    assert "missing" in page.inner_text("#ns-unavailable")


def test_search_then_clicking_a_result_opens_the_neuron(site, page):
    url, _ = site
    page.goto(url + "?q=TOK9")
    page.wait_for_selector(RESULT_CELL.format(row=1, col=0))
    page.screenshot(path=ARTIFACTS / "search.png", full_page=True)
    model, layer, neuron = (page.inner_text(RESULT_CELL.format(row=1, col=col)).strip() for col in range(3))
    snippet = page.inner_text(RESULT_CELL.format(row=1, col=RESULT_COLUMNS.index("top example")))
    assert re.search(r"⟦[^⟧]+⟧", snippet), snippet  # the top example around its peak, the peak marked
    page.click(RESULT_CELL.format(row=1, col=2))
    wait_for_title(page, f"{model} · layer {layer} · neuron {neuron}")
    page.wait_for_function("() => !new URLSearchParams(location.search).has('q')")
    assert query(page) == {"model": model, "layer": layer, "neuron": neuron}


def test_hostile_dataset_executes_nothing_and_shows_its_strings(site, page):
    url, _ = site
    shown = ""
    for neuron in range(0, 16, 3):
        open_app(page, url, f"?model=org/hostile&layer=1&neuron={neuron}")
        page.locator(".ns-ex summary").first.click()
        shown += page.inner_text("#ns-page")
        assert page.evaluate("typeof window.__pwned") == "undefined"
    page.screenshot(path=ARTIFACTS / "hostile.png", full_page=True)
    for token in HOSTILE_TOKENS[:3]:
        assert token in shown
    assert page.locator("#ns-page img, #ns-page script, #ns-page b:text('bold')").count() == 0
    page.goto(url + "?q=" + HOSTILE_TOKENS[1].replace('"', "%22").replace("=", "%3D").replace(" ", "%20"))
    page.wait_for_selector(RESULT_CELL.format(row=0, col=0))
    assert HOSTILE_TOKENS[1] in page.inner_text("#ns-results")
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_short_link_card_and_redirect(site, page):
    url, _ = site
    card = page.request.get(url + "n/org/plain/2/7")
    tags = dict(re.findall(r'<meta property="(og:[a-z:]+)" content="([^"]*)"', card.text()))
    assert {"og:title", "og:description", "og:image"} <= set(tags)
    image = page.request.get(tags["og:image"])
    assert image.headers["content-type"] == "image/png" and image.body()[:8] == b"\x89PNG\r\n\x1a\n"
    (ARTIFACTS / "card.png").write_bytes(image.body())
    page.goto(url + "n/org/plain/2/7")
    page.wait_for_selector(".ns-title")
    assert title(page) == "org/plain · layer 2 · neuron 7"


def test_forged_forwarded_headers_run_nothing_and_the_short_link_still_opens_the_neuron(site, page):
    url, _ = site
    forged = {"x-forwarded-proto": "javascript", "x-forwarded-host": "x/%0Awindow.__pwned=1//"}
    page.route(url + "n/**", lambda route: route.continue_(headers={**route.request.headers, **forged}))
    page.goto(url + "n/org/plain/2/7")
    page.wait_for_selector(".ns-title")
    assert title(page) == "org/plain · layer 2 · neuron 7"
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_inside_the_spaces_iframe_moves_are_posted_to_the_parent(site, page):
    url, _ = site
    parent = "https://huggingface.co/spaces/org/neuroscope"
    body = (
        "<script>window.got = []; addEventListener('message', (e) => window.got.push(e.data));</script>"
        f'<iframe src="{url}?model=org/plain&layer=0&neuron=2&__sign=secret" width="1200" height="800"></iframe>'
    )
    page.route(parent, lambda route: route.fulfill(status=200, content_type="text/html", body=body))
    page.goto(parent)
    app = page.frame_locator("iframe")
    app.locator(".ns-title").wait_for()
    app.locator("#ns-next").click()
    page.wait_for_function("() => window.got.some((d) => d.queryString === '?model=org%2Fplain&layer=0&neuron=3')")
    assert not any("__sign" in str(message) for message in page.evaluate("window.got"))


@pytest.fixture(scope="module")
def explained_site(site, tmp_path_factory):
    """A dataset with hostile explanations, served twice: explaining live through the suite's scripted OpenAI-compatible
    server, and with no explainer configured; in the browser of `site` (one Playwright per process)."""
    root = tmp_path_factory.mktemp("explained_browser")
    explained = write_synthetic_dataset(root / "explained", n_layers=1, d_mlp=12, name="org/explained", seed=4)
    write_synthetic_explanations(explained, hostile=True)
    planted = write_planted_dataset(root / "planted", d_mlp=4, top_k=4, random_k=4)
    catalog = open_sources([str(explained), str(planted)])
    with pytest.MonkeyPatch.context() as patch, OpenAIServer(None) as llm:
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        environ = {
            "NEUROSCOPE_EXPLAINER_URL": llm.base_url,
            "NEUROSCOPE_EXPLAINER_MODEL": "scripted",
            "NEUROSCOPE_EXPLAINER_SCORERS": "detection",
        }
        explaining = running(build_app(catalog, (), LiveExplainer.from_env(environ)))
        with explaining as url, running(build_app(catalog)) as off_url:
            yield url, off_url, site[1], llm


@pytest.fixture
def explained_page(explained_site) -> Page:
    browser = explained_site[2]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def test_hostile_explanations_execute_nothing_and_show_literally(explained_site, explained_page):
    url, _, _, _ = explained_site
    page = explained_page
    shown = ""
    for neuron in range(len(HOSTILE_EXPLANATIONS)):
        open_app(page, url, f"?model=org/explained&layer=0&neuron={neuron}")
        page.wait_for_selector(".ns-expl-text")
        shown += page.inner_text(".ns-expls")
        assert page.evaluate("typeof window.__pwned") == "undefined"
    page.screenshot(path=ARTIFACTS / "explanations.png", full_page=True)
    for text in HOSTILE_EXPLANATIONS:
        assert text in shown
    assert page.locator("#ns-page img, #ns-page script, #ns-page b:text('bold')").count() == 0
    page.goto(url + "?q=onerror")
    page.wait_for_selector(RESULT_CELL.format(row=0, col=0))
    assert HOSTILE_EXPLANATIONS[0] in page.inner_text("#ns-results")
    page.screenshot(path=ARTIFACTS / "search_explanations.png", full_page=True)
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_explain_button_shows_a_live_explanation_that_a_move_clears(explained_site, explained_page):
    url, _, _, llm = explained_site
    page = explained_page
    llm.reset()
    llm.script(Fault("reply", text=HOSTILE_EXPLANATIONS[1]))
    llm.always(Fault("reply", text="yes"))
    open_app(page, url, "?model=planted/model&layer=0&neuron=0")
    assert "not saved" in page.inner_text("#ns-explain-status")
    page.click("#ns-explain")
    page.wait_for_selector("#ns-explain-result .ns-expl-text")
    assert page.inner_text("#ns-explain-result .ns-expl-text") == HOSTILE_EXPLANATIONS[1]
    assert "detection 0.50" in page.inner_text("#ns-explain-result")
    assert "not saved" in page.inner_text("#ns-explain-notice")
    page.screenshot(path=ARTIFACTS / "explain_live.png", full_page=True)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    page.click("#ns-next")
    wait_for_title(page, "planted/model · layer 0 · neuron 1")
    page.wait_for_function("() => !document.querySelector('#ns-explain-result .ns-expl-text')")
    llm.reset()


def test_without_an_explainer_the_button_is_off_with_a_line_saying_how(explained_site, explained_page):
    _, off_url, _, _ = explained_site
    page = explained_page
    open_app(page, off_url, "?model=org/explained&layer=0&neuron=4")
    assert page.locator("#ns-explain").is_disabled()
    assert "NEUROSCOPE_EXPLAINER_URL" in page.inner_text("#ns-explain-status")
