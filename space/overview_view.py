"""The Overview tab's view: the per-layer table with its small distributions and the notable lists, as HTML.

Neuron links are real links (a new browser tab with a middle click) that the tab's click handler turns into a move
to the Neuron tab. Model names and tokens come from datasets: every one is escaped.
"""

from __future__ import annotations

from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict
from html import escape

from space.links import NeuronRef, optional_int, resolve
from space.overview import (
    VERY_DENSE_DENSITY,
    VERY_SPARSE_DENSITY,
    Distribution,
    LayerCounts,
    ModelOverview,
    Notable,
    NotableList,
    Overviews,
)
from space.plots import bars_svg, sparkline_svg
from space.render import message_html
from space.sources import Catalog
from space.text import visible_token

View = tuple[str, str, dict]
ALL_LAYERS = "all layers"
COMPUTING = "The overview of {model!r} is being computed from its neuron tables; it appears here when ready."

OVERVIEW_CSS = """
.ns-table tr.ns-ov-all td { font-weight: 600; }
.ns-spark { display: block; }
.ns-bars { width: 100%; max-width: 320px; height: auto; }
.ns-ov-plots { display: flex; flex-wrap: wrap; gap: 1em; }
.ns-ov-lists { display: grid; grid-template-columns: repeat(auto-fill, minmax(19em, 1fr)); gap: 1em; }
.ns-ov-list h4 { margin: .2em 0; }
.ns-ov-list ol { margin: 0; padding-left: 1.6em; font-size: .9em; }
.ns-ov-list code { white-space: pre; }
"""
# One listener on the component, so it survives every re-render: a plain click on a neuron link moves in the app.
OPEN_NEURON_JS = """
element.addEventListener('click', (event) => {
  const link = event.target.closest('a[data-neuron]');
  if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  trigger('click', {model: link.dataset.model, layer: Number(link.dataset.layer), neuron: Number(link.dataset.neuron)});
});
"""


def neuron_anchor(model: str, layer: int, neuron: int) -> str:
    """A link to the neuron's page that the Overview's click handler opens in place."""
    href = "?" + NeuronRef(model, layer, neuron).query()
    return (
        f'<a class="ns-open" href="{escape(href, quote=True)}" data-model="{escape(model, quote=True)}" '
        f'data-layer="{layer}" data-neuron="{neuron}">L{layer} N{neuron}</a>'
    )


def thresholds_note() -> str:
    return (
        '<p class="ns-muted">Never fired: max ≤ 0 (density 0). Very sparse: fired, on at most '
        f"{VERY_SPARSE_DENSITY:g} of tokens (1 in {1 / VERY_SPARSE_DENSITY:,.0f}). Very dense: fires on at least "
        f"{VERY_DENSE_DENSITY:.0%} of tokens. Distributions are over the neurons that fired; bar heights are each "
        "bin's share of the row, on one scale per column. Density bins are half decades from 1e-6 to 1.</p>"
    )


def _count_cells(counts: LayerCounts) -> str:
    def share(value: int) -> str:
        return f'{value:,} <span class="ns-muted">({value / counts.neurons:.0%})</span>' if counts.neurons else "0"

    return (
        f"<td>{counts.neurons:,}</td><td>{share(counts.never_fired)}</td>"
        f"<td>{share(counts.very_sparse)}</td><td>{share(counts.very_dense)}</td>"
    )


def _tops(rows: list[list[Distribution]]) -> list[float]:
    """Per column, the largest bin share over the rows: one height scale per statistic."""
    return [
        max((max(d.counts) / sum(d.counts) for d in column if sum(d.counts)), default=0.0)
        for column in zip(*rows, strict=True)
    ]


def layer_table_html(overview: ModelOverview) -> str:
    """One row for the whole model, then one per layer: counts and a sparkline per distribution."""
    scopes: list[int | None] = [None, *overview.layers]
    distributions = [overview.distributions(scope) for scope in scopes]
    tops = _tops(distributions)
    rows = []
    for scope, row in zip(scopes, distributions, strict=True):
        name = ALL_LAYERS if scope is None else f"layer {scope}"
        sparks = "".join(
            f"<td>{sparkline_svg(d.counts, top, f'{d.name}, {name}: {sum(d.counts):,} fired neurons')}</td>"
            for d, top in zip(row, tops, strict=True)
        )
        css = ' class="ns-ov-all"' if scope is None else ""
        label = ALL_LAYERS if scope is None else scope
        rows.append(f"<tr{css}><td>{label}</td>{_count_cells(overview.counts(scope))}{sparks}</tr>")
    head = "".join(
        f"<th>{title}</th>"
        for title in ("layer", "neurons", "never fired", "very sparse", "very dense", "max", "density", "peak conc.")
    )
    return f'<table class="ns-table ns-ov-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def distributions_html(distributions: list[Distribution], scope: str) -> str:
    """The scope's three distributions with axes and per-bin counts on hover."""
    plots = "".join(
        bars_svg(d.counts, d.edges, max(d.counts) / sum(d.counts) if sum(d.counts) else 0.0, f"{d.name} ({scope})")
        for d in distributions
    )
    return f'<div class="ns-ov-plots">{plots}</div>'


