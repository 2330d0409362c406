"""HTML for the live tabs, server-side like the neuron page: tokens coloured with its helpers, tables, an SVG plot.

Texts, token strings and model names are untrusted: every one passes through `html.escape(quote=True)`.
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

from space.links import NeuronRef
from space.render import NEGATIVE_RGB, POSITIVE_RGB, ColourScale, token_html
from space.text import visible_token

PLOT_WIDTH = 640
PLOT_HEIGHT = 260

LIVE_CSS = """
.ns-live-table { border-collapse: collapse; font-size: .88em; margin: .4em 0 1em 0; }
.ns-live-table th, .ns-live-table td { padding: .15em .6em; border-bottom: 1px solid rgba(128,128,128,.2);
  text-align: right; }
.ns-live-table th:first-child, .ns-live-table td:first-child { text-align: left; }
.ns-live-table .ns-sample { display: inline-block; max-width: 28em; overflow: hidden;
  text-overflow: ellipsis; white-space: nowrap;
  vertical-align: bottom; }
.ns-probe { width: 100%; max-width: 620px; height: auto; }
"""


def neuron_link(model: str, layer: int, neuron: int) -> str:
    """A link that opens the neuron's page (a new tab, so the live view stays)."""
    href = "?" + NeuronRef(model, layer, neuron).query()
    return f'<a href="{escape(href, quote=True)}" target="_blank" rel="noopener">L{layer} N{neuron}</a>'


def number(value: float, digits: int = 4) -> str:
    """A statistic for a table cell: ±∞ and NaN spelled out."""
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "+∞" if value > 0 else "−∞"
    return f"{value:.{digits}g}"


def live_tokens_html(
    ref: NeuronRef, tokens: list[str], values: np.ndarray, scale: ColourScale, scale_of: str = "this neuron's dataset"
) -> str:
    """The text's tokens coloured on the neuron's scale (`scale_of` says whose); the peak after BOS outlined, values
    on hover."""
    peak = int(np.argmax(values[1:])) + 1 if len(values) > 1 else 0
    body = "".join(
        token_html(token, float(value), scale, position == peak)
        for position, (token, value) in enumerate(zip(tokens, values, strict=True))
    )
    title = f"{escape(ref.model, quote=True)} · {neuron_link(ref.model, ref.layer, ref.neuron)}"
    note = (
        f'<p class="ns-muted">{title}. Colour scale: {scale.describe()}, {escape(scale_of)} scale. '
        "Hover a token for its value.</p>"
    )
    return f'{note}<div class="ns-text">{body}</div>'


def table_html(headers: list[str], rows: list[list[str]]) -> str:
    """A table of already-escaped cells."""
    head = "".join(f"<th>{escape(header)}</th>" for header in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="ns-live-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def token_cell(token: str) -> str:
    return f"<code>{escape(visible_token(token), quote=True)}</code>"


def top_neurons_html(model: str, by_max: list[dict], by_relative: list[dict] | None) -> str:
    """The two rankings of the neurons that fire most on a text, each neuron linking to its page; before the
    dataset is built (`by_relative` None: no dataset max), the first alone."""
    with_dataset = by_relative is not None
    headers = ["neuron", "max on text", "at token", *(["dataset max", "max / dataset max"] if with_dataset else [])]

    def rows(hits: list[dict]) -> list[list[str]]:
        return [
            [
                neuron_link(model, hit["layer"], hit["neuron"]),
                number(hit["max"]),
                token_cell(hit["token"]),
                *([number(hit["dataset_max"]), number(hit["relative"], 3)] if with_dataset else []),
            ]
            for hit in hits
        ]

    html = f"<h3>Highest activation</h3>{table_html(headers, rows(by_max))}"
    if with_dataset:
        html += f"<h3>Highest relative to the neuron's dataset max</h3>{table_html(headers, rows(by_relative))}"
    return html


def value_cell(value: float, scale: ColourScale) -> str:
    """A number with a background on the column's scale, by the same rule as a token."""
    rgb = POSITIVE_RGB if value >= 0 else NEGATIVE_RGB
    alpha = scale.share(value)
    return f'<span style="background:rgba({rgb},{alpha:.2f});padding:0 .25em">{number(value, 3)}</span>'


def finder_html(model: str, layer_rows: list[dict], top: list[dict], samples: list[dict]) -> str:
    """Best neuron per layer, the top neurons with their statistics, and every sample's value for them."""
    summary = table_html(
        ["layer", "best neuron", "AUROC", "Cohen's d", "neurons with AUROC ≥ 0.9 (this direction)"],
        [
            [
                str(row["layer"]),
                neuron_link(model, row["layer"], row["neuron"]),
                number(row["auroc"], 3),
                number(row["cohens_d"], 3),
                str(row["strong"]),
            ]
            for row in layer_rows
        ],
    )
    ranking = table_html(
        ["neuron", "AUROC", "Cohen's d", "mean with", "mean without"],
        [
            [
                neuron_link(model, hit["layer"], hit["neuron"]),
                number(hit["auroc"], 3),
                number(hit["cohens_d"], 3),
                number(hit["mean_with"], 3),
                number(hit["mean_without"], 3),
            ]
            for hit in top
        ],
    )
    scales = [ColourScale.of_values(np.array(hit["values"])) for hit in top]
    matrix_rows = [
        [
            escape(sample["description"]),
            f'<span class="ns-sample" title="{escape(sample["text"], quote=True)}">{escape(sample["text"])}</span>',
        ]
        + [value_cell(hit["values"][index], scale) for hit, scale in zip(top, scales, strict=True)]
        for index, sample in enumerate(samples)
    ]
    matrix = table_html(["sample", "text", *(f"L{hit['layer']} N{hit['neuron']}" for hit in top)], matrix_rows)
    return (
        f"<h3>Best neuron per layer</h3>{summary}<h3>Top neurons</h3>{ranking}"
        f"<h3>Each sample's max activation</h3>{matrix}"
    )


def _polyline(xs: list[float], ys: list[float], colour: str, dash: str = "") -> str:
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dashes}/>'


