"""The live tabs: Live (text -> the current neuron's activations, and the neurons that fire most), Effect
(neurons set to a value on a text -> how the predictions change, and what the model writes) and Finder & probe
(two lists of texts -> separating neurons, and a residual-stream probe by layer).

Each run is a named API endpoint (/activations, /top_neurons, /ablate, /steer, /find, /probe). The model is the
one chosen in the Neuron tab; when it cannot run, the buttons are off and the tab says why. While the embedded
default builds on first launch, they run its model alone (space.live.views.open_target).
A deep link with `&text=...` opens the Live tab and reproduces its view; `&effect=...` does so for the Effect tab
(with `&steer=...`, its continuations too).
"""

from __future__ import annotations

from html import escape

import gradio as gr

from space.links import parse_int, resolve
from space.live import worked_example as example
from space.live.effect_render import EFFECT_CSS
from space.live.effect_views import DEFAULT_NEW_TOKENS, MAX_NEW_TOKENS, ablate_view, steer_view
from space.live.forward import ActivationCache
from space.live.interventions import DEFAULT_INTERVENTION, INTERVENTION_HELP, MAX_NEURONS
from space.live.model import LiveModels
from space.live.render import LIVE_CSS
from space.live.stats import DIRECTIONS
from space.live.texts import MAX_LIST_TOKENS, MAX_TEXTS_PER_LIST, MAX_TOKENS_PER_TEXT
from space.live.views import (
    DEFAULT_COUNT,
    MAX_COUNT,
    LiveContext,
    activations_view,
    find_view,
    probe_view,
    top_neurons_view,
)
from space.render import message_html
from space.sources import Catalog
from space.ui import ExtraTab, NeuronControls, url_update_js

TEXT_KEY = "text"
EFFECT_TEXT_KEY, NEURONS_KEY, INTERVENTION_KEY = "effect", "neurons", "intervention"
STEER_KEY, SEED_KEY = "steer", "seed"
EFFECT_KEYS = [EFFECT_TEXT_KEY, NEURONS_KEY, INTERVENTION_KEY, STEER_KEY, SEED_KEY]
# The events that run the model queue in one group, one at a time (the model lock would serialise them anyway;
# the queue shows waiting users their place and keeps one probe's memory at a time). Views that only read
# datasets stay concurrent.
MODEL_EVENTS = {"concurrency_id": "live-model", "concurrency_limit": 1}
MODEL_ALONE = (
    "While the dataset is built, the live tabs run its model alone (loaded on first use, then kept). What needs the "
    "dataset comes when it is ready: colours on the neuron's dataset range (until then, on your text's), the "
    "ranking relative to each neuron's dataset max, the mean and ×max interventions, and direct logit effects."
)
TEXT_CAP = f"Texts are capped at {MAX_TOKENS_PER_TEXT} tokens (BOS is added, as in the harvest)"
TEXT_CAP_NOTE = f"{TEXT_CAP}; anything cut is named in a notice."
LISTS_CAP_NOTE = (
    f"{TEXT_CAP}, lists at {MAX_TEXTS_PER_LIST} texts, and one run at {MAX_LIST_TOKENS:,} tokens over both lists, "
    "taken from each list in turn (a run at the caps takes seconds on a CPU: see BENCHMARKS.md); anything left out "
    "is named in a notice."
)


def live_status(context: LiveContext, model: str | None) -> tuple[str, bool]:
    """A line saying which model the live tabs run, or why they cannot; and whether they can."""
    ref, _ = resolve(context.catalog, model, None, None)
    if ref is None and context.catalog.still_building:
        return f'<p class="ns-muted">{MODEL_ALONE}</p>', True
    if ref is None:
        return message_html(["Live tabs are off: no dataset is available."]), False
    reason = context.models.known_failure(context.catalog.models[ref.model])
    if reason:
        return message_html([f"Live tabs are off for {ref.model}: {reason}"]), False
    return f'<p class="ns-muted">Runs {escape(ref.model, quote=True)} (loaded on first use, then kept).</p>', True


