"""The Rate tab's views: a blind sample, a rating and its reveal, and the summary, as HTML and values.

A sample's HTML holds its examples' tokens and activations only: no model, layer or neuron number, in text or in
any attribute, until it is rated (hover titles carry activation values; the score's usual title, which names the
example's window, is left out, and so are bottom examples, which only gated models have).
"""

from __future__ import annotations

from dataclasses import asdict
from html import escape

from hub_sync.reader import DatasetError
from space.live.render import neuron_link
from space.rating import ANSWERS, BANDS, RatingError, RatingStore, SummaryRow, summarise
from space.render import examples_html, message_html
from space.sources import Catalog

SAMPLE_KINDS = ("top", "random")
QUESTION = (
    "Do these examples share a pattern you could name (a token, a word family, a position, a syntax, a topic)? "
    "Answer from the examples alone: which neuron it was is shown after you answer."
)


def sample_view(store: RatingStore, catalog: Catalog, rater: str | None) -> tuple[str, str, str, str]:
    """(rater id, sample token, notice, examples HTML) of a new blind sample; a refusal gives a notice and no token."""
    try:
        rater_id = store.rater_id(rater)
        sample = store.issue(catalog, rater_id)
        examples = catalog.models[sample.model].neuron_examples(sample.layer, sample.neuron)
    except RatingError as error:
        return rater if isinstance(rater, str) else "", "", message_html([str(error)]), ""
    except DatasetError:
        return rater_id, "", message_html(["This neuron's examples cannot be read; ask for another neuron."]), ""
    done = store.rated_by(rater_id)
    page = (
        f'<div class="ns-page ns-blind"><p class="ns-muted">{escape(QUESTION)} You have rated {done:,} so far.</p>'
        f"{examples_html(examples, SAMPLE_KINDS, described=False)}</div>"
    )
    return rater_id, sample.token, "", page


def reveal_html(record: dict) -> str:
    """What the rated neuron was, with a link to its page (a new tab, so the rating flow stays)."""
    model = escape(record["model"], quote=True)
    link = neuron_link(record["model"], record["layer"], record["neuron"])
    return (
        f'<div class="ns-reveal"><b>You answered: {escape(record["answer"])}.</b> That was {model} · '
        f"layer {record['layer']} ({escape(record['band'])} layers) · neuron {record['neuron']}: open {link}.</div>"
    )


def rate_view(
    store: RatingStore, catalog: Catalog, rater: str | None, token: str | None, answer: str | None, note: str | None
) -> tuple[str, str, dict]:
    """(notice, reveal HTML, the stored rating) once the answer is recorded; a refusal is a notice and nothing else."""
    try:
        record = store.rate(catalog, store.rater_id(rater) if rater else "", token or "", answer or "", note)
    except RatingError as error:
        return message_html([str(error)]), "", {}
    public = {key: value for key, value in record.items() if key != "sample"}
    return "", reveal_html(record), public


def _fraction(row: SummaryRow) -> str:
    if row.fraction is None:
        return '<span class="ns-muted">n/a</span>'
    return f'{row.fraction:.0%} <span class="ns-muted">[{row.low:.0%}, {row.high:.0%}]</span>'


def summary_table_html(rows: list[SummaryRow]) -> str:
    """One row per model and band: answers, n and the interpretable fraction with its 95% interval."""
    if not rows:
        return '<p class="ns-muted">No ratings yet.</p>'
    head = "".join(
        f"<th>{title}</th>"
        for title in ("model", "layers", "interpretable", "not", "unsure", "n", "fraction interpretable [95% CI]")
    )
    body = "".join(
        f"<tr><td>{escape(row.model, quote=True) if row.band == 'all' else ''}</td><td>{escape(row.band)}</td>"
        f"<td>{row.interpretable}</td><td>{row.not_interpretable}</td><td>{row.unsure}</td><td>{row.n}</td>"
        f"<td>{_fraction(row)}</td></tr>"
        for row in rows
    )
    return f'<table class="ns-table ns-rate-summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def summary_rows(store: RatingStore, catalog: Catalog, models: list[str] | None = None) -> list[SummaryRow]:
    """The summary over the given models (every rated model when None)."""
    rows = summarise(store.ratings(), catalog.model_names)
    return rows if models is None else [row for row in rows if row.model in models]


def summary_view(store: RatingStore, catalog: Catalog) -> tuple[str, dict]:
    """(summary HTML, values) over every rating: per model and layer band."""
    rows = summary_rows(store, catalog)
    note = (
        '<p class="ns-muted">Fraction interpretable = interpretable / (interpretable + not); "unsure" is counted but '
        f"left out. 95% Wilson intervals. Layer bands: {', '.join(BANDS)} thirds of each model's layers.</p>"
    )
    values = {"answers": list(ANSWERS), "rows": [asdict(row) | {"n": row.n} for row in rows]}
    return note + summary_table_html(rows), values