ACCURACY_COLOUR, SHUFFLED_COLOUR = "#e8590c", "#1c7ed6"
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 52, 96, 34, 40  # room for the y title, the end labels, legend, x axis
Y_TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _legend_entry(x: float, colour: str, dash: str, label: str) -> str:
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line x1="{x}" x2="{x + 22}" y1="14" y2="14" stroke="{colour}" stroke-width="2"{dashes}/>'
        f'<text x="{x + 27}" y="18" font-size="12" fill="currentColor">{label}</text>'
    )


def probe_plot_svg(
    layers: list[int], accuracy: list[float], shuffled_mean: list[float], shuffled_max: list[float], chance: float
) -> str:
    """Held-out accuracy by layer against what shuffled labels reach (their mean, dashed, and a band up to their
    best) and chance (dotted): a layer is only evidence where the solid line clears the band. y runs from 0 to 1."""
    inner_width = PLOT_WIDTH - PLOT_LEFT - PLOT_RIGHT
    inner_height = PLOT_HEIGHT - PLOT_TOP - PLOT_BOTTOM
    span = max(len(layers) - 1, 1)
    xs = [PLOT_LEFT + inner_width * index / span for index in range(len(layers))]
    right = PLOT_LEFT + inner_width

    def y(value: float) -> float:
        return PLOT_TOP + inner_height * (1 - value)

    grid = "".join(
        f'<line x1="{PLOT_LEFT}" x2="{right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="currentColor" '
        f'opacity=".15"/>'
        f'<text x="{PLOT_LEFT - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end" '
        f'fill="currentColor">{v:g}</text>'
        for v in Y_TICKS
    )
    upper = list(zip(xs, map(y, shuffled_max), strict=True))
    lower = list(zip(xs, map(y, shuffled_mean), strict=True))
    band = (
        f'<polygon points="{" ".join(f"{x:.1f},{v:.1f}" for x, v in [*upper, *reversed(lower)])}" '
        f'fill="{SHUFFLED_COLOUR}" '
        f'opacity=".15"><title>shuffled labels: from their mean to their best run</title></polygon>'
    )
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y(value):.1f}" r="3" fill="{ACCURACY_COLOUR}"><title>layer {layer}: {value:.3f} '
        f"(shuffled labels: mean {mean:.3f}, best {best:.3f})</title></circle>"
        for x, layer, value, mean, best in zip(xs, layers, accuracy, shuffled_mean, shuffled_max, strict=True)
    )
    step = max(1, len(layers) // 10)
    ticks = "".join(
        f'<text x="{x:.1f}" y="{PLOT_HEIGHT - PLOT_BOTTOM + 16}" font-size="11" text-anchor="middle" '
        f'fill="currentColor">{layer}</text>'
        for x, layer in list(zip(xs, layers, strict=True))[::step]
    )
    chance_line = (
        f'<line x1="{PLOT_LEFT}" x2="{right}" y1="{y(chance):.1f}" y2="{y(chance):.1f}" stroke="currentColor" '
        f'stroke-dasharray="2 3" opacity=".7"/><text x="{right + 6}" y="{y(chance) + 4:.1f}" font-size="11" '
        f'fill="currentColor">chance {chance:.2f}</text>'
    )
    end_label = (
        f'<text x="{right + 6}" y="{y(accuracy[-1]) + 4:.1f}" font-size="11" fill="{ACCURACY_COLOUR}">'
        f"{accuracy[-1]:.2f}</text>"
        if accuracy and abs(accuracy[-1] - chance) > 0.06
        else ""
    )
    axes = (
        f'<text x="{PLOT_LEFT + inner_width / 2}" y="{PLOT_HEIGHT - 6}" font-size="12" text-anchor="middle" '
        f'fill="currentColor">layer (residual stream after it)</text>'
        f'<text transform="translate(14 {PLOT_TOP + inner_height / 2}) rotate(-90)" font-size="12" '
        f'text-anchor="middle" '
        f'fill="currentColor">held-out accuracy</text>'
    )
    legend = (
        _legend_entry(PLOT_LEFT, ACCURACY_COLOUR, "", "probe")
        + _legend_entry(PLOT_LEFT + 95, SHUFFLED_COLOUR, "6 4", "shuffled labels (band: up to best)")
        + _legend_entry(PLOT_LEFT + 330, "currentColor", "2 3", "chance")
    )
    return (
        f'<svg class="ns-probe" viewBox="0 0 {PLOT_WIDTH} {PLOT_HEIGHT}" role="img" '
        f'aria-label="probe accuracy by layer">{grid}{band}{chance_line}'
        f"{_polyline(xs, [y(v) for v in shuffled_mean], SHUFFLED_COLOUR, '6 4')}"
        f"{_polyline(xs, [y(v) for v in accuracy], ACCURACY_COLOUR)}{dots}{end_label}{ticks}{axes}{legend}</svg>"
    )
