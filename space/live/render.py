"""HTML for the live tabs, server-side like the neuron page: tokens coloured with its helpers, tables, an SVG plot.

Texts, token strings and model names are untrusted: every one passes through `html.escape(quote=True)`.
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

from space.links import NeuronRef
from space.render import NEGATIVE_RGB, POSITIVE_RGB, token_html
from space.text import visible_token

PLOT_WIDTH = 560
PLOT_HEIGHT = 220
PLOT_MARGIN = 36

LIVE_CSS = """
.ns-live-table { border-collapse: collapse; font-size: .88em; margin: .4em 0 1em 0; }
.ns-live-table th, .ns-live-table td {
  padding: .15em .6em; border-bottom: 1px solid rgba(128,128,128,.2); text-align: right;
}
.ns-live-table th:first-child, .ns-live-table td:first-child { text-align: left; }
.ns-live-table .ns-sample {
  display: inline-block; max-width: 28em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
  vertical-align: bottom;
}
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


def live_tokens_html(ref: NeuronRef, tokens: list[str], values: np.ndarray, scale: float) -> str:
    """The text's tokens coloured on the neuron's dataset scale; the peak after BOS outlined, values on hover."""
    peak = int(np.argmax(values[1:])) + 1 if len(values) > 1 else 0
    body = "".join(
        token_html(token, float(value), scale, position == peak)
        for position, (token, value) in enumerate(zip(tokens, values, strict=True))
    )
    title = f"{escape(ref.model, quote=True)} · {neuron_link(ref.model, ref.layer, ref.neuron)}"
    note = (
        f'<p class="ns-muted">{title}. Colour scale: ±{scale:.3g}, this neuron\'s dataset scale. '
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


def top_neurons_html(model: str, by_max: list[dict], by_relative: list[dict]) -> str:
    """The two rankings of the neurons that fire most on a text, each neuron linking to its page."""
    headers = ["neuron", "max on text", "at token", "dataset max", "max / dataset max"]

    def rows(hits: list[dict]) -> list[list[str]]:
        return [
            [
                neuron_link(model, hit["layer"], hit["neuron"]),
                number(hit["max"]),
                token_cell(hit["token"]),
                number(hit["dataset_max"]),
                number(hit["relative"], 3),
            ]
            for hit in hits
        ]

    return (
        f"<h3>Highest activation</h3>{table_html(headers, rows(by_max))}"
        f"<h3>Highest relative to the neuron's dataset max</h3>{table_html(headers, rows(by_relative))}"
    )


def value_cell(value: float, scale: float) -> str:
    """A number with a background on the column's scale, like a token."""
    rgb = POSITIVE_RGB if value >= 0 else NEGATIVE_RGB
    alpha = min(1.0, abs(value) / scale) if scale > 0 else 0.0
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
    scales = [max((abs(v) for v in hit["values"]), default=0.0) for hit in top]
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


def probe_plot_svg(layers: list[int], accuracy: list[float], shuffled: list[float], chance: float) -> str:
    """Held-out accuracy by layer (solid), the shuffled-label baseline (dashed), chance (dotted); y from 0 to 1."""
    inner_width, inner_height = PLOT_WIDTH - 2 * PLOT_MARGIN, PLOT_HEIGHT - 2 * PLOT_MARGIN
    span = max(len(layers) - 1, 1)
    xs = [PLOT_MARGIN + inner_width * index / span for index in range(len(layers))]

    def y(value: float) -> float:
        return PLOT_MARGIN + inner_height * (1 - value)

    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y(value):.1f}" r="3" fill="#e8590c"><title>layer {layer}: {value:.3f} '
        f"(shuffled {baseline:.3f})</title></circle>"
        for x, layer, value, baseline in zip(xs, layers, accuracy, shuffled, strict=True)
    )
    ticks = "".join(
        f'<text x="{PLOT_MARGIN - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end" '
        f'fill="currentColor">{v:.1f}</text>'
        for v in (0.0, 0.5, 1.0)
    )
    step = max(1, len(layers) // 10)
    labels = "".join(
        f'<text x="{x:.1f}" y="{PLOT_HEIGHT - PLOT_MARGIN + 16}" font-size="11" text-anchor="middle" '
        f'fill="currentColor">{layer}</text>'
        for x, layer in list(zip(xs, layers, strict=True))[::step]
    )
    chance_line = (
        f'<line x1="{PLOT_MARGIN}" x2="{PLOT_WIDTH - PLOT_MARGIN}" y1="{y(chance):.1f}" y2="{y(chance):.1f}" '
        'stroke="currentColor" stroke-dasharray="2 3" opacity=".6"/>'
    )
    legend = (
        f'<text x="{PLOT_MARGIN}" y="16" font-size="12" fill="#e8590c">— held-out accuracy</text>'
        f'<text x="{PLOT_MARGIN + 160}" y="16" font-size="12" fill="#1c7ed6">- - shuffled labels</text>'
        f'<text x="{PLOT_MARGIN + 300}" y="16" font-size="12" fill="currentColor">··· chance {chance:.2f}</text>'
        f'<text x="{PLOT_WIDTH / 2}" y="{PLOT_HEIGHT - 4}" font-size="11" text-anchor="middle" '
        'fill="currentColor">layer</text>'
    )
    return (
        f'<svg class="ns-probe" viewBox="0 0 {PLOT_WIDTH} {PLOT_HEIGHT}" role="img" '
        'aria-label="probe accuracy by layer">'
        f"{chance_line}{_polyline(xs, [y(v) for v in shuffled], '#1c7ed6', '6 4')}"
        f"{_polyline(xs, [y(v) for v in accuracy], '#e8590c')}"
        f"{dots}{ticks}{labels}{legend}</svg>"
    )
