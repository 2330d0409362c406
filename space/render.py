"""The neuron page as server-side HTML.

Every string that comes from a dataset passes through `html.escape(quote=True)` before it reaches
the page, attributes included: Gradio's gr.HTML shows its value unsanitized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from html import escape

import numpy as np

from hub_sync import format as fmt
from hub_sync.records import Example, NeuronRecord, NeuronStats
from space.explanations import SCORE_MEANINGS, Explanation, ScoreValue, best_first
from space.plots import histogram_svg, logit_bars_html
from space.text import visible_token

CONTEXT_BEFORE = 12
CONTEXT_AFTER = 4
KIND_TITLES = {"top": "Top examples", "random": "Random firing examples", "bottom": "Bottom examples"}
POSITIVE_RGB = "255,112,0"
NEGATIVE_RGB = "28,126,214"
SHADES = 10  # colour steps per sign: a class per step keeps a 30-example page near 100 KB


@dataclass(frozen=True)
class ColourScale:
    """A neuron's colour scale: positive activations on its positive range, negative ones on its negative range.

    One range for both signs would colour a gated neuron's top examples (max 0.73, min -4.75) on ±4.75, so they
    look blank; with two, each sign's largest value gets the full shade. Every view that colours activations (the
    neuron page, the live tab, the PNG card) uses this rule."""

    positive: float  # the largest positive value (1.0 when there is none)
    negative: float  # the magnitude of the most negative value (1.0 when there is none)

    @classmethod
    def of_values(cls, values: np.ndarray) -> ColourScale:
        values = np.asarray(values, dtype=np.float64)
        largest = float(values.max()) if values.size else 0.0
        lowest = float(values.min()) if values.size else 0.0
        return cls(largest if largest > 0 else 1.0, -lowest if lowest < 0 else 1.0)

    @classmethod
    def of_examples(cls, examples: list[Example]) -> ColourScale:
        """Over every kept example of the neuron, BOS left out as in its statistics (a BOS value can dwarf the rest)."""
        parts = [example.activations[1:] for example in examples]
        return cls.of_values(np.concatenate(parts) if parts else np.zeros(0))

    def share(self, value: float) -> float:
        """How much of its sign's range the value reaches, 0..1 (values beyond the range are clipped; NaN is 0)."""
        if math.isnan(value):
            return 0.0
        return min(1.0, abs(value) / (self.positive if value >= 0 else self.negative))

    def describe(self) -> str:
        return f"0 to +{self.positive:.3g} (orange), 0 to −{self.negative:.3g} (blue)"


def shade_class(value: float, scale: ColourScale) -> str:
    """`p0`..`p10` (positive) or `n1`..`n10` (negative): the activation's share of its sign's range."""
    step = round(SHADES * scale.share(value))
    return f"n{step}" if value < 0 and step else f"p{step}"


@lru_cache(maxsize=1 << 16)
def shown_token(token: str) -> str:
    """A token as the page shows it, escaped; cached, since a page shows thousands from one vocabulary."""
    return escape(visible_token(token), quote=True)


def token_html(token: str, value: float, scale: ColourScale, is_peak: bool) -> str:
    """A token coloured by its activation, its value in the hover title."""
    peak = " pk" if is_peak else ""
    return f'<span class="t {shade_class(value, scale)}{peak}" title="{value:.4g}">{shown_token(token)}</span>'


def example_token_spans(example: Example, scale: ColourScale) -> list[str]:
    """Every token of the window as token_html makes it."""
    values = np.asarray(example.activations).tolist()
    return [
        token_html(token, value, scale, position == example.max_position)
        for position, (token, value) in enumerate(zip(example.tokens, values, strict=True))
    ]


def example_html(example: Example, scale: ColourScale, described: bool = True) -> str:
    """A short view around the peak token that expands (no JavaScript: <details>) to the whole window (the short
    view reuses its spans); `described` puts its kind, rank and window in the score's hover title (blind rating
    leaves them out)."""
    short = example.around_peak(CONTEXT_BEFORE, CONTEXT_AFTER)
    spans = example_token_spans(example, scale)
    before = "…" if short.start > 1 else ""
    after = "…" if short.stop < len(example.tokens) else ""
    label = escape(f"{example.score:.3g}", quote=True)
    meta = escape(f"{example.kind} #{example.rank}, window {example.window_index}", quote=True)
    title = f' title="{meta}"' if described else ""
    return (
        f'<details class="ns-ex"><summary><span class="ns-score"{title}>{label}</span>'
        f'<span class="ns-text">{before}{"".join(spans[short.start:short.stop])}{after}</span></summary>'
        f'<div class="ns-text ns-full">{"".join(spans)}</div></details>'
    )