def _status_outputs(context: LiveContext, model: str | None, buttons: int) -> tuple:
    html, enabled = live_status(context, model)
    return (html, *(gr.Button(interactive=enabled) for _ in range(buttons)))


def count_input(**layout) -> gr.Number:
    """How many neurons a ranking lists (no precision or bounds: the view checks it and says what it changed)."""
    return gr.Number(DEFAULT_COUNT, label=f"Neurons to list (1 to {MAX_COUNT})", **layout)


def text_input(element_id: str) -> gr.Textbox:
    """The box for the text a live view runs on."""
    return gr.Textbox(label="Text", lines=4, placeholder="Type a text to run through the model…", elem_id=element_id)


def html_panes(*element_ids: str) -> list[gr.HTML]:
    """Output panes, one per element id (the browser tests find them by id)."""
    return [gr.HTML(elem_id=element_id) for element_id in element_ids]


def json_values(*labels: str) -> list[gr.JSON]:
    """The views' raw values, folded away under the panes: what the API returns, for copying."""
    with gr.Accordion("Values (JSON)", open=False):
        return [gr.JSON(label=label) for label in labels]


def build_live_tab(context: LiveContext, controls: NeuronControls) -> None:
    """Text box, Run, the current neuron's coloured tokens, and the neurons that fire most on the text."""
    gr.HTML(f"<style>{LIVE_CSS}</style>", padding=False)
    status = gr.HTML(elem_id="ns-live-status")
    text_box = text_input("ns-live-text")
    gr.Markdown(f"Activations of the neuron chosen in the Neuron tab. {TEXT_CAP_NOTE}")
    with gr.Row():
        run_button = gr.Button("Run", variant="primary", size="sm", elem_id="ns-live-run")
        count_box = count_input()
    notice, tokens, top_notice, top_tables = html_panes(
        "ns-live-notice", "ns-live-tokens", "ns-top-notice", "ns-top-neurons"
    )
    values, top_values = json_values("activations", "top neurons")

    def activations(model, layer, neuron, text):
        return activations_view(context, model, layer, neuron, text)

    def top_neurons(model, text, count):
        return top_neurons_view(context, model, text, count)

    def refresh(model):
        return _status_outputs(context, model, 1)

    def open_link(request: gr.Request):
        params = dict(request.query_params) if request else {}
        text = params.get(TEXT_KEY)
        if not text:
            return (*refresh(params.get("model")), "", "", "", {}, "", "", {})
        view = activations_view(context, params.get("model"), params.get("layer"), params.get("neuron"), text)
        top = top_neurons_view(context, params.get("model"), text, DEFAULT_COUNT)
        return (*refresh(params.get("model")), text, *view, *top)

    live_inputs = [controls.model, controls.layer, controls.neuron, text_box]
    run_button.click(activations, live_inputs, [notice, tokens, values], api_name="activations", **MODEL_EVENTS).then(
        top_neurons,
        [controls.model, text_box, count_box],
        [top_notice, top_tables, top_values],
        api_name="top_neurons",
        **MODEL_EVENTS,
    ).then(refresh, [controls.model], [status, run_button], api_visibility="private").then(
        None, live_inputs, None, js=url_update_js(["model", "layer", "neuron", TEXT_KEY], drop_keys=EFFECT_KEYS)
    )
    controls.model.change(refresh, [controls.model], [status, run_button], api_visibility="private")
    controls.blocks.load(
        open_link,
        None,
        [status, run_button, text_box, notice, tokens, values, top_notice, top_tables, top_values],
        api_visibility="private",
    )


