"""The Gradio Blocks: a neuron page and a search tab, deep links, named API endpoints, room for more tabs.

Every move runs a `js=` step that writes the view into the address bar (keeping query keys that are
not ours, such as Spaces' `__sign`) and, inside the Spaces iframe, tells the parent page.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from space.building import follow_building
from space.explainer import LiveExplainer, explain_view
from space.links import resolve_query
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


def url_update_js(set_keys: Sequence[str], drop_keys: Sequence[str] = ()) -> str:
    """A JS event function: put its arguments into the URL under `set_keys`, drop `drop_keys`, tell the parent."""
    return f"""(...values) => {{
  const url = new URL(window.location.href);
  const keys = {json.dumps(list(set_keys))};
  keys.forEach((key, i) => {{
    const value = values[i];
    if (value === null || value === undefined || value === "") url.searchParams.delete(key);
    else url.searchParams.set(key, String(value));
  }});
  {json.dumps(list(drop_keys))}.forEach((key) => url.searchParams.delete(key));
  window.history.replaceState(window.history.state, "", url);
  if (window.parent !== window) {{
    const shared = new URLSearchParams(url.search);
    shared.delete("__sign");
    const query = shared.toString();
    window.parent.postMessage({{queryString: query ? "?" + query : ""}}, {json.dumps(HUB_ORIGIN)});
  }}
  return [];
}}"""


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
    """The current neuron's components, for extra tabs that act on it (the live tabs)."""

    blocks: gr.Blocks
    model: gr.Dropdown
    layer: gr.Number
    neuron: gr.Number


@dataclass(frozen=True)
class ExtraTab:
    """A tab added after the built-in ones: `build` runs inside `with gr.Tab(title)`."""

    title: str
    build: Callable[[Catalog, NeuronControls], None]
    id: str | None = None
    opened_by: str | None = None  # a deep-link query key that opens this tab (the live tab's `text`)


def _neuron_outputs(view: NeuronView) -> tuple:
    if view.ref is None:
        return None, None, None, view.notice, view.page
    return view.ref.model, view.ref.layer, view.ref.neuron, view.notice, view.page


def build_blocks(
    catalog: Catalog, extra_tabs: Sequence[ExtraTab] = (), explainer: LiveExplainer | None = None
) -> gr.Blocks:
    """The whole app over an opened catalog; `extra_tabs` come after Neuron and Search; `explainer` (default: off)
    runs the Neuron tab's "Explain this neuron".

    Number boxes keep Gradio's precision unset: precision=0 would round 3.5 to 4 before the views see it,
    and the views apply the one number rule (space.links.parse_int) with a message instead."""
    names = catalog.model_names
    all_layers = [layer for dataset in catalog.models.values() for layer in dataset.layers]
    rng = random.Random()
    explainer = explainer or LiveExplainer(None)

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

    def open_result(results: pd.DataFrame, event: gr.SelectData):
        model, layer, neuron = event.row_value[:3] if event.row_value else (None, None, None)
        return *_neuron_outputs(neuron_view(catalog, model, layer, neuron)), gr.Tabs(selected="neuron")

    def open_link(request: gr.Request):
        params = dict(request.query_params) if request else {}
        ref, messages = resolve_query(catalog, params)
        neuron_outputs = _neuron_outputs(page_for(catalog, ref, messages))
        banner_html = message_html(catalog.unavailable_messages())
        keyword = params.get("q")
        if keyword is None:
            opened = next((tab.id for tab in extra_tabs if tab.opened_by and tab.opened_by in params), "neuron")
            return banner_html, *neuron_outputs, "", "", pd.DataFrame(columns=RESULT_COLUMNS), gr.Tabs(selected=opened)
        notice, results = search_view(catalog, keyword, None, None, None, "max")
        return banner_html, *neuron_outputs, keyword, notice, results, gr.Tabs(selected="search")

    with gr.Blocks(title="Neuroscope Hub") as blocks:
        banner = gr.HTML(message_html(catalog.unavailable_messages()), elem_id="ns-unavailable")
        with gr.Tabs(selected="neuron") as tabs:
            with gr.Tab("Neuron", id="neuron"):
                with gr.Row():
                    model_box = gr.Dropdown(names, value=names[0] if names else None, label="Model", allow_custom_value=True, scale=3, elem_id="ns-model")
                    layer_box = gr.Number(label="Layer", scale=1, elem_id="ns-layer")
                    neuron_box = gr.Number(label="Neuron", scale=1, elem_id="ns-neuron")
                with gr.Row():
                    go_button = gr.Button("Go", variant="primary", size="sm", elem_id="ns-go")
                    previous_button = gr.Button("◀ Previous", size="sm", elem_id="ns-prev")
                    next_button = gr.Button("Next ▶", size="sm", elem_id="ns-next")
                    random_button = gr.Button("Random", size="sm", elem_id="ns-random")
                with gr.Row(equal_height=True):
                    copy_button = gr.Button("Copy link", size="sm", scale=1, elem_id="ns-copy")
                    link_box = gr.Textbox(show_label=False, placeholder="link to this neuron", interactive=False, scale=3, elem_id="ns-link")
                    card_box = gr.Textbox(show_label=False, placeholder="card link for forums", interactive=False, scale=3, elem_id="ns-card")
                with gr.Row():
                    explain_button = gr.Button(
                        "Explain this neuron", size="sm", scale=0, min_width=180, interactive=explainer.enabled,
                        elem_id="ns-explain",
                    )
                    gr.HTML(explainer.status_html(), elem_id="ns-explain-status")
                explain_notice = gr.HTML(elem_id="ns-explain-notice")
                explain_result = gr.HTML(elem_id="ns-explain-result")
                explain_values = gr.JSON(visible=False)
                notice = gr.HTML(elem_id="ns-notice")
                page = gr.HTML(elem_id="ns-page")
            with gr.Tab("Search", id="search"):
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
            controls = NeuronControls(blocks, model_box, layer_box, neuron_box)
            for tab in extra_tabs:
                with gr.Tab(tab.title, id=tab.id):
                    tab.build(catalog, controls)

        here = [model_box, layer_box, neuron_box]
        neuron_outputs = [model_box, layer_box, neuron_box, notice, page]
        neuron_url_js = url_update_js(["model", "layer", "neuron"], drop_keys=["q"])
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
            trigger(search, search_inputs, [search_notice, results], api_name=api_name, api_visibility="public" if api_name else "private").then(
                None, [keyword_box], None, js=url_update_js(["q"])
            )
        results.select(open_result, [results], [*neuron_outputs, tabs], api_visibility="private").then(
            None, here, None, js=neuron_url_js
        ).then(None, None, [explain_notice, explain_result], js=CLEAR_TWO_JS)
        copy_button.click(None, here, [link_box, card_box], js=COPY_LINK_JS)
        blocks.load(
            open_link, None, [banner, *neuron_outputs, keyword_box, search_notice, results, tabs], api_visibility="private"
        ).then(None, [*here, keyword_box], None, js=url_update_js(["model", "layer", "neuron", "q"]))
        follow_building(catalog, banner, model_box, models_filter, (layer_min, layer_max), neuron_outputs[1:])
    return blocks