def examples_html(examples: list[Example], kinds: tuple[str, ...] = fmt.EXAMPLE_KINDS, described: bool = True) -> str:
    """The example sections of `kinds`, every token on one colour scale over the examples shown."""
    shown = [example for example in examples if example.kind in kinds]
    scale = ColourScale.of_examples(shown)
    sections = []
    for kind in kinds:
        of_kind = [example for example in shown if example.kind == kind]
        if not of_kind:
            continue
        body = "".join(example_html(example, scale, described) for example in of_kind)
        sections.append(f'<h3>{KIND_TITLES[kind]} <span class="ns-muted">({len(of_kind)})</span></h3>{body}')
    note = (
        f'<p class="ns-muted">Colour scale: {scale.describe()}. '
        "Hover a token for its value; click a row for the whole window.</p>"
    )
    return note + "".join(sections)


def _stat(name: str, value: str) -> str:
    return f'<div class="ns-stat"><span class="ns-muted">{escape(name)}</span><b>{escape(value)}</b></div>'


def stats_html(stats: NeuronStats) -> str:
    """Max, min, mean, density, coverage and how concentrated the peak tokens are."""
    return (
        '<div class="ns-stats">'
        + "".join(
            [
                _stat("max", f"{stats.max:.4g}"),
                _stat("min", f"{stats.min:.4g}"),
                _stat("mean", f"{stats.mean:.4g}"),
                _stat("density", f"{100 * stats.density:.3g}%"),
                _stat("peak concentration", f"{100 * stats.peak_concentration:.3g}%"),
                _stat("tokens", f"{stats.n_tokens:,}"),
            ]
        )
        + "</div>"
    )


def peak_tokens_html(stats: NeuronStats) -> str:
    chips = "".join(
        f'<span class="ns-chip"><code>{escape(visible_token(token), quote=True)}</code> ×{count}</span>'
        for token, count in stats.peaks
    )
    return f'<div class="ns-chips"><span class="ns-muted">Peaks on</span> {chips}</div>'


def _score_html(name: str, score: ScoreValue) -> str:
    value = "undefined" if score.value is None else f"{score.value:.2f}"
    meaning = escape(f"{name}: {SCORE_MEANINGS[name]}", quote=True)
    count = f'<span class="ns-muted">n={score.n}</span>'
    return f'<span class="ns-escore" title="{meaning}">{name} <b>{value}</b> {count}</span>'


def explanation_html(item: Explanation) -> str:
    """Its text (or why it was refused), its computed scores with their n, and who wrote it with which prompt, when."""
    if item.refusal is not None:
        text = f'<p class="ns-expl-text ns-refused">Refused: {escape(item.refusal, quote=True)}</p>'
    else:
        text = f'<p class="ns-expl-text">{escape(item.explanation or "", quote=True)}</p>'
    computed = [(name, score) for name, score in item.scores.items() if score.value is not None or score.n > 0]
    scores = "".join(_score_html(name, score) for name, score in computed)
    meta = escape(f"by {item.explainer} · prompt {item.prompt_version} · {item.created}", quote=True)
    return (
        f'<div class="ns-expl">{text}<div class="ns-expl-meta">{scores}<span class="ns-muted">{meta}</span></div></div>'
    )


def score_legend_html() -> str:
    meanings = "".join(f"<li><b>{name}</b>: {escape(text)}</li>" for name, text in SCORE_MEANINGS.items())
    return (
        '<details class="ns-legend"><summary class="ns-muted">What the scores mean</summary>'
        f'<ul>{meanings}</ul><p class="ns-muted">Each is measured on held-out examples the explainer never saw. '
        "Several explanations are ordered by the mean of their scores, each rescaled so chance is 0 and perfect "
        "is 1.</p></details>"
    )


def explanations_html(explanations: list[Explanation] | None) -> str:
    """The page's explanations, best-scored first; None (a format 1.0 dataset) shows nothing."""
    if explanations is None:
        return ""
    if not explanations:
        return '<div class="ns-expls"><p class="ns-muted">No explanation of this neuron is stored yet.</p></div>'
    items = "".join(explanation_html(item) for item in best_first(explanations))
    count = f' <span class="ns-muted">({len(explanations)}, best-scored first)</span>' if len(explanations) > 1 else ""
    heading = f"Explanation{'s' if len(explanations) > 1 else ''}{count}"
    return f'<div class="ns-expls"><h3>{heading}</h3>{items}{score_legend_html()}</div>'


def neuron_page_html(
    model: str, record: NeuronRecord, edges: list[float], explanations: list[Explanation] | None = None
) -> str:
    """The whole neuron page body: title, explanations, stats, peak tokens, histogram, logit effects, examples."""
    stats = record.stats
    title = escape(f"{model} · layer {record.layer} · neuron {record.neuron}", quote=True)
    promotes = logit_bars_html(stats.logit_top_tokens, stats.logit_top_values, "ns-pos")
    suppresses = logit_bars_html(stats.logit_bottom_tokens, stats.logit_bottom_values, "ns-neg")
    return (
        f'<div class="ns-page"><h2 class="ns-title">{title}</h2>{explanations_html(explanations)}'
        f"{stats_html(stats)}{peak_tokens_html(stats)}"
        f'<div class="ns-columns"><div><h3>Activation histogram</h3>{histogram_svg(stats.histogram, edges)}</div>'
        f'<div><h3>Logit effects</h3><div class="ns-logits">'
        f"<div><h4>promotes</h4>{promotes}</div><div><h4>suppresses</h4>{suppresses}</div>"
        f"</div></div></div>{examples_html(record.examples)}</div>"
    )


