"""The page while a source is still being built (the embedded default on first launch): the banner shows the
build's progress, refreshed by a timer, and when the build is done its model joins the menus and, on a
page that had no model yet, its first neuron opens, without a restart or a reload."""

from __future__ import annotations

import gradio as gr

from space.render import message_html
from space.sources import Catalog
from space.views import neuron_view

POLL_SECONDS = 3.0


def follow_building(
    catalog: Catalog, banner: gr.HTML, model_box: gr.Dropdown, models_filter: gr.Dropdown,
    layer_range: tuple[gr.Number, gr.Number], neuron_outputs: list[gr.components.Component],
) -> None:
    """Poll the catalog while something builds. `neuron_outputs` are the neuron page's layer, neuron, notice, page."""
    if not catalog.building:
        return
    timer = gr.Timer(POLL_SECONDS)

    def build_status() -> str:
        return message_html(catalog.unavailable_messages())

    def follow(model: str | None) -> tuple:
        names = catalog.model_names
        polling = gr.Timer(active=catalog.still_building)
        if model or not names:
            return polling, gr.Dropdown(choices=names), gr.Dropdown(choices=names), *(gr.skip() for _ in range(6))
        view = neuron_view(catalog, names[0], None, None)
        layers = [layer for dataset in catalog.models.values() for layer in dataset.layers]
        return (
            polling, gr.Dropdown(choices=names, value=view.ref.model), gr.Dropdown(choices=names), min(layers),
            max(layers), view.ref.layer, view.ref.neuron, view.notice, view.page,
        )

    # Both are cheap reads of the catalog: no queue limit, so a busy page never delays the progress.
    timer.tick(build_status, None, [banner], api_name="build_status", concurrency_limit=None).then(
        follow, [model_box], [timer, model_box, models_filter, *layer_range, *neuron_outputs],
        api_visibility="private", concurrency_limit=None,
    )