def build_effect_tab(context: LiveContext, controls: NeuronControls) -> None:
    """Neurons, an intervention and a text; Ablate (per-token loss change, KL, most-changed predictions beside the
    direct logit effects) and Steer (continuations with and without the intervention)."""
    gr.HTML(f"<style>{LIVE_CSS}{EFFECT_CSS}</style>", padding=False)
    status = gr.HTML(elem_id="ns-effect-status")
    with gr.Row():
        neurons_box = gr.Textbox(
            label=f"Neurons (at most {MAX_NEURONS})",
            placeholder="L3N42, L5N7 (empty: the neuron of the Neuron tab)",
            scale=2,
            elem_id="ns-effect-neurons",
        )
        intervention_box = gr.Textbox(
            DEFAULT_INTERVENTION, label="Intervention", info=INTERVENTION_HELP, scale=2, elem_id="ns-intervention"
        )
    text_box = text_input("ns-effect-text")
    gr.Markdown(
        "Each neuron is set to the value at every position after BOS. **Ablate** runs the text clean and with the "
        "neurons set: each token is coloured by how much harder (orange) or easier (blue) it became to predict. "
        f"**Steer** writes up to {MAX_NEW_TOKENS} tokens after the text with and without them (greedy; with a seed, "
        f"sampled). {TEXT_CAP_NOTE}"
    )
    with gr.Row():
        ablate_button = gr.Button("Ablate", variant="primary", size="sm", elem_id="ns-ablate")
        steer_button = gr.Button("Steer", size="sm", elem_id="ns-steer")
        new_tokens_box = gr.Number(
            DEFAULT_NEW_TOKENS, label=f"New tokens (1 to {MAX_NEW_TOKENS})", elem_id="ns-new-tokens"
        )
        seed_box = gr.Textbox(label="Seed (empty: greedy)", elem_id="ns-seed")  # a Number box sends 0 when empty
    steer_notice, steer_pane, notice, effect_pane = html_panes(  # the short continuations first, the long tables last
        "ns-steer-notice", "ns-steer-result", "ns-effect-notice", "ns-effect-result"
    )
    values, steer_values = json_values("ablate", "steer")

    def ablate(model, neurons, text, intervention, layer=None, neuron=None):
        return ablate_view(context, model, neurons, text, intervention, layer, neuron)

    def steer(model, neurons, text, intervention, new_tokens=DEFAULT_NEW_TOKENS, seed=None, layer=None, neuron=None):
        return steer_view(context, model, neurons, text, intervention, new_tokens, seed, layer, neuron)

    def refresh(model):
        return _status_outputs(context, model, 2)

    def open_link(request: gr.Request):
        params = dict(request.query_params) if request else {}
        return (*refresh(params.get("model")), *effect_link_views(context, params))

    shared = [controls.model, neurons_box, text_box, intervention_box]
    current = [controls.layer, controls.neuron]
    buttons = [status, ablate_button, steer_button]
    link_keys = ["model", NEURONS_KEY, EFFECT_TEXT_KEY, INTERVENTION_KEY, "layer", "neuron"]
    ablate_outputs, steer_outputs = [notice, effect_pane, values], [steer_notice, steer_pane, steer_values]
    ablate_button.click(ablate, [*shared, *current], ablate_outputs, api_name="ablate", **MODEL_EVENTS).then(
        refresh, [controls.model], buttons, api_visibility="private"
    ).then(None, [*shared, *current], None, js=url_update_js(link_keys, [TEXT_KEY, STEER_KEY, SEED_KEY]))
    steer_inputs = [*shared, new_tokens_box, seed_box, *current]
    steer_keys = [*link_keys[:4], STEER_KEY, SEED_KEY, *link_keys[4:]]
    steer_button.click(steer, steer_inputs, steer_outputs, api_name="steer", **MODEL_EVENTS).then(
        refresh, [controls.model], buttons, api_visibility="private"
    ).then(None, steer_inputs, None, js=url_update_js(steer_keys, [TEXT_KEY]))
    controls.model.change(refresh, [controls.model], buttons, api_visibility="private")
    link_inputs = [neurons_box, intervention_box, text_box, new_tokens_box, seed_box]
    controls.blocks.load(
        open_link, None, [*buttons, *link_inputs, *ablate_outputs, *steer_outputs], api_visibility="private"
    )