def message_html(messages: list[str]) -> str:
    """Notices for the user (bad link, unavailable source), escaped: they quote user and dataset input."""
    return "".join(f'<div class="ns-notice">{escape(message, quote=True)}</div>' for message in messages)


PAGE_CSS = (
    """
.ns-page h2.ns-title { margin: 0 0 .5em 0; font-size: 1.3em; }
.ns-page h3 { margin: 1em 0 .4em 0; font-size: 1.05em; }
.ns-page h4 { margin: 0 0 .3em 0; font-size: .9em; font-weight: 600; }
.ns-muted { opacity: .65; font-weight: normal; }
.ns-stats { display: flex; flex-wrap: wrap; gap: .5em; margin-bottom: .6em; }
.ns-stat { display: flex; flex-direction: column; padding: .3em .7em; border: 1px solid rgba(128,128,128,.3);
  border-radius: 6px; min-width: 6em; }
.ns-stat span { font-size: .8em; }
.ns-chips { display: flex; flex-wrap: wrap; gap: .35em; align-items: center; }
.ns-chip { padding: .1em .45em; border-radius: 4px; background: rgba(255,112,0,.15); font-size: .9em; }
.ns-chip code, .ns-logit code { white-space: pre; background: none; }
.ns-columns { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 1.5em; }
.ns-hist { width: 100%; max-width: 560px; height: auto; }
.ns-logits { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; font-size: .85em; }
.ns-logit { display: grid; grid-template-columns: 7em 1fr 3.5em; align-items: center; gap: .3em; }
.ns-logit code { overflow: hidden; text-overflow: ellipsis; }
.ns-bar { height: .7em; border-radius: 2px; }
.ns-bar.ns-pos { background: rgba(255,112,0,.8); }
.ns-bar.ns-neg { background: rgba(28,126,214,.8); }
.ns-num { text-align: right; font-variant-numeric: tabular-nums; }
.ns-ex { border-bottom: 1px solid rgba(128,128,128,.15); padding: .15em 0; }
.ns-ex summary { cursor: pointer; list-style: none; display: flex; gap: .6em; align-items: baseline; }
.ns-ex summary::-webkit-details-marker { display: none; }
.ns-ex[open] summary .ns-text { opacity: .45; }
.ns-score { font-variant-numeric: tabular-nums; min-width: 3.5em; text-align: right; font-size: .85em; opacity: .75; }
.ns-text { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .88em; white-space: pre-wrap;
  word-break: break-word; line-height: 1.7; }
.ns-full { padding: .4em 0 .4em 4.1em; }
.ns-text .t { border-radius: 2px; }
.ns-text .pk { outline: 1.5px solid rgba(200,60,0,.9); }
.ns-expls { margin: 0 0 .8em 0; }
.ns-expl { padding: .35em .7em; margin: .3em 0; border-left: 3px solid rgba(255,112,0,.7); border-radius: 4px;
  background: rgba(255,112,0,.06); }
.ns-expl-text { margin: 0 0 .2em 0; font-size: 1.05em; white-space: pre-wrap; word-break: break-word; }
.ns-expl-text.ns-refused { font-style: italic; opacity: .75; }
.ns-expl-meta { display: flex; flex-wrap: wrap; gap: .3em .8em; font-size: .85em; align-items: baseline; }
.ns-escore { cursor: help; font-variant-numeric: tabular-nums; }
.ns-legend { font-size: .85em; margin-top: .3em; }
.ns-legend summary { cursor: pointer; }
.ns-table { border-collapse: collapse; font-size: .88em; margin: .4em 0 1em 0; }
.ns-table th, .ns-table td { padding: .15em .6em; border-bottom: 1px solid rgba(128,128,128,.2); text-align: right; }
.ns-table th:first-child, .ns-table td:first-child { text-align: left; }
.ns-notice { padding: .4em .8em; margin: .2em 0; border-left: 3px solid #f59f00; background: rgba(245,159,0,.12);
  border-radius: 4px; }
"""
    + "".join(
        f".ns-text .p{step} {{ background: rgba({POSITIVE_RGB},{step / SHADES:.1f}); }}\n"
        f".ns-text .n{step} {{ background: rgba({NEGATIVE_RGB},{step / SHADES:.1f}); }}\n"
        for step in range(1, SHADES + 1)
    )
    + """
@media (max-width: 800px) { .ns-columns, .ns-logits { grid-template-columns: 1fr; } }
"""
)
