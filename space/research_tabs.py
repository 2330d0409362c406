"""The tabs for finding interesting neurons: Overview (where a visitor lands), Rate (blind) and Compare.

Each view is a named endpoint (/overview, /rating_sample, /rate, /rating_summary, /compare). They only read
datasets and the ratings file, so they run concurrently with everything else; none runs the model.
"""

from __future__ import annotations

import gradio as gr

from space.compare import COMPARE_CSS, compare_view
from space.overview import Overviews
from space.overview_view import ALL_LAYERS, OPEN_NEURON_JS, OVERVIEW_CSS, overview_view
from space.rating import RatingStore
from space.rating_view import rate_view, sample_view, summary_view
from space.sources import Catalog
from space.ui import NEURON_KEYS, ExtraTab, NeuronControls, url_update_js

RATER_STORAGE_KEY = "neuroscope-rater"
# The rater id: the page's, else the one this browser kept; kept again once the server has given one.
RATER_FROM_BROWSER_JS = f"(rater, ...rest) => [rater || localStorage.getItem({RATER_STORAGE_KEY!r}) || '', ...rest]"
RATER_TO_BROWSER_JS = f"(rater) => {{ if (rater) localStorage.setItem({RATER_STORAGE_KEY!r}, rater); return []; }}"
ANSWER_CHOICES = [("Interpretable", "interpretable"), ("Not interpretable", "not"), ("Unsure", "unsure")]

OVERVIEW_HIDES = ("layer", "neuron", "q", "text")  # its link names a model only: ?view=overview&model=M
API_WAIT_S = 120.0  # an API call or a model change waits this long for a model's overview still being computed
POLL_S = 1.5  # the landing page asks again this often until its overview is ready


def layer_choices(catalog: Catalog, model: str | None) -> list[str]:
    dataset = catalog.models.get(model or "")
    return [ALL_LAYERS, *(str(layer) for layer in (dataset.layers if dataset else []))]


def build_overview_tab(overviews: Overviews, catalog: Catalog, controls: NeuronControls) -> None:
    """Model and layer pickers, the overview, its values; a click on a neuron opens it on the Neuron tab."""
    gr.HTML(f"<style>{OVERVIEW_CSS}</style>", padding=False)
    names = catalog.model_names
    with gr.Row():
        model_box = gr.Dropdown(
            names,
            value=names[0] if names else None,
            label="Model",
            scale=3,
            allow_custom_value=True,
            elem_id="ns-ov-model",
        )
        layer_box = gr.Dropdown(
            layer_choices(catalog, names[0] if names else None),
            value=ALL_LAYERS,
            label="Layer",
            scale=1,
            allow_custom_value=True,
            elem_id="ns-ov-layer",
        )
    notice = gr.HTML(elem_id="ns-ov-notice")
    body = gr.HTML(elem_id="ns-overview", js_on_load=OPEN_NEURON_JS)
    with gr.Accordion("Values (JSON)", open=False):
        values = gr.JSON(label="overview")
    poll = gr.Timer(POLL_S, active=False)

    def show(model: str | None, layer: str | None):
        return overview_view(overviews, catalog, model, layer, API_WAIT_S)

    def shown_now(model: str | None, layer: str | None):
        """The view if ready, else the 'being computed' notice and the poll switched on."""
        view = overview_view(overviews, catalog, model, layer, 0)
        return (*view, gr.Timer(active=not view[2].get("ready", True)))

    def reset_layer(model: str | None):
        return gr.Dropdown(choices=layer_choices(catalog, model), value=ALL_LAYERS)

    def open_link(request: gr.Request):
        params = dict(request.query_params) if request else {}
        model = params.get("model") if params.get("model") in catalog.models else (names[0] if names else None)
        return (
            gr.Dropdown(value=model),
            gr.Dropdown(choices=layer_choices(catalog, model), value=ALL_LAYERS),
            *shown_now(params.get("model"), ALL_LAYERS),
        )

    def clicked(event: gr.EventData):
        data = event._data or {}
        return data.get("model"), data.get("layer"), data.get("neuron")

    outputs = [notice, body, values]
    model_box.input(reset_layer, [model_box], [layer_box], api_visibility="private").then(
        show, [model_box, layer_box], outputs, api_name="overview"
    ).then(None, [model_box], None, js=url_update_js(["model"], OVERVIEW_HIDES, fixed={"view": "overview"}))
    layer_box.input(show, [model_box, layer_box], outputs, api_visibility="private")
    poll.tick(shown_now, [model_box, layer_box], [*outputs, poll], api_visibility="private")
    controls.open_neuron(body.click, clicked, [])
    controls.blocks.load(open_link, None, [model_box, layer_box, *outputs, poll], api_visibility="private")


