"""HTML for the Effect tab: tokens coloured by how much harder the intervention made them to predict, the
predictions that moved most beside the neurons' direct logit effects, and two continuations side by side.

Token strings, texts and model names are untrusted: every one passes through `html.escape(quote=True)`.
"""

from __future__ import annotations

from html import escape

from hub_sync.records import NeuronStats
from space.live.interventions import Clamp
from space.live.render import number, table_html, token_cell
from space.plots import logit_bars_html
from space.render import ColourScale, shade_class
from space.text import visible_token

EFFECT_CSS = """
.ns-effect .ns-columns { align-items: start; }
.ns-effect .ns-logits { margin-bottom: .6em; }
.ns-steer { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 1.5em; }
.ns-steer .ns-prompt { opacity: .55; }
.ns-steer .ns-diverged { outline: 1.5px solid rgba(200,60,0,.9); border-radius: 2px; }
"""


def clamps_line(model: str, clamps: list[Clamp], intervention: str) -> str:
    """`model · L1N5 = 0, L2N7 = 3.1 (clamp 2x max)`: which neurons were set to what."""
    settings = ", ".join(f"{clamp.ref} = {clamp.value:.4g}" for clamp in clamps)
    return escape(f"{model} · {settings} ({intervention}, every position after BOS)", quote=True)


def _token_span(token: str, css_class: str, title: str) -> str:
    shown = escape(visible_token(token), quote=True)
    return f'<span class="t {css_class}" title="{escape(title, quote=True)}">{shown}</span>'


def loss_tokens_html(values: dict) -> str:
    """Each token after BOS coloured by the change in its loss (orange: harder to predict, blue: easier), on the
    text's largest change; its losses and the KL of its prediction on hover."""
    losses = zip(values["loss"][:-1], values["intervened_loss"][:-1], strict=True)
    changes = [after - before for before, after in losses]
    largest = max((abs(change) for change in changes), default=0.0) or 1.0
    scale = ColourScale(largest, largest)
    spans = [_token_span(values["tokens"][0], "p0", "BOS: not predicted")]
    for position, change in enumerate(changes):
        title = (f"loss {values['loss'][position]:.4g} → {values['intervened_loss'][position]:.4g} ({change:+.4g}); "
                 f"KL {values['kl'][position]:.4g}")
        spans.append(_token_span(values["tokens"][position + 1], shade_class(change, scale), title))
    note = f'<p class="ns-muted">Colour scale: ±{largest:.3g} nats of loss.</p>'
    return f'<div class="ns-text">{"".join(spans)}</div>{note}'


def changes_table(rows: list[dict]) -> str:
    if not rows:
        return '<p class="ns-muted">none</p>'
    return table_html(
        ["token", "before", "after", "change"],
        [[token_cell(row["token"]), number(row["before"]), number(row["after"]), f"{row['change']:+.3g}"]
         for row in rows],
    )


def direct_effects_html(stats: NeuronStats) -> str:
    """One neuron's direct logit effects (W_out[n] · W_U, per unit of activation), as on its page."""
    promotes = logit_bars_html(stats.logit_top_tokens, stats.logit_top_values, "ns-pos")
    suppresses = logit_bars_html(stats.logit_bottom_tokens, stats.logit_bottom_values, "ns-neg")
    return (f"<h4>L{stats.layer}N{stats.neuron}</h4><div class=\"ns-logits\"><div><h4>promotes</h4>{promotes}</div>"
            f"<div><h4>suppresses</h4>{suppresses}</div></div>")


def direct_column_html(clamps: list[Clamp], direct: list[NeuronStats] | None) -> str:
    """Each shown neuron's direct logit effects, as its dataset stores them (None: no dataset yet)."""
    if direct is None:
        return '<p class="ns-muted">They come with the dataset, when its build is done.</p>'
    more = len(clamps) - len(direct)
    hidden = f'<p class="ns-muted">and {more} more neurons</p>' if more > 0 else ""
    return "".join(direct_effects_html(stats) for stats in direct) + hidden


def effect_html(model: str, clamps: list[Clamp], values: dict, direct: list[NeuronStats] | None) -> str:
    """The summary, the coloured text, and total effects (measured) beside direct effects (read off the weights;
    None before the dataset is built)."""
    summary = (
        f"Mean loss over the text's {len(values['tokens']) - 1} predicted tokens: {values['mean_loss']:.4g} → "
        f"{values['mean_intervened_loss']:.4g} ({values['mean_intervened_loss'] - values['mean_loss']:+.4g}). "
        f"KL(clean ‖ intervened) after BOS: mean {values['mean_kl']:.4g}, max {values['max_kl']:.4g}."
    )
    changes = values["top_changes"]
    return (
        f'<div class="ns-effect"><p class="ns-muted">{clamps_line(model, clamps, values["intervention"])}</p>'
        f"<p>{escape(summary)}</p>{loss_tokens_html(values)}"
        '<div class="ns-columns"><div><h3>Total effect: mean log-probability over the text\'s positions</h3>'
        f"<h4>raised most</h4>{changes_table(changes['raised'])}"
        f"<h4>lowered most</h4>{changes_table(changes['lowered'])}"
        f"</div><div><h3>Direct logit effects</h3>{direct_column_html(clamps, direct)}"
        "</div></div></div>"
    )


def continuation_html(prompt: list[str], tokens: list[str], other: list[str]) -> str:
    """The prompt after BOS (muted), then the continuation; its first token that differs from `other` outlined."""
    differs = (index for index in range(len(tokens)) if index >= len(other) or tokens[index] != other[index])
    diverged = next(differs, None)
    body = "".join(
        f'<span class="t{" ns-diverged" * (index == diverged)}">{escape(visible_token(token), quote=True)}</span>'
        for index, token in enumerate(tokens)
    )
    start = "".join(escape(visible_token(token), quote=True) for token in prompt[1:])
    return f'<div class="ns-text"><span class="ns-prompt">{start}</span>{body}</div>'


def steer_html(model: str, clamps: list[Clamp], values: dict) -> str:
    """The unsteered and steered continuations side by side."""
    clean, steered = values["clean"]["tokens"], values["steered"]["tokens"]
    how = "greedy" if values["seed"] is None else f"sampled with seed {values['seed']}"
    same = " They are the same." if clean == steered else ""
    return (
        f'<div class="ns-effect"><p class="ns-muted">{clamps_line(model, clamps, values["intervention"])}; '
        f"{values['new_tokens']} new tokens at most, {escape(how)}.{same}</p>"
        f'<div class="ns-steer"><div><h3>Unsteered</h3>{continuation_html(values["tokens"], clean, steered)}</div>'
        f'<div><h3>Steered</h3>{continuation_html(values["tokens"], steered, clean)}</div></div></div>'
    )
