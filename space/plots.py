"""Server-side plots as inline SVG and HTML: no plotting library, no client code, nothing to sanitize but text."""

from __future__ import annotations

import math
from html import escape

from hub_sync.format import histogram_bin
from space.text import visible_token

HIST_WIDTH = 560
HIST_HEIGHT = 150
HIST_MARGIN = 24


def _edge_label(value: float) -> str:
    return f"{value:.3g}"


def _bin_label(index: int, edges: list[float]) -> str:
    """The values a histogram bin counts, as hub_sync.format.histogram_bin defines them (and docs/FORMAT.md)."""
    counted = histogram_bin(index, edges)
    if counted.low is None:
        return f"v ≤ {_edge_label(counted.high)}"
    if counted.high is None:
        return f"v ≥ {_edge_label(counted.low)}"
    if counted.positive:
        lower = "0 <" if counted.low == 0 else f"{_edge_label(counted.low)} ≤"
        return f"{lower} v < {_edge_label(counted.high)}"
    return f"{_edge_label(counted.low)} < v ≤ {_edge_label(counted.high)}"


def histogram_svg(counts: list[int], edges: list[float]) -> str:
    """Bars for the non-empty span of the histogram, heights on a log scale so rare tails stay visible."""
    nonzero = [i for i, count in enumerate(counts) if count > 0]
    if not nonzero:
        return '<p class="ns-muted">No activations recorded.</p>'
    first, last = nonzero[0], nonzero[-1]
    shown = range(first, last + 1)
    bar_width = (HIST_WIDTH - 2 * HIST_MARGIN) / len(shown)
    top = math.log10(max(counts) + 1)
    plot_height = HIST_HEIGHT - 2 * HIST_MARGIN
    bars = []
    for slot, index in enumerate(shown):
        height = plot_height * math.log10(counts[index] + 1) / top
        x = HIST_MARGIN + slot * bar_width
        y = HIST_MARGIN + plot_height - height
        colour = "#e8590c" if index > len(edges) // 2 else "#1c7ed6"
        title = escape(f"{_bin_label(index, edges)}: {counts[index]:,} tokens")
        bars.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar_width - 1, 1):.1f}" height="{height:.1f}" '
            f'fill="{colour}"><title>{title}</title></rect>'
        )
    low = escape(_edge_label(edges[max(first - 1, 0)]))
    high = escape(_edge_label(edges[min(last, len(edges) - 1)]))
    baseline = HIST_MARGIN + plot_height
    return (
        f'<svg class="ns-hist" viewBox="0 0 {HIST_WIDTH} {HIST_HEIGHT}" role="img" '
        f'aria-label="activation histogram">{"".join(bars)}'
        f'<line x1="{HIST_MARGIN}" y1="{baseline}" x2="{HIST_WIDTH - HIST_MARGIN}" y2="{baseline}" '
        f'stroke="currentColor" stroke-width="0.5"/>'
        f'<text x="{HIST_MARGIN}" y="{HIST_HEIGHT - 6}" font-size="11" fill="currentColor">{low}</text>'
        f'<text x="{HIST_WIDTH - HIST_MARGIN}" y="{HIST_HEIGHT - 6}" font-size="11" text-anchor="end" '
        f'fill="currentColor">{high}</text>'
        f'<text x="{HIST_WIDTH / 2}" y="{HIST_HEIGHT - 6}" font-size="11" text-anchor="middle" '
        f'fill="currentColor">activation (signed log bins; bar height log count)</text></svg>'
    )


def logit_bars_html(tokens: list[str], values: list[float], css_class: str) -> str:
    """One row per token: the (escaped, glyph-visible) token and a bar proportional to its logit effect."""
    if not tokens:
        return '<p class="ns-muted">none</p>'
    largest = max(abs(value) for value in values) or 1.0
    rows = []
    for token, value in zip(tokens, values, strict=True):
        width = 100 * abs(value) / largest
        rows.append(
            f'<div class="ns-logit"><code>{escape(visible_token(token))}</code>'
            f'<span class="ns-bar {css_class}" style="width:{width:.0f}%"></span>'
            f'<span class="ns-num">{value:+.3g}</span></div>'
        )
    return "".join(rows)