def build_rate_tab(store: RatingStore, catalog: Catalog, controls: NeuronControls) -> None:
    """A blind sample, the answer and a note, the reveal, and the summary. The rater is a random id the server makes
    and the browser keeps in localStorage, so a rater is never shown the same neuron twice across visits. (Not
    gr.BrowserState: inside a tab that is not open when the page loads, its value reached the load event as None.)"""
    where = store.hub.status() if store.hub else "Ratings are kept in this server's ratings folder."
    gr.Markdown(
        "Rate neurons blind, as in the SoLU paper: a random neuron's top and random examples, with no model, layer or "
        f"number, until you answer. Neurons are drawn in turn from each model's early, middle and late layers. {where}"
    )
    rater_box = gr.Textbox(visible=False, label="rater")
    sample_box = gr.Textbox(visible=False, label="sample")
    next_button = gr.Button("Show me a neuron", variant="primary", size="sm", elem_id="ns-rate-next")
    sample_notice = gr.HTML(elem_id="ns-rate-notice")
    examples = gr.HTML(elem_id="ns-rate-sample")
    with gr.Row():
        answer_box = gr.Radio(
            ANSWER_CHOICES, label="Do they share a pattern you could name?", scale=2, elem_id="ns-rate-answer"
        )
        note_box = gr.Textbox(label="Note (optional): the pattern, or why not", scale=3, elem_id="ns-rate-note")
    submit_button = gr.Button("Submit", size="sm", elem_id="ns-rate-submit")
    rate_notice = gr.HTML(elem_id="ns-rate-result-notice")
    reveal = gr.HTML(elem_id="ns-rate-reveal")
    with gr.Accordion("Summary: fraction judged interpretable", open=True):
        summary_button = gr.Button("Refresh", size="sm", elem_id="ns-rate-refresh")
        summary = gr.HTML(elem_id="ns-rate-summary")
        with gr.Accordion("Values (JSON)", open=False):
            summary_values = gr.JSON(label="summary")
    rated = gr.JSON(visible=False)

    def sample(rater: str | None):
        return sample_view(store, catalog, rater)

    def rate(rater: str | None, token: str | None, answer: str | None, note: str | None):
        return rate_view(store, catalog, rater, token, answer, note)

    def cleared():
        return "", "", None, ""

    def refresh():
        return summary_view(store, catalog)

    next_button.click(
        sample,
        [rater_box],
        [rater_box, sample_box, sample_notice, examples],
        api_name="rating_sample",
        js=RATER_FROM_BROWSER_JS,
    ).then(None, [rater_box], None, js=RATER_TO_BROWSER_JS).then(
        cleared, None, [rate_notice, reveal, answer_box, note_box], api_visibility="private"
    )
    submit_button.click(
        rate,
        [rater_box, sample_box, answer_box, note_box],
        [rate_notice, reveal, rated],
        api_name="rate",
        js=RATER_FROM_BROWSER_JS,
    ).then(refresh, None, [summary, summary_values], api_visibility="private")
    summary_button.click(refresh, None, [summary, summary_values], api_name="rating_summary")
    controls.blocks.load(refresh, None, [summary, summary_values], api_visibility="private")


def build_compare_tab(overviews: Overviews, store: RatingStore, catalog: Catalog, controls: NeuronControls) -> None:
    """Pick models; see them side by side."""
    gr.HTML(f"<style>{COMPARE_CSS}</style>", padding=False)
    names = catalog.model_names
    with gr.Row():
        models_box = gr.Dropdown(
            names,
            value=names[:2],
            multiselect=True,
            label="Models",
            scale=4,
            allow_custom_value=True,
            elem_id="ns-compare-models",
        )
        compare_button = gr.Button("Compare", variant="primary", size="sm", scale=1, elem_id="ns-compare-run")
    notice = gr.HTML(elem_id="ns-compare-notice")
    body = gr.HTML(elem_id="ns-compare")
    with gr.Accordion("Values (JSON)", open=False):
        values = gr.JSON(label="compare")

    def compare(models: list[str] | None):
        return compare_view(overviews, store, catalog, models, API_WAIT_S)

    compare_button.click(compare, [models_box], [notice, body, values], api_name="compare")


def research_tabs(store: RatingStore) -> list[ExtraTab]:
    """Overview (placed first, where a link naming nothing lands), Rate and Compare; one Overviews per catalog."""
    overviews: dict[int, Overviews] = {}

    def overviews_of(catalog: Catalog) -> Overviews:
        if id(catalog) not in overviews:
            overviews[id(catalog)] = Overviews(catalog)
            overviews[id(catalog)].start()
        return overviews[id(catalog)]

    return [
        ExtraTab(
            "Overview",
            lambda catalog, controls: build_overview_tab(overviews_of(catalog), catalog, controls),
            id="overview",
            first=True,
            landing=True,
            hides=OVERVIEW_HIDES,
        ),
        ExtraTab(
            "Rate",
            lambda catalog, controls: build_rate_tab(store, catalog, controls),
            id="rate",
            hides=(*NEURON_KEYS, "q", "text"),
        ),
        ExtraTab(
            "Compare",
            lambda catalog, controls: build_compare_tab(overviews_of(catalog), store, catalog, controls),
            id="compare",
            hides=(*NEURON_KEYS, "q", "text"),
        ),
    ]
