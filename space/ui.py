"""The Gradio Blocks: a neuron page and a search tab, deep links, named API endpoints, room for more tabs.

Every move runs a `js=` step that writes the view into the address bar (keeping query keys that are
not ours, such as Spaces' `__sign`) and, inside the Spaces iframe, tells the parent page.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from space.building import follow_building
from space.explainer import LiveExplainer, explain_view
from space.links import resolve_query, shown
from space.render import message_html
from space.search import SORT_KEYS
from space.sources import Catalog
from space.views import (
    RESULT_COLUMNS,
    RESULT_TYPES,
    NeuronView,
    neuron_view,
    page_for,
    random_view,
    search_view,
    stepped_view,
)

HUB_ORIGIN = "https://huggingface.co"
# The live explanation queues in its own group, one at a time: each is many requests to a paid or shared server.
EXPLAIN_EVENTS = {"concurrency_id": "explain", "concurrency_limit": 1}
CLEAR_TWO_JS = "() => ['', '']"


def url_update_js(
    set_keys: Sequence[str],
    drop_keys: Sequence[str] = (),
    only_if_named: Sequence[str] = (),
    fixed: dict | None = None,
    dropped_by_view: dict[str, Sequence[str]] | None = None,
) -> str:
    """A JS event function: put its arguments into the URL under `set_keys` (and the `fixed` keys' values), drop
    `drop_keys` and the keys `dropped_by_view` names for the URL's `view`, tell the parent. With `only_if_named`, it
    does nothing unless the URL holds one of those keys."""
    by_view = {view: list(keys) for view, keys in (dropped_by_view or {}).items()}
    return f"""(...values) => {{
  const url = new URL(window.location.href);
  const named = {json.dumps(list(only_if_named))};
  if (named.length && !named.some((key) => url.searchParams.has(key))) return [];
  const keys = {json.dumps(list(set_keys))};
  keys.forEach((key, i) => {{
    const value = values[i];
    if (value === null || value === undefined || value === "") url.searchParams.delete(key);
    else url.searchParams.set(key, String(value));
  }});
  Object.entries({json.dumps(fixed or {})}).forEach(([key, value]) => url.searchParams.set(key, value));
  {json.dumps(list(drop_keys))}.forEach((key) => url.searchParams.delete(key));
  ({json.dumps(by_view)}[url.searchParams.get("view")] || []).forEach((key) => url.searchParams.delete(key));
  window.history.replaceState(window.history.state, "", url);
  if (window.parent !== window) {{
    const shared = new URLSearchParams(url.search);
    shared.delete("__sign");
    const query = shared.toString();
    window.parent.postMessage({{queryString: query ? "?" + query : ""}}, {json.dumps(HUB_ORIGIN)});
  }}
  return [];
}}"""


def after_landing(js: str) -> str:
    """The JS event function, run only once the page has read its link: Gradio fires the first tab's select as it
    mounts, before the link is read, and a URL written then would change where the link lands."""
    return f"(...values) => window.__neuroscopeLanded ? ({js})(...values) : []"


def landing(js: str) -> str:
    """The JS event function that runs once the page has read its link, marking it landed."""
    return f"(...values) => {{ window.__neuroscopeLanded = true; return ({js})(...values); }}"


COPY_LINK_JS = f"""(model, layer, neuron) => {{
  let base = window.location.origin + window.location.pathname;
  if (window.parent !== window && document.referrer.startsWith({json.dumps(HUB_ORIGIN + "/spaces/")})) {{
    const parent = new URL(document.referrer);
    base = parent.origin + parent.pathname;
  }}
  const link = new URL(base);
  link.search = new URLSearchParams({{model: model, layer: String(layer), neuron: String(neuron)}}).toString();
  const card = new URL(window.location.origin);
  card.pathname = "/n/" + model.split("/").map(encodeURIComponent).join("/") + "/" + layer + "/" + neuron;
  if (navigator.clipboard) navigator.clipboard.writeText(link.toString()).catch(() => {{}});
  return [link.toString(), card.toString()];
}}"""


@dataclass(frozen=True)
class NeuronControls:
    """The current neuron's components, for extra tabs that act on it (the live tabs), and `open_neuron`:
    `open_neuron(trigger, fn, inputs)` makes the event show the neuron `fn` returns as (model, layer, neuron) on the
    Neuron tab, like any move (the URL follows). `fn` may take gr.EventData like any event function."""

    blocks: gr.Blocks
    model: gr.Dropdown
    layer: gr.Number
    neuron: gr.Number
    open_neuron: Callable[[Callable, Callable, list], None]


@dataclass(frozen=True)
class ExtraTab:
    """A tab added after the built-in ones (before them with `first`): `build` runs inside `with gr.Tab(title)`."""

    title: str
    build: Callable[[Catalog, NeuronControls], None]
    id: str | None = None
    opened_by: str | None = None  # a deep-link query key that opens this tab (the live tab's `text`)
    first: bool = False  # placed before the Neuron and Search tabs
    landing: bool = False  # the tab a link that names no neuron, search or tab opens (else the Neuron tab)
    hides: tuple[str, ...] = ()  # query keys dropped from the URL when the tab is selected or a link opens it


NEURON_KEYS = ("model", "layer", "neuron")


def opened_tab(params: dict[str, str], extra_tabs: Sequence[ExtraTab]) -> tuple[str, list[str]]:
    """The tab a deep link opens: `view=<tab id>`, else search for `q`, a tab's own key (`text`), the Neuron tab for
    a named neuron, and the landing tab when the link names nothing; and a message for an unknown view."""
    ids = ["neuron", "search", *(tab.id for tab in extra_tabs if tab.id)]
    view = params.get("view")
    if view in ids:
        return view, []
    messages = [] if view is None else [f"Unknown view {shown(view)} (views: {', '.join(ids)})."]
    if "q" in params:
        return "search", messages
    keyed = next((tab.id for tab in extra_tabs if tab.opened_by and tab.opened_by in params), None)
    if keyed or any(key in params for key in NEURON_KEYS):
        return keyed or "neuron", messages
    return landing_tab(extra_tabs), messages


def landing_tab(extra_tabs: Sequence[ExtraTab]) -> str:
    return next((tab.id for tab in extra_tabs if tab.landing and tab.id), "neuron")


def link_textbox(placeholder: str, elem_id: str) -> gr.Textbox:
    """A read-only box for a link the page writes (the neuron's, its card's)."""
    return gr.Textbox(show_label=False, placeholder=placeholder, interactive=False, scale=3, elem_id=elem_id)


def _neuron_outputs(view: NeuronView) -> tuple:
    if view.ref is None:
        return None, None, None, view.notice, view.page
    return view.ref.model, view.ref.layer, view.ref.neuron, view.notice, view.page


def build_blocks(
    catalog: Catalog, extra_tabs: Sequence[ExtraTab] = (), explainer: LiveExplainer | None = None
) -> gr.Blocks:
    """The whole app over an opened catalog; `extra_tabs` come after Neuron and Search (those marked `first` before);
    `explainer` (default: off) runs the Neuron tab's "Explain this neuron".

    Number boxes keep Gradio's precision unset: precision=0 would round 3.5 to 4 before the views see it,
    and the views apply the one number rule (space.links.parse_int) with a message instead."""
    explainer = explainer or LiveExplainer(None)
    names = catalog.model_names
    all_layers = [layer for dataset in catalog.models.values() for layer in dataset.layers]
    rng = random.Random()

    def show_neuron(model: str | None, layer: int | None, neuron: int | None):
        return _neuron_outputs(neuron_view(catalog, model, layer, neuron))

    def next_neuron(model: str | None, layer: int | None, neuron: int | None):
        return _neuron_outputs(stepped_view(catalog, model, layer, neuron, +1))

    def previous_neuron(model: str | None, layer: int | None, neuron: int | None):
        return _neuron_outputs(stepped_view(catalog, model, layer, neuron, -1))

    def random_neuron(model: str | None):
        return _neuron_outputs(random_view(catalog, model, rng))

    def search(keyword: str, models: list[str] | None, layer_min: int | None, layer_max: int | None, sort: str):
        return search_view(catalog, keyword, models, layer_min, layer_max, sort)

    def explain(model: str | None, layer: int | None, neuron: int | None):
        return explain_view(catalog, explainer, model, layer, neuron)

    def result_neuron(results: pd.DataFrame, event: gr.SelectData):
        return event.row_value[:3] if event.row_value else (None, None, None)

    def open_link(request: gr.Request):
        params = dict(request.query_params) if request else {}
        ref, messages = resolve_query(catalog, params)
        neuron_outputs = _neuron_outputs(page_for(catalog, ref, messages))
        opened, view_messages = opened_tab(params, extra_tabs)
        banner_html = message_html(catalog.unavailable_messages() + view_messages)
        keyword = params.get("q")
        if keyword is None:
            return banner_html, *neuron_outputs, "", "", pd.DataFrame(columns=RESULT_COLUMNS), gr.Tabs(selected=opened)
        notice, results = search_view(catalog, keyword, None, None, None, "max")
        return banner_html, *neuron_outputs, keyword, notice, results, gr.Tabs(selected=opened)

    def open_neuron(trigger: Callable, fn: Callable, inputs: list) -> None:
        @functools.wraps(fn)
        def opened(*args, **kwargs):
            model, layer, neuron = fn(*args, **kwargs)
            return *_neuron_outputs(neuron_view(catalog, model, layer, neuron)), gr.Tabs(selected="neuron")

        trigger(opened, inputs, [*neuron_outputs, tabs], api_visibility="private").then(
            None, here, None, js=neuron_url_js
        ).then(None, None, [explain_notice, explain_result], js=CLEAR_TWO_JS)

    neuron_url_js = url_update_js(NEURON_KEYS, drop_keys=["q", "view"])
    link_keys = [*NEURON_KEYS, "q", *(tab.opened_by for tab in extra_tabs if tab.opened_by)]
    # A link that names a neuron gets the neuron it resolved to, but a tab that hides keys keeps them out as it would
    # on select: `?view=overview&model=M` stays that, not `...&layer=0&neuron=0`.
    hidden_by_view = {tab.id: tab.hides for tab in extra_tabs if tab.id}
    landing_url_js = url_update_js([*NEURON_KEYS, "q"], only_if_named=link_keys, dropped_by_view=hidden_by_view)

    def extra(placed_first: bool) -> None:
        for tab in (tab for tab in extra_tabs if tab.first == placed_first):
            with gr.Tab(tab.title, id=tab.id) as tab_block:
                tab.build(catalog, controls)
            if tab.id:  # selecting a tab puts it in the link: `view=<id>`
                tab_block.select(
                    None, None, None, js=after_landing(url_update_js([], drop_keys=tab.hides, fixed={"view": tab.id}))
                )

    with gr.Blocks(title="Neuroscope Hub") as blocks:
        banner = gr.HTML(message_html(catalog.unavailable_messages()), elem_id="ns-unavailable")
        # Created before the tabs (placed in the Neuron tab) so that a tab placed first can open a neuron (and clear
        # the explanation shown for the previous one).
        model_box = gr.Dropdown(
            names,
            value=names[0] if names else None,
            label="Model",
            allow_custom_value=True,
            scale=3,
            elem_id="ns-model",
            render=False,
        )
        layer_box = gr.Number(label="Layer", scale=1, elem_id="ns-layer", render=False)
        neuron_box = gr.Number(label="Neuron", scale=1, elem_id="ns-neuron", render=False)
        notice = gr.HTML(elem_id="ns-notice", render=False)
        page = gr.HTML(elem_id="ns-page", render=False)
        explain_notice = gr.HTML(elem_id="ns-explain-notice", render=False)
        explain_result = gr.HTML(elem_id="ns-explain-result", render=False)
        here = [model_box, layer_box, neuron_box]
        neuron_outputs = [model_box, layer_box, neuron_box, notice, page]
        with gr.Tabs(selected=landing_tab(extra_tabs)) as tabs:
            controls = NeuronControls(blocks, model_box, layer_box, neuron_box, open_neuron)
            extra(placed_first=True)
            with gr.Tab("Neuron", id="neuron") as neuron_tab:
                with gr.Row():
                    model_box.render()
                    layer_box.render()
                    neuron_box.render()
                with gr.Row():
                    go_button = gr.Button("Go", variant="primary", size="sm", elem_id="ns-go")
                    previous_button = gr.Button("◀ Previous", size="sm", elem_id="ns-prev")
                    next_button = gr.Button("Next ▶", size="sm", elem_id="ns-next")
                    random_button = gr.Button("Random", size="sm", elem_id="ns-random")
                with gr.Row(equal_height=True):
                    copy_button = gr.Button("Copy link", size="sm", scale=1, elem_id="ns-copy")
                    link_box = link_textbox("link to this neuron", "ns-link")
                    card_box = link_textbox("card link for forums", "ns-card")
                with gr.Row():
                    explain_button = gr.Button(
                        "Explain this neuron",
                        size="sm",
                        scale=0,
                        min_width=180,
                        interactive=explainer.enabled,
                        elem_id="ns-explain",
                    )
                    gr.HTML(explainer.status_html(), elem_id="ns-explain-status")
                explain_notice.render()
                explain_result.render()
                explain_values = gr.JSON(visible=False)
                notice.render()
                page.render()
            with gr.Tab("Search", id="search") as search_tab:
                with gr.Row():
                    keyword_box = gr.Textbox(
                        label="Peak token or explanation words",
                        placeholder="e.g. the, def, (, dog, or pri* for every token or word starting with pri",
                        scale=3,
                        elem_id="ns-q",
                    )
                    models_filter = gr.Dropdown(names, multiselect=True, label="Models (all if empty)", scale=2)
                    layer_min = gr.Number(min(all_layers, default=0), label="From layer", scale=1)
                    layer_max = gr.Number(max(all_layers, default=0), label="To layer", scale=1)
                    sort_box = gr.Radio(list(SORT_KEYS), value="max", label="Sort by", scale=2)
                search_button = gr.Button("Search", variant="primary", size="sm", elem_id="ns-search")
                search_notice = gr.HTML(elem_id="ns-search-notice")
                results = gr.Dataframe(
                    headers=RESULT_COLUMNS, datatype=RESULT_TYPES, interactive=False, wrap=True, elem_id="ns-results"
                )
            extra(placed_first=False)

        neuron_tab.select(None, here, None, js=after_landing(neuron_url_js))
        search_tab.select(None, None, None, js=after_landing(url_update_js([], fixed={"view": "search"})))
        moves = [
            (go_button.click, show_neuron, here, "neuron"),
            (layer_box.submit, show_neuron, here, False),
            (neuron_box.submit, show_neuron, here, False),
            (model_box.input, show_neuron, here, False),
            (next_button.click, next_neuron, here, "next"),
            (previous_button.click, previous_neuron, here, "previous"),
            (random_button.click, random_neuron, [model_box], "random"),
        ]
        for trigger, fn, inputs, api_name in moves:
            visibility = "public" if api_name else "private"
            trigger(fn, inputs, neuron_outputs, api_name=api_name or None, api_visibility=visibility).then(
                None, here, None, js=neuron_url_js
            ).then(None, None, [explain_notice, explain_result], js=CLEAR_TWO_JS)
        explain_button.click(
            explain, here, [explain_notice, explain_result, explain_values], api_name="explain", **EXPLAIN_EVENTS
        )
        search_inputs = [keyword_box, models_filter, layer_min, layer_max, sort_box]
        for trigger, api_name in ((search_button.click, "search"), (keyword_box.submit, None)):
            trigger(
                search,
                search_inputs,
                [search_notice, results],
                api_name=api_name,
                api_visibility="public" if api_name else "private",
            ).then(None, [keyword_box], None, js=url_update_js(["q"]))
        open_neuron(results.select, result_neuron, [results])
        copy_button.click(None, here, [link_box, card_box], js=COPY_LINK_JS)
        blocks.load(
            open_link,
            None,
            [banner, *neuron_outputs, keyword_box, search_notice, results, tabs],
            api_visibility="private",
        ).then(None, [*here, keyword_box], None, js=landing(landing_url_js))
        follow_building(catalog, banner, model_box, models_filter, (layer_min, layer_max), neuron_outputs[1:])
    return blocks