SPARK_WIDTH = 132
SPARK_HEIGHT = 30
BARS_WIDTH = 300
BARS_HEIGHT = 110


def bin_ranges(edges: list[float]) -> list[str]:
    """'low–high' for each bin between consecutive edges."""
    return [f"{_edge_label(low)}–{_edge_label(high)}" for low, high in zip(edges[:-1], edges[1:], strict=True)]


def sparkline_svg(counts: list[int], top: float, label: str) -> str:
    """A distribution as one small path (a table row per layer stays light): bar heights are each bin's share of
    the row's total, on a `top` share shared by the rows so their shapes compare; the label on hover."""
    total = sum(counts)
    width = SPARK_WIDTH / max(len(counts), 1)
    path = "".join(
        f"M{i * width:.1f} {SPARK_HEIGHT}v{-SPARK_HEIGHT * count / total / top:.1f}h{max(width - 1, 0.5):.1f}"
        f"V{SPARK_HEIGHT}z"
        for i, count in enumerate(counts)
        if count and total and top > 0
    )
    return (
        f'<svg class="ns-spark" viewBox="0 0 {SPARK_WIDTH} {SPARK_HEIGHT}" width="{SPARK_WIDTH}" '
        f'height="{SPARK_HEIGHT}" '
        f'role="img" aria-label="{escape(label, quote=True)}"><title>{escape(label)}</title>'
        f'<path d="{path}" fill="#e8590c"/><line x1="0" y1="{SPARK_HEIGHT}" x2="{SPARK_WIDTH}" y2="{SPARK_HEIGHT}" '
        f'stroke="currentColor" stroke-width="0.5"/></svg>'
    )


def bars_svg(counts: list[int], edges: list[float], top: float, label: str, colour: str = "#e8590c") -> str:
    """A distribution with its axis: bars as shares of the total on a `top` share (shared by the plots compared), a
    bin's range, count and share on hover, the first and last edge under the axis."""
    total = sum(counts)
    plot_height = BARS_HEIGHT - 2 * HIST_MARGIN
    width = (BARS_WIDTH - 2 * HIST_MARGIN) / max(len(counts), 1)
    bars = []
    for i, (count, span) in enumerate(zip(counts, bin_ranges(edges), strict=True)):
        share = count / total if total else 0.0
        height = plot_height * share / top if top > 0 else 0.0
        title = escape(f"{label} {span}: {count:,} neurons ({100 * share:.1f}%)")
        bars.append(
            f'<rect x="{HIST_MARGIN + i * width:.1f}" y="{HIST_MARGIN + plot_height - height:.1f}" '
            f'width="{max(width - 1, 1):.1f}" height="{height:.1f}" fill="{colour}"><title>{title}</title></rect>'
        )
    baseline = HIST_MARGIN + plot_height
    return (
        f'<svg class="ns-bars" viewBox="0 0 {BARS_WIDTH} {BARS_HEIGHT}" role="img" '
        f'aria-label="{escape(label, quote=True)}">{"".join(bars)}'
        f'<line x1="{HIST_MARGIN}" y1="{baseline}" x2="{BARS_WIDTH - HIST_MARGIN}" y2="{baseline}" '
        f'stroke="currentColor" stroke-width="0.5"/>'
        f'<text x="{HIST_MARGIN}" y="{BARS_HEIGHT - 6}" font-size="11" fill="currentColor">'
        f"{_edge_label(edges[0])}</text>"
        f'<text x="{BARS_WIDTH - HIST_MARGIN}" y="{BARS_HEIGHT - 6}" font-size="11" text-anchor="end" '
        f'fill="currentColor">{_edge_label(edges[-1])}</text>'
        f'<text x="{BARS_WIDTH / 2}" y="{BARS_HEIGHT - 6}" font-size="11" text-anchor="middle" '
        f'fill="currentColor">{escape(label)}</text></svg>'
    )