def effect_link_views(context: LiveContext, params: dict[str, str]) -> tuple:
    """What an `&effect=TEXT` link shows: its inputs, the Ablate view, and with `&steer=N` the Steer view too (that
    link is the Steer button's: the Ablate view of the same inputs comes with it)."""
    model, neurons, text = params.get("model"), params.get(NEURONS_KEY, ""), params.get(EFFECT_TEXT_KEY, "")
    intervention = params.get(INTERVENTION_KEY, DEFAULT_INTERVENTION)
    steer, seed, current = params.get(STEER_KEY), params.get(SEED_KEY, ""), (params.get("layer"), params.get("neuron"))
    inputs = (neurons, intervention, text, parse_int(steer) or DEFAULT_NEW_TOKENS, seed)
    nothing = ("", "", {})
    if not text:
        return (*inputs, *nothing, *nothing)
    ablated = ablate_view(context, model, neurons, text, intervention, *current)
    steered = steer_view(context, model, neurons, text, intervention, steer, seed, *current) if steer else nothing
    return (*inputs, *ablated, *steered)


def build_finder_tab(context: LiveContext, controls: NeuronControls) -> None:
    """Two lists of texts; neurons ranked by how well they separate them; a residual-stream probe by layer."""
    status = gr.HTML(elem_id="ns-finder-status")
    gr.Markdown(
        "One text per line. Mark the feature's tokens with `[[...]]` in the first list to make it per token: "
        f"then the marked tokens count as with the feature and the rest of that text as without. {LISTS_CAP_NOTE}"
    )
    gr.Markdown(
        f"The lists hold a worked example, *{example.FEATURE}*: press **Find neurons** or **Probe the residual "
        "stream** to run it, then replace them with your own."
    )
    with gr.Row():
        with_box = gr.Textbox(example.WITH_FEATURE, label="Texts with the feature", lines=8, elem_id="ns-with")
        without_box = gr.Textbox(
            example.WITHOUT_FEATURE, label="Texts without the feature", lines=8, elem_id="ns-without"
        )
    with gr.Row():
        direction_box = gr.Radio(list(DIRECTIONS), value=DIRECTIONS[0], label="Neurons that fire", scale=3)
        count_box = count_input(scale=1)
    with gr.Row():
        find_button = gr.Button("Find neurons", variant="primary", size="sm", elem_id="ns-find")
        probe_button = gr.Button("Probe the residual stream", size="sm", elem_id="ns-probe")
    find_notice, find_html, probe_notice, probe_html = html_panes(
        "ns-find-notice", "ns-find-results", "ns-probe-notice", "ns-probe-plot"
    )
    find_values, probe_values = json_values("finder", "probe")

    def find(model, with_feature, without_feature, direction, count, progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
        return find_view(context, model, with_feature, without_feature, direction, count, progress)

    def run_probe(model, with_feature, without_feature, progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
        return probe_view(context, model, with_feature, without_feature, progress)

    def refresh(model):
        return _status_outputs(context, model, 2)

    lists = [controls.model, with_box, without_box]
    buttons = [status, find_button, probe_button]
    find_button.click(
        find, [*lists, direction_box, count_box], [find_notice, find_html, find_values], api_name="find", **MODEL_EVENTS
    ).then(refresh, [controls.model], buttons, api_visibility="private")
    probe_button.click(
        run_probe, lists, [probe_notice, probe_html, probe_values], api_name="probe", **MODEL_EVENTS
    ).then(refresh, [controls.model], buttons, api_visibility="private")
    controls.model.change(refresh, [controls.model], buttons, api_visibility="private")

    def open_link(request: gr.Request):
        return refresh(dict(request.query_params).get("model") if request else None)

    controls.blocks.load(open_link, None, buttons, api_visibility="private")


def live_tabs(models: LiveModels | None = None) -> list[ExtraTab]:
    """The Live, Effect and Finder & probe tabs, sharing one model cache."""
    shared_models = models or LiveModels()
    cache = ActivationCache()

    def context(catalog: Catalog) -> LiveContext:
        return LiveContext(catalog, shared_models, cache)

    return [
        ExtraTab(
            "Live", lambda catalog, controls: build_live_tab(context(catalog), controls), id="live", opened_by=TEXT_KEY
        ),
        ExtraTab(
            "Effect",
            lambda catalog, controls: build_effect_tab(context(catalog), controls),
            id="effect",
            opened_by=EFFECT_TEXT_KEY,
        ),
        ExtraTab("Finder & probe", lambda catalog, controls: build_finder_tab(context(catalog), controls), id="finder"),
    ]