def _notable_value(key: str, neuron: Notable) -> str:
    token = f"<code>{escape(visible_token(neuron.top_token), quote=True)}</code>"
    if key == "token":
        return f"{neuron.top_count} of {neuron.top_examples} top examples peak on {token}"
    if key == "negative":
        return f"min {neuron.min:.4g}"
    if key in ("rare", "dense"):
        return f"density {neuron.density:.3g}, peaks on {token}"
    return f"max {neuron.max:.4g}, peaks on {token}"


def notable_html(model: str, lists: list[NotableList]) -> str:
    """Each notable list: its title, its rule, and its neurons as links."""
    blocks = []
    for notable in lists:
        items = "".join(
            f"<li>{neuron_anchor(model, n.layer, n.neuron)} · {_notable_value(notable.key, n)}</li>"
            for n in notable.neurons
        )
        body = f"<ol>{items}</ol>" if items else '<p class="ns-muted">none</p>'
        blocks.append(
            f'<div class="ns-ov-list" data-list="{notable.key}"><h4 title="{escape(notable.rule, quote=True)}">'
            f'{escape(notable.title)}</h4><p class="ns-muted">{escape(notable.rule)}</p>{body}</div>'
        )
    return f'<div class="ns-ov-lists">{"".join(blocks)}</div>'


def overview_html(overview: ModelOverview, d_mlp: int, layer: int | None, lists: list[NotableList]) -> str:
    """The whole tab body for one model, notable lists and distributions over one layer or all."""
    scope = ALL_LAYERS if layer is None else f"layer {layer}"
    title = escape(f"{overview.model}: {len(overview.layers)} layers × {d_mlp:,} neurons", quote=True)
    return (
        f'<div class="ns-page ns-overview"><h2 class="ns-title">{title}</h2>{thresholds_note()}'
        f"{layer_table_html(overview)}<h3>Neurons to open first ({escape(scope)})</h3>"
        f'<p class="ns-muted">Click a neuron to open its page.</p>{notable_html(overview.model, lists)}'
        f"<h3>Distributions ({escape(scope)})</h3>{distributions_html(overview.distributions(layer), scope)}</div>"
    )


def overview_view(overviews: Overviews, catalog: Catalog, model: object, layer: object, wait_s: float | None) -> View:
    """(notice, body, values) of a model's overview over one layer or all; an unknown model or layer gives a notice
    and a valid view. The body is empty while the overview is still being computed after `wait_s` seconds."""
    ref, messages = resolve(catalog, model, None, None)
    if ref is None:
        return message_html(messages), "", {}
    dataset = catalog.models[ref.model]
    scope = None if layer == ALL_LAYERS else optional_int(layer, "Layer", "showing every layer", messages)
    if scope is not None and scope not in dataset.layers:
        messages.append(f"Layer {scope} is not in {ref.model!r} (layers {dataset.layers}); showing every layer.")
        scope = None
    try:
        overview = overviews.future(ref.model).result(timeout=wait_s)
    except FutureTimeout:
        return message_html([*messages, COMPUTING.format(model=ref.model)]), "", {"model": ref.model, "ready": False}
    lists = overview.notable(scope)
    values = {
        "model": ref.model,
        "ready": True,
        "layer": scope,
        "gated": overview.gated,
        "thresholds": {"very_sparse_density": VERY_SPARSE_DENSITY, "very_dense_density": VERY_DENSE_DENSITY},
        "layers": [asdict(overview.counts(layer)) for layer in [None, *overview.layers]],
        "notable": {notable.key: [asdict(n) for n in notable.neurons] for notable in lists},
        "distributions": [asdict(d) for d in overview.distributions(scope)],
    }
    page = overview_html(overview, dataset.d_mlp, scope, lists)
    return message_html([*messages, *overview.problems]), page, values
